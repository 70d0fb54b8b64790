"""The node runtime: one process per member driving a Replica with a transport and a log."""
