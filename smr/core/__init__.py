"""The protocol core: sans-I/O and deterministic (table, predicates, replica, Ready)."""
