"""Training: losses, offline and online loops, checkpoints, calibration."""
