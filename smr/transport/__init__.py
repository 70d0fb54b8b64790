"""Transports behind one contract: sim, shm, tcp and verbs providers (the transports issue)."""
