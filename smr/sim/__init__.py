"""The deterministic simulator: N member processes' code (the node runtime) in one process, one
seed per run."""

from smr.sim.harness import (
    BUGS,
    FAULTS,
    Checker,
    SimConfig,
    SimNode,
    SimResult,
    Simulation,
    Violation,
    run_seed,
)

__all__ = [
    "BUGS",
    "FAULTS",
    "Checker",
    "SimConfig",
    "SimNode",
    "SimResult",
    "Simulation",
    "Violation",
    "run_seed",
]
