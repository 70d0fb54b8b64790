"""smr-toolkit: strongly consistent state-machine replication, modelled on Cornell's Derecho.

The package owns the protocol core (`smr.core`, sans-I/O), the deterministic simulator
(`smr.sim`), transports and the node runtime; `smr.log`, `smr.statemachines` and `smr.cli`
are installed from the repository's top-level `log/`, `statemachines/` and `cli/` folders.

The client's names are exported here: `smr.connect`, `smr.Client`, `smr.ClientError` and its
two kinds `smr.NotAppliedError` and `smr.OutcomeUnknownError`, `smr.CommandError` (from
`smr.client`). They are imported on first use, not by `import smr`:
the client pulls in the runtime's configuration, the core and the transports' wire format,
which would add a fifth to the start-up of `smr sim` and `smr --version` (measured with
`python -X importtime`). Type checkers see them through the `TYPE_CHECKING` import, and
`dir(smr)` and `smr.__all__` list them. The asyncio client is the submodule `smr.aio`
(`smr.aio.connect`), imported on first use of `smr.aio` likewise.
"""

import os as _os

# `typing.TYPE_CHECKING` without importing typing (a few ms on a bare `import smr`): type
# checkers treat a name spelled TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from smr.client import (
        Client,
        ClientError,
        CommandError,
        NotAppliedError,
        OutcomeUnknownError,
        connect,
    )

__version__ = "0.1.0"

# The engine of the stream's receive side when a configuration says "auto" (the default): the
# native one (smr._native) unless SMR_NATIVE=0 asks for the pure-Python reference. Read once, here,
# because smr.core reads no environment (it is sans-I/O); `os` is imported by every interpreter
# at start-up, so this costs nothing.
_SMR_NATIVE = _os.environ.get("SMR_NATIVE", "1")
if _SMR_NATIVE not in ("0", "1"):
    raise ValueError(f"SMR_NATIVE must be 0 (pure Python) or 1 (native), not {_SMR_NATIVE!r}")
_NATIVE_DEFAULT = _SMR_NATIVE == "1"

__all__ = [
    "Client",
    "ClientError",
    "CommandError",
    "NotAppliedError",
    "OutcomeUnknownError",
    "__version__",
    "connect",
]

_CLIENT_NAMES = frozenset(
    {"Client", "ClientError", "CommandError", "NotAppliedError", "OutcomeUnknownError", "connect"}
)


def __getattr__(name: str) -> object:
    if name in _CLIENT_NAMES:
        import smr.client

        value = getattr(smr.client, name)
        globals()[name] = value  # later lookups are plain attribute reads
        return value
    if name == "aio":
        import smr.aio

        return smr.aio
    raise AttributeError(f"module 'smr' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
