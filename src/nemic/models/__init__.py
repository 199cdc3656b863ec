"""Models: Lorenz-96, energy balance, two-layer QG (each a Process with its State)."""
