"""Recipe ``nemic atmos train --offline``: the column network fitted to the truth's physics tendencies.

Reads ``train.zarr`` and ``test.zarr`` written by ``nemic atmos generate`` (checked: the T21 grid, finite values,
every variable present), normalises with training-set statistics stored in the network, and fits
:class:`nemic.nn.column.ColumnNet` through :func:`nemic.train.offline.fit_offline` (the one training loop,
:func:`nemic.train.loop.fit`) on a loss that weighs every output equally after normalisation:

    mean_k ((pred_k - truth_k) / s_k)^2,   s_k = std of output k over the training columns

(tendencies per variable and level; precipitation and evaporation by their own std). Scores on the held-out test
period: R^2 = 1 - SSE / SST per output and level (SST about the test mean), and the RMSE of precipitation. Writes
``column_net.eqx`` (:func:`nemic.train.checkpoint.save_module`), ``scores.nc`` (R^2 per variable and level, CF),
``loss.png`` and ``metrics.json``.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

from nemic.core.errors import ConfigError
from nemic.data.atmosphere.columns import TRUTH_VARIABLES, column_arrays
from nemic.data.atmosphere.dataset import open_truth
from nemic.experiments.config import CHECKPOINTS, staged_run
from nemic.io.files import write_json
from nemic.io.output import save_figure, write_netcdf
from nemic.nn.column import ColumnNet
from nemic.train.checkpoint import save_module
from nemic.train.offline import fit_offline

__all__ = ["OfflineConfig", "quick_offline_config", "prepare", "r2_scores", "train_offline"]

OUT_VARS = ("dTdt_phys", "dqdt_phys", "dudt_phys", "dvdt_phys")


@dataclasses.dataclass(frozen=True)
class OfflineConfig:
    """Settings of offline training (network size, optimisation, columns used)."""

    truncation: int = 21
    width: int = 128
    depth: int = 3
    activation: str = "silu"
    n_iters: int = 3000
    batch_size: int = 512
    learning_rate: float = 1e-3
    max_train_columns: int = 60_000
    max_test_columns: int = 100_000
    perturbed: str = ""
    perturbed_columns: int = 0
    perturbed_weight: float = 1.0
    seed: int = 0

    @property
    def perturbed_dirs(self) -> list[str]:
        """The directories of ``perturbed`` (several separated by commas, e.g. perturbed truth states and the
        DAgger states of a run; ``perturbed_columns`` columns are drawn from each)."""
        return [d.strip() for d in self.perturbed.split(",") if d.strip()]

    def __post_init__(self):
        if self.n_iters < 1 or self.batch_size < 1 or self.width < 1 or self.depth < 1:
            raise ConfigError("n_iters, batch_size, width and depth must be >= 1")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.perturbed_columns < 0 or (self.perturbed_columns > 0) != bool(self.perturbed):
            raise ConfigError("set both 'perturbed' (a directory from 'nemic atmos perturb') and "
                              "'perturbed_columns' > 0, or neither")
        if not (np.isfinite(self.perturbed_weight) and self.perturbed_weight >= 0):
            raise ConfigError(f"perturbed_weight must be a finite number >= 0, got {self.perturbed_weight!r}")


def quick_offline_config() -> OfflineConfig:
    """A smoke-test size (seconds), not a trained physics."""
    return OfflineConfig(width=32, depth=2, n_iters=50, batch_size=128, max_train_columns=4096,
                         max_test_columns=4096)


def _target_scale(y: np.ndarray, levels: int) -> np.ndarray:
    """Per-output std of the targets, each variable's levels floored at 1 % of its largest level (the dry top has
    dq/dt ~ 0: without a floor its weight in the loss would be unbounded)."""
    scale = y.std(0).astype(np.float64)
    for i in range(4):
        block = scale[i * levels:(i + 1) * levels]
        scale[i * levels:(i + 1) * levels] = np.maximum(block, 1e-2 * block.max())
    return np.where(scale > 0, scale, 1.0)


def prepare(train: xr.Dataset, cfg: OfflineConfig,
            perturbed: xr.Dataset | list[xr.Dataset] | None = None
            ) -> tuple[ColumnNet, np.ndarray, np.ndarray, np.ndarray]:
    """The initial network (training-set statistics inside), the training arrays ``(x, y)`` and the per-sample
    inverse loss scales ``w`` (same shape as ``y``): the loss is ``mean(((pred - y) w)^2)``.

    The truth's own columns are weighed by ``1 / s_k`` with ``s_k`` the std of output ``k`` over them. With
    ``perturbed`` (a store of ``nemic atmos perturb``), ``cfg.perturbed_columns`` of its columns are appended and
    weighed by ``sqrt(cfg.perturbed_weight) / s'_k`` with ``s'_k`` the std over the perturbed columns: SPEEDY's
    response off the attractor is 5-15 times larger than its tendencies on it, and scaled by the truth's ``s_k`` it
    would swamp the loss. The network's input normalisation and output scales stay those of the truth's columns.
    With a list of stores, ``cfg.perturbed_columns`` are drawn from each and each is scaled by its own std.
    """
    x, y = column_arrays(train, max_columns=cfg.max_train_columns, seed=cfg.seed)
    levels = train.sizes["level"]
    scale = _target_scale(y, levels)
    w = np.broadcast_to(1.0 / scale, y.shape)
    x_base, y_base = x, y
    stores = [] if perturbed is None else perturbed if isinstance(perturbed, list) else [perturbed]
    for i, store in enumerate(stores if cfg.perturbed_columns > 0 else []):
        xp, yp = column_arrays(store, max_columns=cfg.perturbed_columns, seed=cfg.seed + 3 + 10 * i)
        wp = np.broadcast_to(np.sqrt(cfg.perturbed_weight) / _target_scale(yp, levels), yp.shape)
        x, y, w = np.concatenate([x, xp]), np.concatenate([y, yp]), np.concatenate([w, wp])
    bounds = np.concatenate([train["level_bounds"].values[:, 0], train["level_bounds"].values[-1:, 1]])
    net = ColumnNet(bounds, cfg.width, cfg.depth, cfg.activation, key=jax.random.key(cfg.seed), zero_init=True)
    mean_precip = max(float(y_base[:, 4 * levels].mean()), 1e-8)
    net = net.with_statistics(x_base.mean(0), x_base.std(0), scale[:4 * levels], mean_precip / np.log(2.0))
    return net, x, y, np.asarray(w, dtype=np.float32)


def r2_scores(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """R^2 = 1 - sum (p - t)^2 / sum (t - mean t)^2 per output column (N, K) -> (K,); NaN where t is constant."""
    sse = ((pred - truth) ** 2).sum(0)
    sst = ((truth - truth.mean(0)) ** 2).sum(0)
    return np.where(sst > 0, 1.0 - sse / np.where(sst > 0, sst, 1.0), np.nan)


def _predict(net: ColumnNet, x: np.ndarray, chunk: int = 65536) -> np.ndarray:
    f = jax.jit(jax.vmap(net))
    return np.concatenate([np.asarray(f(jnp.asarray(x[i:i + chunk]))) for i in range(0, len(x), chunk)])


def train_offline(cfg: OfflineConfig, truth: str | Path, out: str | Path, *, progress: bool = True,
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    """Fit the column network on ``truth/train.zarr``, score it on ``truth/test.zarr``, write the results."""
    t0 = time.perf_counter()
    truth = Path(truth)
    if not truth.is_dir():
        raise ConfigError(f"truth directory '{truth}' does not exist (create it with 'nemic atmos generate')")
    train = open_truth(truth / "train.zarr", truncation=cfg.truncation, variables=TRUTH_VARIABLES)
    test = open_truth(truth / "test.zarr", truncation=cfg.truncation, sigma=train["level"].values,
                      variables=TRUTH_VARIABLES)
    perturbed = None
    if cfg.perturbed_columns > 0:
        perturbed = [open_truth(Path(d) / "perturbed.zarr", truncation=cfg.truncation,
                                sigma=train["level"].values, variables=TRUTH_VARIABLES) for d in cfg.perturbed_dirs]
    settings = {**dataclasses.asdict(cfg), "truth": str(truth.resolve())}
    with staged_run(out, "atmos train --offline", settings, keep_checkpoints=False) as stage:
        net, x, y, w = prepare(train, cfg, perturbed)
        L = train.sizes["level"]
        K = y.shape[1]
        scale = 1.0 / w[0].astype(np.float64)  # the truth's own columns come first

        def loss(pred, tgt):  # tgt = [targets, inverse scales] of each sample
            return jnp.mean(((pred - tgt[:, :K]) * tgt[:, K:]) ** 2)

        log(f"offline training on {len(x)} columns ({train.sizes['time']} times), {cfg.n_iters} iterations")
        fitted, hist = fit_offline(net, jnp.asarray(x), jnp.asarray(np.concatenate([y, w], axis=1)), n_iters=cfg.n_iters,
                                   batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
                                   key=jax.random.key(cfg.seed + 1), loss=loss, progress=progress,
                                   checkpoint_dir=stage / CHECKPOINTS)
        xt, yt = column_arrays(test, max_columns=cfg.max_test_columns, seed=cfg.seed + 2)
        pred = _predict(fitted, xt)
        r2 = r2_scores(pred.astype(np.float64), yt.astype(np.float64))
        test_loss = float(np.mean(((pred - yt) / scale) ** 2))
        scores = xr.Dataset(
            {v: (("level",), r2[i * L:(i + 1) * L], {"units": "1", "long_name": f"R2 of {v} on the test period"})
             for i, v in enumerate(OUT_VARS)},
            coords={"level": ("level", train["level"].values, dict(train["level"].attrs))})
        scores["precipitation"] = ((), r2[4 * L], {"units": "1", "long_name": "R2 of precipitation"})
        scores["evaporation"] = ((), r2[4 * L + 1], {"units": "1", "long_name": "R2 of evaporation"})
        scores.attrs.update({"title": "offline scores of the column network", "Conventions": "CF-1.8"})
        write_netcdf(scores, stage / "scores.nc")
        metrics = {
            "config": settings,
            "train_columns": int(len(x)), "test_columns": int(len(xt)),
            "loss_first": float(hist[0]), "loss_last_100_mean": float(np.mean(hist[-100:])),
            "test_loss": test_loss,
            "test_loss_zero_network": float(np.mean((yt / scale) ** 2)),
            "r2": {v: [float(a) for a in r2[i * L:(i + 1) * L]] for i, v in enumerate(OUT_VARS)},
            "r2_mean": {v: float(np.nanmean(r2[i * L:(i + 1) * L])) for i, v in enumerate(OUT_VARS)},
            "r2_precipitation": float(r2[4 * L]), "r2_evaporation": float(r2[4 * L + 1]),
            "rmse_precipitation_mm_day": float(np.sqrt(np.mean((pred[:, 4 * L] - yt[:, 4 * L]) ** 2)) * 86400),
            "mean_precipitation_mm_day": {"truth": float(yt[:, 4 * L].mean() * 86400),
                                          "network": float(pred[:, 4 * L].mean() * 86400)},
            "wall_seconds": time.perf_counter() - t0,
        }
        save_module(stage / "column_net.eqx", fitted,
                    extra={"recipe": "atmos train --offline", "sigma": train["level"].values.tolist(),
                           "truncation": cfg.truncation, "test_loss": test_loss})
        fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
        ax[0].semilogy(hist)
        ax[0].set(xlabel="iteration", ylabel="normalised MSE", title="offline training loss")
        sig = train["level"].values
        for i, v in enumerate(OUT_VARS):
            ax[1].plot(r2[i * L:(i + 1) * L], sig, marker="o", label=v)
        ax[1].invert_yaxis()
        ax[1].set(xlabel="R2 (test period)", ylabel="sigma", xlim=(-0.2, 1.0))
        ax[1].legend(fontsize=7)
        save_figure(fig, stage / "offline.png")
        write_json(metrics, stage / "metrics.json")
    log("offline R2 (test, mean over levels): " + ", ".join(f"{k} {v:.3f}" for k, v in metrics["r2_mean"].items())
        + f"; precipitation {metrics['r2_precipitation']:.3f}")
    return metrics
