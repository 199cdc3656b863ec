"""Metrics: pure jnp functions usable as losses and for evaluation."""
