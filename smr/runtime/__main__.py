"""`python -m smr.runtime --config FILE --id N`: run one member (what `smr node` does)."""

from smr.cli.node_cmd import node

node(prog_name="smr node")
