"""Scoring closures of the QG subgrid benchmark: free runs of the coarse model and the similarity metrics.

Step 3 of the recipe in :mod:`nemic.experiments.qg_subgrid`: :func:`evaluate` runs ensembles of free runs of the
low-resolution model with each closure and scores them by the similarity ``1 - D(param, HR) / D(LR, HR)`` (Ross
et al. 2023, eq. 9) over spectra, energy-budget terms and marginal distributions, written to ``metrics.json`` and
PNG figures; :func:`similarity_table` collects several evaluations into one table.

:func:`evaluate` checks every setting and reads (and checks finite) all the data it needs before any free run, then
writes through :func:`~nemic.experiments.config.staged_run`: a failed evaluation leaves an earlier ``out`` exactly
as it was, and ``metrics.json`` is always valid JSON (:func:`nemic.io.files.write_json`).

Reference: Ross, Li, Perezhogin, Fernandez-Granda & Zanna (2023), JAMES 15, e2022MS003258,
doi:10.1029/2022MS003258.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from nemic.core.errors import BlowUpError, ConfigError, DataError, check_int_at_least
from nemic.core.rollout import simulate
from nemic.data.qg_benchmark import load_dataset, load_hires
from nemic.experiments.config import check_replaceable, staged_run
from nemic.io.output import save_figure, write_json
from nemic.metrics.qg_similarity import (  # noqa: F401  (re-exported: the scores of this recipe)
    DISTRIBUTION_METRICS,
    SPECTRAL_METRICS,
    distances,
    resolved_kmax,
    similarity,
    wasserstein1,
)
from nemic.models.qg import QGState
from nemic.models.qg import diagnostics as dg


#: the largest grid (points per side) a QG command accepts
MAX_NX = 4096
#: the most steps one QG run may take
MAX_STEPS = 10**8
#: the most values (float64) a QG run may keep in memory as saved snapshots (16 GiB)
MAX_SAVED_VALUES = 2 * 10**9


def check_qg_size(nx: int, n_steps: int, n_saved: int, what: str = "the run") -> None:
    """Refuse, with one line and before any work, a QG run whose grid, length or saved snapshots (each
    ``2 nx^2`` values) cannot fit in memory or time (:data:`MAX_NX`, :data:`MAX_STEPS`, :data:`MAX_SAVED_VALUES`)."""
    if nx > MAX_NX:
        raise ConfigError(f"{what}: a grid of {nx} points per side is too large (at most {MAX_NX}; one state alone "
                          f"would hold {2 * float(nx) ** 2 * 8 / 2**30:.3g} GiB)")
    if n_steps > MAX_STEPS:
        raise ConfigError(f"{what} would take {n_steps:.3g} steps; at most {MAX_STEPS:.0e} are allowed")
    values = float(n_saved) * 2 * float(nx) ** 2
    if values > MAX_SAVED_VALUES:
        raise ConfigError(f"{what} would keep {n_saved} snapshots of {nx}x{nx} points (about "
                          f"{8 * values / 2**30:.0f} GiB); save fewer (a larger save interval or a shorter run)")


def check_distinct_paths(out, *inputs) -> None:
    """Refuse an ``out`` that is, or contains, one of the input paths (a run replaces ``out`` whole)."""
    o = Path(out).resolve()
    for p in inputs:
        if p is None:
            continue
        q = Path(p).resolve()
        if q == o or o in q.parents:
            raise ConfigError(f"--out '{out}' holds the input '{p}'; a run replaces its --out whole, so choose "
                              "another output directory")


def summarize(lo, q, closure=None) -> dict:
    """Time-mean spectra, budget terms and pooled samples of low-resolution PV ``q`` (n, 2, ny, nx).

    With a ``closure`` (the Process added to ``lo`` in the run that produced ``q``), its contributions to the KE
    and APE fluxes (:func:`nemic.models.qg.diagnostics.parameterization_energy_flux`) are added to ``KEflux`` and
    ``APEflux``, as the benchmark does (Ross et al. 2023, section 3.3).
    """
    out = {k: np.asarray(v) for k, v in _summarize(lo, jnp.asarray(q), closure).items()}
    for k in DISTRIBUTION_METRICS:  # pooled samples, sorted once for the Wasserstein distances
        out[k] = np.sort(out[k].ravel())
    out["kmax"] = resolved_kmax(lo)
    return out


@eqx.filter_jit
def _summarize(lo, q, closure):
    ke = jax.lax.map(lambda x: dg.ke_spectrum(lo, x)[1], q).mean(0)
    ens = jax.lax.map(lambda x: dg.enstrophy_spectrum(lo, x)[1], q).mean(0)

    def budget(x):
        b = {k: v for k, v in dg.energy_budget(lo, x).items() if k != "kr"}
        if closure is not None:
            dq = lo.ifft(closure.closure_tendency(lo, QGState.from_q(x), 0.0).qh)
            p = dg.parameterization_energy_flux(lo, x, dq)
            b["KEflux"] = b["KEflux"] + p["KEflux"]
            b["APEflux"] = b["APEflux"] + p["APEflux"]
        return b

    bud = jax.lax.map(budget, q)
    kr = jnp.asarray(dg.ke_spectrum(lo, q[0])[0])
    _, _, wv2 = lo.wavenumbers(q.dtype)

    def fields(x):
        ph = lo.invert(lo.fft(x))
        u, v = lo.velocities(ph)
        return u, v, lo.ifft(-wv2 * ph)

    u, v, xi = jax.lax.map(fields, q)
    out = {"kr": kr, "KEspec1": ke[0], "KEspec2": ke[1], "Ensspec1": ens[0], "Ensspec2": ens[1]}
    out.update({k: bud[k].mean(0) for k in ("KEflux", "APEflux", "APEgenspec", "KEfrictionspec")})
    for i in (0, 1):
        out[f"q{i + 1}"] = q[:, i]
        out[f"u{i + 1}"] = u[:, i]
        out[f"v{i + 1}"] = v[:, i]
        out[f"KE{i + 1}"] = (u[:, i] ** 2 + v[:, i] ** 2) / 2
        out[f"Ens{i + 1}"] = xi[:, i] ** 2
    return out


def run_closure(lo, closure, q0, *, dt: float, n_steps: int, save_every: int, spinup_steps: int = 0,
                return_blowup: bool = False):
    """Free run of ``lo (+ closure)`` from ``q0``; returns the saved PV (n, 2, ny, nx) after ``spinup_steps``
    (and, with ``return_blowup``, the blow-up message or None). A run that blows up is scored on the part before
    the blow-up."""
    blew = None
    proc = lo if closure is None else lo + closure
    state0 = QGState.from_q(jnp.asarray(q0))
    lo.check_timestep(state0, dt)
    try:
        tr = simulate(proc, None, state0, dt=dt, n_steps=n_steps, save_every=save_every, observe=lo.observe)
    except BlowUpError as e:
        warnings.warn(f"run blew up ({e}); scoring the part before the blow-up", RuntimeWarning, stacklevel=2)
        tr, blew = e.trajectory, str(e)
    keep = np.asarray(tr.t) >= spinup_steps * dt
    q = np.asarray(tr.states.q)[keep]
    return (q, blew) if return_blowup else q


def start_indices(n_snapshots: int, n_runs: int) -> list[int]:
    """Indices of ``n_runs`` starting snapshots spread evenly over a dataset of ``n_snapshots``."""
    if n_runs < 1:
        raise ConfigError(f"the number of free runs must be >= 1, got {n_runs}")
    return sorted({int(i) for i in np.linspace(0, n_snapshots - 1, n_runs + 1)[:-1].round()})


def evaluate(data_dir: str | Path, closures: dict, out: str | Path, *, operator: str = "op1",
             n_steps: int | None = None, save_every: int | None = None, spinup_steps: int = 0, n_runs: int = 1,
             target: str = "hires", plots: bool = True, progress: bool = False) -> dict:
    """Score closures against the coarse-grained high-resolution data with the benchmark's similarity metrics.

    Args:
        data_dir: directory written by :func:`generate`.
        closures: ``{name: Process or None}`` (None: the unparameterized model, always added as "low_res").
        out: output directory (``metrics.json``, ``spectra.png``, ``snapshots.png``), replaced whole at the end;
            refused if it holds the data or files of something other than a finished nemic run.
        n_steps, save_every: length and sampling of each free run (default: the dataset's span and spacing).
        spinup_steps: steps discarded at the start of each free run.
        n_runs: free runs per closure (an ensemble), started from coarse-grained high-resolution snapshots
            spread over the dataset; their kept snapshots are pooled (the benchmark averages over runs too).
        target: "hires" (the benchmark's choice): the high-resolution run itself, its spectra and energy budget
            on its own grid (compared over the low-resolution model's resolved wavenumbers; its fluxes include the
            transfer by the scales the coarse model lacks, which the closures' flux contributions stand for) and
            its full-resolution fields' distributions; "coarse": the coarse-grained snapshots of ``operator``
            analysed with the low-resolution model.

    Every setting and all data (checked finite, naming file and variable) are checked before the first free run.
    A closure whose runs all blow up before their first scored snapshot gets no score (``None``, never a made-up
    number); if the uncorrected runs do, there is nothing to compare with and a one-line :class:`DataError`
    is raised.
    """
    check_replaceable(out)
    check_distinct_paths(out, data_dir)
    if target not in ("hires", "coarse"):
        raise ConfigError(f"target must be 'hires' or 'coarse', got {target!r}")
    for name, v, low in (("steps", n_steps, 1), ("save_every", save_every, 1)):
        if v is not None:
            check_int_at_least(name, v, low)
    check_int_at_least("spinup_steps", spinup_steps, 0)
    check_int_at_least("runs", n_runs, 1)
    ds, lo = load_dataset(data_dir, operator)
    dt = float(ds.attrs["dt"])
    t = np.asarray(ds["time"].values, dtype=float)
    if save_every is None:
        save_every = max(1, int(round((t[1] - t[0]) / dt))) if t.size > 1 else 1
    if n_steps is None:
        n_steps = int(round((t[-1] - t[0]) / dt)) or save_every
    if n_steps < save_every:
        raise ConfigError(f"steps ({n_steps}) must be at least save_every ({save_every})")
    n_steps -= n_steps % save_every
    if spinup_steps >= n_steps:
        raise ConfigError(f"spinup_steps ({spinup_steps}) must be shorter than the runs ({n_steps} steps)")
    q_hr = ds["q"].values
    starts = start_indices(q_hr.shape[0], n_runs)
    check_qg_size(lo.nx, n_steps, (n_steps // save_every + 1) * len(starts) * (len(closures) + 1),
                  "the evaluation")
    if target == "hires":  # read (and checked finite) before any free run
        q_hi, hi = load_hires(data_dir, float(t[0]))
        high = summarize(hi, q_hi)
        high["kmax"] = resolved_kmax(lo)
        del q_hi
    else:
        high = summarize(lo, q_hr)
    settings = {"data": str(data_dir), "closures": {k: type(v).__name__ for k, v in closures.items()},
                "operator": operator, "steps": n_steps, "save_every": save_every, "spinup_steps": spinup_steps,
                "runs": n_runs, "target": target}
    with staged_run(out, "qg evaluate", settings) as stage:
        runs, summ, info = {}, {}, {}
        for name, c in {"low_res": None, **closures}.items():
            t0 = time.perf_counter()
            parts, blowups = [], []
            for i in starts:
                q, blew = run_closure(lo, c, q_hr[i], dt=dt, n_steps=n_steps, save_every=save_every,
                                      spinup_steps=spinup_steps, return_blowup=True)
                parts.append(q)
                if blew:
                    blowups.append(blew)
                if progress:
                    print(f"  {name}: run from snapshot {i} done ({time.perf_counter() - t0:.0f} s)", flush=True)
            runs[name] = np.concatenate([p for p in parts if len(p)]) if any(len(p) for p in parts) else parts[0]
            info[name] = {"wall_s": time.perf_counter() - t0, "blowups": blowups, "snapshots": int(len(runs[name]))}
            if len(runs[name]):
                summ[name] = summarize(lo, runs[name], c)
        if "low_res" not in summ:
            raise DataError("the uncorrected low-resolution runs blew up before their first scored snapshot; "
                            "nothing to score the closures against (shorter dt or fewer spin-up steps)")
        metrics = {"operator": operator, "config": ds.attrs.get("config"), "nx_lo": lo.nx, "n_steps": n_steps,
                   "save_every": save_every, "spinup_steps": spinup_steps, "n_runs": len(starts), "dt": dt,
                   "start_snapshots": starts, "hr_snapshots": int(q_hr.shape[0]), "target": target,
                   "resolved_kmax": resolved_kmax(lo), "runs": info,
                   "distances_low_res": distances(summ["low_res"], high), "closures": {}}
        for name in closures:
            if name in summ:
                metrics["closures"][name] = similarity(summ[name], summ["low_res"], high,
                                                       metrics["distances_low_res"])
            else:  # blew up before its first scored snapshot: no score (never a made-up one)
                metrics["closures"][name] = {"per_metric": None, "mean": None, "min": None, "blew_up": True}
        write_json(metrics, stage / "metrics.json")
        if plots:
            _plots(stage, high, summ, {k: v for k, v in runs.items() if len(v)}, q_hr)
    return metrics


def similarity_table(eval_dirs: Sequence[str | Path]) -> str:
    """Markdown table of the similarity scores (mean / min) of the closures in several :func:`evaluate` outputs.

    One column per configuration and protocol (evaluations that share them, e.g. new closures scored later with the
    same settings, whose deterministic uncorrected runs are identical, are merged), one row per closure.
    """
    cols, rows = [], {}
    for d in eval_dirs:
        path = Path(d) / "metrics.json"
        if not path.is_file():
            raise DataError(f"'{path}' does not exist (written by `nemic qg evaluate`)")
        try:
            m = json.loads(path.read_bytes().decode("utf-8"))
            title = f"{m.get('config')} ({m.get('n_runs', 1)} x {m['n_steps'] * m['dt'] / 86400:.0f} d)"
            scores = {name: (c["mean"], c["min"]) for name, c in m["closures"].items()}
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
            raise DataError(f"'{path}' is not a metrics.json written by `nemic qg evaluate` (invalid JSON or "
                            "missing n_steps, dt or closures)") from None
        if title not in cols:  # evaluations of the same configuration and protocol share a column
            cols.append(title)
        for name, (mean, mn) in scores.items():
            ok = all(isinstance(v, (int, float)) and np.isfinite(v) for v in (mean, mn))
            rows.setdefault(name, {})[title] = f"{mean:+.2f} / {mn:+.2f}" if ok else "blew up"
    lines = ["| closure | " + " | ".join(f"{c}: mean / min" for c in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for name, vals in rows.items():
        lines.append(f"| {name} | " + " | ".join(vals.get(c, "-") for c in cols) + " |")
    return "\n".join(lines)


def _plots(out: Path, high: dict, summ: dict, runs: dict, q_hr) -> None:
    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    for ax, key, title in zip(axes, ("KEspec1", "KEspec2", "Ensspec1", "KEflux"),
                              ("upper-layer KE spectrum", "lower-layer KE spectrum", "upper-layer enstrophy spectrum",
                               "KE flux (+ closure's), m2 s-3 per rad/m")):
        plot = ax.semilogx if key == "KEflux" else ax.loglog
        val = (lambda v: v) if key == "KEflux" else np.abs
        plot(high["kr"], val(high[key]), "k", lw=2, label="high res")
        for name, s in summ.items():
            plot(s["kr"], val(s[key]), label=name)
        ax.axvline(high["kmax"], color="0.6", ls=":", lw=1)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("isotropic wavenumber (rad/m)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out / "spectra.png", dpi=100)
    names = ["hr_coarse"] + list(runs)
    fig, axes = plt.subplots(1, len(names), figsize=(3 * len(names), 3))
    fields = [q_hr[-1, 0]] + [runs[n][-1, 0] for n in runs]
    vmax = float(np.max(np.abs(fields[0])))
    for ax, name, f in zip(np.atleast_1d(axes), names, fields):
        ax.imshow(f, origin="lower", cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        ax.set_title(f"{name}: q1 (last)", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    save_figure(fig, out / "snapshots.png", dpi=100)
