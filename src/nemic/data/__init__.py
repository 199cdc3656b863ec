"""Data: xarray I/O, coarse-graining, OPERA radar reader."""
