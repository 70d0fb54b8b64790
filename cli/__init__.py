"""The `smr` command-line application (click). Installed as `smr.cli`; the entry point is
`smr.cli.main:main`. Commands are thin: they parse, wire parts together and report."""
