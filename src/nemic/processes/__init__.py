"""Processes that are not a model's core: neural tendencies, closures, nudging, guards."""
