"""Files, terminals and plots: CF-annotated xarray output, atomic writes, progress bars.

The only package (with :mod:`nemic.cli` and the recipes) that knows about files and the terminal; the physics
(:mod:`nemic.core`, :mod:`nemic.models`) never imports it.
"""

from nemic.io.output import atomic_write, ensure_writable_dir, save_figure, to_xarray, write_json, write_netcdf
from nemic.io.progress import progress, progress_bar

__all__ = ["atomic_write", "ensure_writable_dir", "progress", "progress_bar", "save_figure", "to_xarray",
           "write_json", "write_netcdf"]
