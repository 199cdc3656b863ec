"""Experiments: one module per recipe (a config plus a command)."""
