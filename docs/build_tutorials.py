"""Execute the tutorials and how-tos (jupytext percent scripts in docs/tutorials/, docs/howto/) as Markdown pages.

Each script runs in a fresh Python process, cell by cell in one namespace: what a cell prints is captured, and
every matplotlib figure still open after a cell is saved as a PNG and closed. The page shows each cell's code,
its output and its figures in order. A cell that raises stops the build with the tutorial's name, the cell's
number and the error, so a tutorial that no longer runs fails ``make docs`` (and CI).

Used by the mkdocs hook (docs/hooks.py) and by hand::

    .venv/bin/python docs/build_tutorials.py docs/tutorials/fundamentals.py --out /tmp/fundamentals

Results are cached under build/tutorials/ by a hash of the script's code cells and of every file in src/nemic, so
a rebuild after editing only prose reruns nothing, and any change to the code or the library reruns it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = (ROOT / "docs" / "tutorials", ROOT / "docs" / "howto")
CACHE = ROOT / "build" / "tutorials"

# Runs inside the child process: argv = [cells.json, out_dir]; writes out_dir/result.json.
_DRIVER = r'''
import contextlib, io, json, sys, time, traceback
from pathlib import Path
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 100, "savefig.bbox": "tight"})
cells = json.loads(Path(sys.argv[1]).read_text())
out = Path(sys.argv[2])
ns = {"__name__": "__main__"}
results = []
n_fig = 0
for i, src in enumerate(cells):
    buf = io.StringIO()
    figs = []
    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stdout(buf):
            exec(compile(src, f"<cell {i + 1}>", "exec"), ns)
            for num in plt.get_fignums():
                n_fig += 1
                name = f"fig{n_fig:02d}.png"
                plt.figure(num).savefig(out / name)
                figs.append(name)
    except BaseException:
        tb = traceback.format_exc().splitlines()
        sys.stderr.write(f"cell {i + 1} failed; its output:\n{buf.getvalue()[-2000:]}\n"
                         + "\n".join(tb[:6] + ["..."] + tb[-12:]) + "\n")
        sys.exit(1)
    plt.close("all")
    results.append({"stdout": buf.getvalue(), "figures": figs, "seconds": time.perf_counter() - t0})
(out / "result.json").write_text(json.dumps(results))
'''


def scripts() -> list[Path]:
    """Every executed page's script: docs/tutorials/*.py and docs/howto/*.py."""
    return [p for folder in FOLDERS for p in sorted(folder.glob("*.py"))]


def read_cells(path: Path) -> list[tuple[str, str]]:
    """The cells of a percent-format script as (kind, source) pairs, kind "markdown" or "code"."""
    import jupytext

    nb = jupytext.read(path)
    return [(c.cell_type, c.source) for c in nb.cells if c.source.strip()]


def _source_hash(path: Path) -> str:
    """Hash of the script's code cells (prose edits rerun nothing) and of every file of the library."""
    h = hashlib.sha256(json.dumps([src for kind, src in read_cells(path) if kind == "code"]).encode())
    for f in sorted((ROOT / "src" / "nemic").rglob("*")):
        if f.is_file() and "__pycache__" not in f.parts:
            h.update(str(f.relative_to(ROOT)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def execute(path: Path, out: Path, timeout: float = 900.0) -> list[dict]:
    """Run the tutorial at ``path`` in a fresh process; figures go to ``out``; returns each code cell's output.

    Raises RuntimeError (with the child's stderr) if a cell fails or the run takes longer than ``timeout`` s.
    """
    cells = [src for kind, src in read_cells(path) if kind == "code"]
    out.mkdir(parents=True, exist_ok=True)
    (out / "cells.json").write_text(json.dumps(cells))
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=str(ROOT / "src"))
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-c", _DRIVER, str(out / "cells.json"), str(out)], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"tutorial {path.name} ran longer than {timeout:.0f} s") from e
    if proc.returncode != 0:
        raise RuntimeError(f"tutorial {path.name} failed:\n{proc.stderr[-4000:]}")
    (out / "seconds.txt").write_text(f"{time.perf_counter() - t0:.1f}\n")
    return json.loads((out / "result.json").read_text())


def run_cached(path: Path) -> tuple[Path, list[dict]]:
    """Execute ``path`` unless a result for the same script and library source is cached; (folder, outputs)."""
    name = f"{path.parent.name}-{path.stem}"
    out = CACHE / f"{name}-{_source_hash(path)}"
    if (out / "result.json").exists():
        return out, json.loads((out / "result.json").read_text())
    for old in CACHE.glob(f"{name}-*"):
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    return out, execute(path, out)


def to_markdown(path: Path, outputs: list[dict], fig_dir: str) -> str:
    """The page: markdown cells as they are, code cells as Python blocks followed by their output and figures."""
    parts = []
    code_i = 0
    for kind, src in read_cells(path):
        if kind == "markdown":
            parts.append(src)
            continue
        parts.append(f"```python\n{src}\n```")
        res = outputs[code_i]
        code_i += 1
        if res["stdout"].strip():
            parts.append(f"```text\n{res['stdout'].rstrip()}\n```")
        for fig in res["figures"]:
            parts.append(f"![figure]({fig_dir}/{fig})")
    parts.append(f"*This page was generated by running [`docs/{path.parent.name}/{path.name}`]({path.name}) "
                 f"when the documentation was built.*")
    return "\n\n".join(parts) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scripts", nargs="*", type=Path, help="scripts (default: all in docs/tutorials and docs/howto)")
    ap.add_argument("--out", type=Path, default=None, help="write page.md and figures here (one script only)")
    args = ap.parse_args()
    for s in args.scripts or scripts():
        t0 = time.perf_counter()
        if args.out is not None:
            outputs = execute(s.resolve(), args.out)
            (args.out / "page.md").write_text(to_markdown(s, outputs, "."))
            print("seconds per code cell:", " ".join(f"{o['seconds']:.1f}" for o in outputs))
        else:
            run_cached(s.resolve())
        print(f"{s.name}: {time.perf_counter() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    main()
