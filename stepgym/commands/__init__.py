"""Subcommands of the ``stepgym`` command (one module each)."""
