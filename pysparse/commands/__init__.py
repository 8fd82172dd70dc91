"""Subcommands of the `pysparse` command line (listed in pysparse/cli.py)."""
