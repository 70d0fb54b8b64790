"""smr-toolkit: strongly consistent state-machine replication, modelled on Cornell's Derecho.

The package owns the protocol core (`smr.core`, sans-I/O), the deterministic simulator
(`smr.sim`), transports and the node runtime; `smr.log`, `smr.statemachines` and `smr.cli`
are installed from the repository's top-level `log/`, `statemachines/` and `cli/` folders.
"""

__version__ = "0.1.0"


def __getattr__(name: str):  # `smr.connect` without importing the client for `smr sim`
    if name in ("connect", "Client", "ClientError", "CommandError"):
        import smr.client

        return getattr(smr.client, name)
    raise AttributeError(f"module 'smr' has no attribute {name!r}")
