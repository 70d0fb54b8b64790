"""Providers for the shared transport contract suite (`tests/test_transport_contract.py`).

Each module here describes one provider:

- `NAME: str` — the provider's name (the test ids read `[tcp]`, `[shm]`, ...).
- `make(members: list[int], config: TransportConfig, tmp_path) -> dict[int, Transport]` — one
  constructed, not yet started transport per member, all able to reach each other.
- optional `skip_reason() -> str | None` — why the provider cannot run here (no device).
- optional `restart(old: Transport) -> Transport` — a new, not started transport for the same
  member and address, as a restarted process would make (default: the class called again with
  `old.me`, `old.addresses`, `old.config`).
- optional `elapse(transports: dict[int, Transport], seconds: float)` — called once per round of
  polls while the suite waits, for a provider whose clock is simulated (sim): its polls never
  wait, so the suite moves its clock on by the poll timeout instead (real providers' polls take
  that time themselves).
- optional `ORDERED_ACROSS_CHANNELS: bool` — writes and sends to one peer arrive in the order
  made, across the two channels (default False; tcp carries both on one connection).
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def discover() -> list[ModuleType]:
    """Every provider module of this package, sorted by name."""
    found = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        assert isinstance(getattr(module, "NAME", None), str), f"{info.name} defines no NAME"
        assert callable(getattr(module, "make", None)), f"{info.name} defines no make()"
        found.append(module)
    return found
