"""Scoring closures of the QG subgrid benchmark: free runs of the coarse model and the similarity metrics.

Step 3 of the recipe in :mod:`nemic.experiments.qg_subgrid`: :func:`evaluate` runs ensembles of free runs of the
low-resolution model with each closure and scores them by the similarity ``1 - D(param, HR) / D(LR, HR)`` (Ross
et al. 2023, eq. 9) over spectra, energy-budget terms and marginal distributions, written to ``metrics.json`` and
PNG figures; :func:`similarity_table` collects several evaluations into one table.

Reference: Ross, Li, Perezhogin, Fernandez-Granda & Zanna (2023), JAMES 15, e2022MS003258,
doi:10.1029/2022MS003258.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from nemic.core.errors import ConfigError
from nemic.io.output import ensure_writable_dir, write_json


def wasserstein1(a, b, presorted: bool = False) -> float:
    """First Wasserstein distance between the empirical distributions of samples ``a`` and ``b`` (1-D).

    ``W1 = int_0^1 |F_a^-1(p) - F_b^-1(p)| dp`` evaluated with the exact empirical quantile functions on a merged
    grid (Villani 2009, Optimal Transport, Remark 2.19); same units as the samples. ``presorted``: ``a`` and ``b``
    are already sorted 1-D arrays (saves the sorts for the millions of samples of a high-resolution run).
    """
    if not presorted:
        a, b = np.sort(np.ravel(a)), np.sort(np.ravel(b))
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.size > b.size:
        a, b = b, a
    if b.size % a.size == 0:  # a's quantile steps are a subset of b's: the merged grid is b's
        return float(np.mean(np.abs(np.repeat(a, b.size // a.size) - b)))
    p = np.union1d(np.arange(1, a.size) / a.size, np.arange(1, b.size) / b.size)
    p = np.concatenate([[0.0], p, [1.0]])
    mid = (p[:-1] + p[1:]) / 2
    qa = a[np.minimum((mid * a.size).astype(int), a.size - 1)]
    qb = b[np.minimum((mid * b.size).astype(int), b.size - 1)]
    return float(np.sum(np.abs(qa - qb) * np.diff(p)))


def resolved_kmax(lo) -> float:
    """Largest wavenumber (rad/m) the spectral distances use: where the model's exponential filter starts
    (``kappa* = 0.65 pi``, about 2/3 of the Nyquist wavenumber), as in the benchmark's ``spectral_rmse``."""
    return float(0.65 * np.pi / max(lo.dx, lo.dy))


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
    from nemic.models.qg import diagnostics as dg
    from nemic.models.qg.model import QGState

    ke = jax.lax.map(lambda x: dg.ke_spectrum(lo, x)[1], q).mean(0)
    ens = jax.lax.map(lambda x: dg.enstrophy_spectrum(lo, x)[1], q).mean(0)

    def budget(x):
        b = {k: v for k, v in dg.energy_budget(lo, x).items() if k != "kr"}
        if closure is not None:
            dq = closure.tendency(QGState(q=x), 0.0).q
            p = dg.parameterization_energy_flux(lo, x, dq)
            b["KEflux"] = b["KEflux"] + p["KEflux"]
            b["APEflux"] = b["APEflux"] + p["APEflux"]
        return b

    bud = jax.lax.map(budget, q)
    kr = jnp.asarray(dg.ke_spectrum(lo, q[0])[0])
    _, _, wv2 = lo.grid(q.dtype)

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


SPECTRAL_METRICS = ("KEspec1", "KEspec2", "Ensspec1", "Ensspec2", "KEflux", "APEflux", "APEgenspec",
                    "KEfrictionspec")
DISTRIBUTION_METRICS = ("q1", "q2", "u1", "u2", "v1", "v2", "KE1", "KE2", "Ens1", "Ens2")


def distances(a: dict, b: dict) -> dict:
    """Distance per metric between two :func:`summarize` results.

    Spectra and budget terms: RMS difference of the time-mean isotropic curves over the resolved wavenumbers
    ``kr < kmax`` (:func:`resolved_kmax`, the smaller of the two); marginal distributions (PV, velocities, kinetic
    energy and squared relative vorticity of each layer, pooled over space and time): Wasserstein-1 distance. As
    the benchmark's ``diagnostic_differences`` (Ross et al. 2023, section 3.3). The two summaries may come from
    different resolutions of the same domain (their shells then coincide below kmax).
    """
    kmax = min(a.get("kmax", np.inf), b.get("kmax", np.inf))
    sa, sb = np.asarray(a["kr"]) < kmax, np.asarray(b["kr"]) < kmax
    if sa.sum() != sb.sum() or not np.allclose(np.asarray(a["kr"])[sa], np.asarray(b["kr"])[sb]):
        raise ConfigError("the two summaries have different wavenumber shells below kmax (different domains?)")
    d = {k: float(np.sqrt(np.mean((a[k][sa] - b[k][sb]) ** 2))) for k in SPECTRAL_METRICS}
    d.update({k: wasserstein1(a[k], b[k], presorted=True) for k in DISTRIBUTION_METRICS})
    return d


def similarity(param: dict, low: dict, high: dict, low_distances: dict | None = None) -> dict:
    """Similarity ``1 - D(param, HR) / D(LR, HR)`` per metric (Ross et al. 2023, eq. 9), with mean and minimum.

    1 means the parameterized run matches the high-resolution run, 0 means no better than the unparameterized
    low-resolution run, negative means worse. ``low_distances``: ``distances(low, high)`` if already computed.
    """
    dp = distances(param, high)
    dl = distances(low, high) if low_distances is None else low_distances
    s = {k: 1.0 - dp[k] / dl[k] if dl[k] > 0 else float("nan") for k in dp}
    vals = [v for v in s.values() if np.isfinite(v)]
    return {"per_metric": s, "mean": float(np.mean(vals)), "min": float(np.min(vals))}


