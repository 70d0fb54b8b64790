"""smr-toolkit: strongly consistent state-machine replication, modelled on Cornell's Derecho.

The package owns the protocol core (`smr.core`, sans-I/O), the deterministic simulator
(`smr.sim`), transports and the node runtime; `smr.log`, `smr.statemachines` and `smr.cli`
are installed from the repository's top-level `log/`, `statemachines/` and `cli/` folders.
"""

__version__ = "0.1.0"
