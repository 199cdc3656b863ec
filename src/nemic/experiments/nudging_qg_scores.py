"""Scores of the QG nudging recipe: climate statistics of a run (KE per layer, enstrophy), their relative biases
against a reference, the choice of the correction's output scale on validation runs, and the spread of the
biases over test starts."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from nemic.core.errors import ConfigError
from nemic.models.qg import diagnostics as dg


def climate_stats(lo, q) -> dict[str, np.ndarray]:
    """Per-snapshot total KE (layer-weighted), KE of each layer and enstrophy of PV ``q`` (n, 2, ny, nx).

    Returns ``{"KE": (n,), "KE1": (n,), "KE2": (n,), "enstrophy": (n,)}`` in m^2 s^-2 and s^-2 (definitions of
    :mod:`nemic.models.qg.diagnostics`; layer KE is the domain mean of ``|u_i|^2 / 2``).
    """
    return {k: np.asarray(v) for k, v in _climate_stats(lo, jnp.asarray(q)).items()}


@eqx.filter_jit
def _climate_stats(lo, q):
    def one(x):
        u, v = lo.velocities(lo.invert(lo.fft(x)))
        ke_l = jnp.mean(u**2 + v**2, axis=(-2, -1)) / 2
        return {"KE": dg.kinetic_energy(lo, x), "KE1": ke_l[0], "KE2": ke_l[1], "enstrophy": dg.enstrophy(lo, x)}

    return jax.vmap(one)(q)


def relative_biases(lo, q, ref: dict) -> dict[str, float]:
    """Relative biases ``mean(X) / ref[X] - 1`` of the time means of KE, KE1, KE2 and enstrophy of PV ``q``
    (n, 2, ny, nx) against the reference means ``ref`` (from :func:`climate_stats`)."""
    s = climate_stats(lo, q)
    return {k: float(s[k].mean() / ref[k] - 1.0) for k in ("KE", "KE1", "KE2", "enstrophy")}


def choose_scale(val: dict) -> float:
    """The scale with the smallest validation error: ``val = {alpha: [biases of each validation run]}``, each
    biases dict as :func:`relative_biases`; the error of a scale is the mean over runs of the RMS of the four
    relative biases (a run that blew up has an infinite error: pass ``{"KE": inf, ...}``)."""
    if not val:
        raise ConfigError("choose_scale needs at least one scale")

    def err(runs):
        return float(np.mean([np.sqrt(np.mean([b[k] ** 2 for k in ("KE", "KE1", "KE2", "enstrophy")]))
                              for b in runs]))

    return float(min(val, key=lambda a: (err(val[a]), a)))


def spread_summary(per_start: list[dict], low_per_start: list[dict] | None = None) -> dict[str, Any]:
    """Mean and sample standard deviation (over starts) of each relative bias; with ``low_per_start`` (the
    uncorrected runs from the same starts) also whether the bias reduction ``|mean_low| - |mean|`` exceeds the
    spread ``max(std_low, std)`` (a reduction that counts)."""
    out: dict[str, Any] = {}
    for k in ("KE", "KE1", "KE2", "enstrophy"):
        v = np.array([b[k] for b in per_start])
        m, sd = float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else float("nan")
        out[k] = {"mean": m, "std": sd, "per_start": [float(x) for x in v]}
        if low_per_start is not None:
            lv = np.array([b[k] for b in low_per_start])
            lsd = float(lv.std(ddof=1)) if lv.size > 1 else float("nan")
            red = abs(float(lv.mean())) - abs(m)
            out[k]["reduction"] = red
            out[k]["reduction_exceeds_spread"] = bool(np.isfinite(lsd) and red > max(lsd, sd))
    return out