def run_closure(lo, closure, q0, *, dt: float, n_steps: int, save_every: int, spinup_steps: int = 0,
                return_blowup: bool = False):
    """Free run of ``lo (+ closure)`` from ``q0``; returns the saved PV (n, 2, ny, nx) after ``spinup_steps``
    (and, with ``return_blowup``, the blow-up message or None). A run that blows up is scored on the part before
    the blow-up."""
    import warnings

    from nemic.core.errors import BlowUpError
    from nemic.models.qg.model import QGState

    blew = None
    try:
        tr = lo.run(QGState(q=jnp.asarray(q0)), dt=dt, n_steps=n_steps, save_every=save_every, extra=closure)
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
        out: output directory (``metrics.json``, ``spectra.png``, ``snapshots.png``).
        n_steps, save_every: length and sampling of each free run (default: the dataset's span and spacing).
        spinup_steps: steps discarded at the start of each free run.
        n_runs: free runs per closure (an ensemble), started from coarse-grained high-resolution snapshots
            spread over the dataset; their kept snapshots are pooled (the benchmark averages over runs too).
        target: "hires" (the benchmark's choice): the high-resolution run itself, its spectra and energy budget
            on its own grid (compared over the low-resolution model's resolved wavenumbers; its fluxes include the
            transfer by the scales the coarse model lacks, which the closures' flux contributions stand for) and
            its full-resolution fields' distributions; "coarse": the coarse-grained snapshots of ``operator``
            analysed with the low-resolution model.
    """
    from nemic.experiments.qg_subgrid import load_dataset, load_hires

    ds, lo = load_dataset(data_dir, operator)
    dt = float(ds.attrs["dt"])
    t = np.asarray(ds["time"].values, dtype=float)
    if save_every is None:
        save_every = int(round((t[1] - t[0]) / dt)) if t.size > 1 else 1
    if n_steps is None:
        n_steps = int(round((t[-1] - t[0]) / dt)) or save_every
    n_steps -= n_steps % save_every
    if spinup_steps >= n_steps:
        raise ConfigError(f"spinup_steps ({spinup_steps}) must be shorter than the runs ({n_steps} steps)")
    if target not in ("hires", "coarse"):
        raise ConfigError(f"target must be 'hires' or 'coarse', got {target!r}")
    out = ensure_writable_dir(out)
    q_hr = ds["q"].values
    if target == "hires":
        q_hi, hi = load_hires(data_dir, float(t[0]))
        high = summarize(hi, q_hi)
        high["kmax"] = resolved_kmax(lo)
        del q_hi
    else:
        high = summarize(lo, q_hr)
    starts = start_indices(q_hr.shape[0], n_runs)
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
        summ[name] = summarize(lo, runs[name], c)
        info[name] = {"wall_s": time.perf_counter() - t0, "blowups": blowups, "snapshots": int(len(runs[name]))}
    metrics = {"operator": operator, "config": ds.attrs.get("config"), "nx_lo": lo.nx, "n_steps": n_steps,
               "save_every": save_every, "spinup_steps": spinup_steps, "n_runs": len(starts), "dt": dt,
               "start_snapshots": starts, "hr_snapshots": int(q_hr.shape[0]), "target": target,
               "resolved_kmax": resolved_kmax(lo), "runs": info,
               "distances_low_res": distances(summ["low_res"], high), "closures": {}}
    for name in closures:
        metrics["closures"][name] = similarity(summ[name], summ["low_res"], high, metrics["distances_low_res"])
    write_json(metrics, out / "metrics.json")
    if plots:
        _plots(out, high, summ, runs, q_hr)
    return metrics


def similarity_table(eval_dirs: Sequence[str | Path]) -> str:
    """Markdown table of the similarity scores (mean / min) of the closures in several :func:`evaluate` outputs.

    One column per configuration and protocol (evaluations that share them, e.g. new closures scored later with the
    same settings, whose deterministic uncorrected runs are identical, are merged), one row per closure.
    """
    from nemic.core.errors import DataError

    cols, rows = [], {}
    for d in eval_dirs:
        path = Path(d) / "metrics.json"
        if not path.exists():
            raise DataError(f"'{path}' does not exist (written by `nemic qg evaluate`)")
        m = json.loads(path.read_text())
        title = f"{m.get('config')} ({m.get('n_runs', 1)} x {m['n_steps'] * m['dt'] / 86400:.0f} d)"
        if title not in cols:  # evaluations of the same configuration and protocol share a column
            cols.append(title)
        for name, c in m["closures"].items():
            rows.setdefault(name, {})[title] = f"{c['mean']:+.2f} / {c['min']:+.2f}"
    lines = ["| closure | " + " | ".join(f"{c}: mean / min" for c in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for name, vals in rows.items():
        lines.append(f"| {name} | " + " | ".join(vals.get(c, "-") for c in cols) + " |")
    return "\n".join(lines)


def _plots(out: Path, high: dict, summ: dict, runs: dict, q_hr) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    fig.savefig(out / "spectra.png", dpi=100)
    plt.close(fig)
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
    fig.savefig(out / "snapshots.png", dpi=100)
    plt.close(fig)
