"""Training of the downscaling models (:mod:`nemic.experiments.downscaling`): shared pre-training, a validation
sweep of the Minkowski weight, and the calibration of the generative models' noise on validation patches.

The schedule (all through :func:`nemic.train.loop.fit`, one fixed sequence of batches for every U-Net and one
for every flow, so that the losses alone differ):

1. **U-Nets.** With ``pretrain_steps > 0`` one U-Net is first trained with the MSE loss; every U-Net model
   (``mse`` included) then trains ``steps`` more steps from it with its own loss (a Minkowski fine-tuning of an
   MSE network, as the structure of the rain is learnt after its mean). All U-Nets see the same number of steps.
2. **Minkowski weight.** Each Minkowski U-Net is trained with every weight of ``minkowski_weights`` (or only
   ``minkowski_weight``) and the one kept is the best on the **validation** patches (the latest
   ``val_fraction`` of the training frames, never the test block) against the ``mse`` model: first the number
   of the issue's four conditions met (FSS at ``fss_threshold`` / ``fss_window`` higher, RAPSD error and
   Minkowski distance lower, MAE at most 5 % higher), then the mean relative gain on the first three.
3. **Flows.** Likewise a shared flow-matching pre-training (``flow_pretrain_steps``), then ``flow_steps`` per
   flow with its own loss.
4. **Sampler calibration** (``calibrate_noise``): a flow's samples start from :math:`x_0 \\sim N(0, \\sigma^2 I)`
   and follow the ODE (:math:`\\varepsilon = 0`) or the stochastic sampler of noise :math:`\\varepsilon`
   (:mod:`nemic.nn.flow`) in a number of fixed steps. Every setting of ``sampler_steps`` (default: ``ode_steps``
   only) x ``noise_scales`` x ``sde_noises`` is scored on validation patches (spread/error and Minkowski distance
   of the members), and :func:`choose_sampler` keeps, among the settings whose spread/error lies in
   ``spread_band`` (0.8-1.2), the one with the smallest Minkowski distance; if none does, the one whose
   spread/error is closest to 1. The setting is saved with the model (``n_steps``, ``noise_scale``,
   ``sde_noise``).
   This is a documented, validation-fitted calibration of the sampler; the test block never enters it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from nemic.core.errors import ConfigError

from nemic.data.patches import PatchSampler, block_average
from nemic.experiments.downscaling_config import (GENERATIVE, DownscalingConfig, build_model, evenly,
                                                  latent_scale_of, relaxed_loss)
from nemic.train.downscaling_losses import (TrustGatedMinkowski, calibrate_trust, flow_matching_loss, mse_loss,
                                            mse_minkowski_loss)
from nemic.train.loop import FitResult, default_optimizer, fit
from nemic.train.surrogate import load_default_surrogate

UNETS = ("mse", "mse_minkowski_relaxed", "mse_minkowski_surrogate")


def _fit_record(res: FitResult, n: int, t0: float, c0: float) -> dict[str, Any]:
    hist = np.asarray(res.history, dtype=float)
    tail = max(1, min(20, hist.size // 5)) if hist.size else 1
    return {"steps": n, "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
            "loss_first": float(hist[:tail].mean()) if hist.size else None,
            "loss_last": float(hist[-tail:].mean()) if hist.size else None,
            "aux_last": {k: float(np.mean(v[-tail:])) for k, v in res.aux_history.items() if v},
            "history": hist.tolist()}


def _run(model: Any, loss: Callable, sampler: PatchSampler, n: int, key: jax.Array, cfg: DownscalingConfig,
         name: str, ckpt_dir: Path | None, progress: bool, log: Callable) -> tuple[Any, dict[str, Any]]:
    log(f"training {name} ({n} steps, batch {cfg.batch})")
    t0, c0 = time.perf_counter(), time.process_time()
    ckpt = str(ckpt_dir / f"{name}.ckpt") if ckpt_dir is not None else None
    res = fit(model, loss, sampler, optimizer=default_optimizer(cfg.lr, n), n_iters=n, key=key, checkpoint=ckpt,
              checkpoint_every=100, progress=progress, description=name)
    return res.model, _fit_record(res, n, t0, c0)


def validation_scores(model: Any, val: np.ndarray, cfg: DownscalingConfig, members: int = 0,
                      key: jax.Array | None = None) -> dict[str, float]:
    """Scores (:func:`nemic.experiments.downscaling_eval.score`) of one model on validation patches (N, H, W)."""
    from nemic.experiments import downscaling_eval as ev

    coarse = np.asarray(block_average(val, cfg.factor))
    key = jax.random.PRNGKey(cfg.seed + 2) if key is None else key
    preds = ev.predict({"m": model}, coarse, max(members, 2), key)
    return ev.score({"m": preds["m"]}, val, tuple(cfg.thresholds))["m"]


def selection_key(s: dict[str, float], ref: dict[str, float], cfg: DownscalingConfig) -> tuple[int, float]:
    """(conditions met, mean relative gain) of scores ``s`` against the reference ``ref`` (see the module doc)."""
    f = f"fss_{cfg.fss_threshold:g}mm_{cfg.fss_window}px"
    met = [s[f] > ref[f], s["rapsd_error"] < ref["rapsd_error"],
           s["minkowski_distance"] < ref["minkowski_distance"], s["mae"] <= 1.05 * ref["mae"]]
    gain = (s[f] / max(ref[f], 1e-9) - 1.0 + 1.0 - s["rapsd_error"] / ref["rapsd_error"]
            + 1.0 - s["minkowski_distance"] / ref["minkowski_distance"]) / 3.0
    return int(sum(met)), float(gain)


def choose_sampler(scores: list[dict[str, float]], band: tuple[float, float] = (0.8, 1.2)) -> dict[str, float]:
    """The sampler setting kept among validation ``scores`` (dicts with ``noise_scale``, ``sde_noise``,
    ``spread_error``, ``minkowski_distance`` and optionally ``n_steps``): among those whose spread/error lies in
    ``band`` (inclusive), the smallest Minkowski distance (ties: the smaller noise scale, then the smaller
    ``sde_noise``, then fewer steps); if none lies in the band, the spread/error closest to 1 in ratio
    (``|log r|``), structure ignored."""
    if not scores:
        raise ConfigError("choose_sampler needs at least one scored sampler setting")
    lo, hi = band
    inside = [s for s in scores if lo <= s["spread_error"] <= hi]
    if inside:
        return min(inside, key=lambda s: (s["minkowski_distance"], s["noise_scale"], s["sde_noise"],
                                          s.get("n_steps", 0)))
    return min(scores, key=lambda s: (abs(np.log(max(s["spread_error"], 1e-12))), s["noise_scale"], s["sde_noise"],
                                      s.get("n_steps", 0)))


@eqx.filter_jit
def _members(model: Any, coarse: jax.Array, key: jax.Array, n: int, steps: int, sigma: jax.Array,
             eps: jax.Array) -> jax.Array:
    from nemic.experiments.downscaling_eval import postprocess

    return postprocess(model.sample_batch(coarse, key, n, steps, noise_scale=sigma, sde_noise=eps))


def calibrate_noise(model: Any, val: np.ndarray, cfg: DownscalingConfig,
                    log: Callable | None = None) -> dict[str, Any]:
    """The sampler setting of :func:`choose_sampler` among ``cfg.sampler_steps`` (or ``cfg.ode_steps``) x
    ``cfg.noise_scales`` x ``cfg.sde_noises``, scored on (at most 8, evenly spread) validation patches with
    ensembles of at most 4 members (the same starting keys for every setting); returns the kept setting's scores
    with ``"all"``, the scores of every setting."""
    from nemic.metrics import minkowski_distance, spread_error

    val = val[evenly(val.shape[0], 8)]
    coarse = jnp.asarray(block_average(val, cfg.factor))
    dtype = jnp.result_type(coarse.dtype, jnp.float32)
    thr = jnp.asarray(cfg.thresholds)
    scores = []
    for steps in tuple(cfg.sampler_steps) or (cfg.ode_steps,):
        for sigma in cfg.noise_scales:
            for eps in cfg.sde_noises:
                p = _members(model, coarse, jax.random.PRNGKey(cfg.seed + 3), min(cfg.members, 4), int(steps),
                             jnp.asarray(sigma, dtype), jnp.asarray(eps, dtype))
                md = [float(jnp.mean(minkowski_distance(p[k], val, thr).mean)) for k in range(p.shape[0])]
                scores.append({"n_steps": int(steps), "noise_scale": float(sigma), "sde_noise": float(eps),
                               "spread_error": float(spread_error(p, val)),
                               "minkowski_distance": float(np.mean(md))})
                if log is not None:
                    log(f"  {steps} steps, noise scale {sigma:g}, sde noise {eps:g}: spread/error "
                        f"{scores[-1]['spread_error']:.3f}, Minkowski distance {scores[-1]['minkowski_distance']:.3f}")
    return {**choose_sampler(scores, tuple(cfg.spread_band)), "all": scores}


def train_models(cfg: DownscalingConfig, train: np.ndarray, val: np.ndarray | None = None, *,
                 progress: bool = False, log: Callable = print,
                 ckpt_dir: Path | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train every model of ``cfg.models`` on training patches (N, H, H), choosing the Minkowski weight and the
    flows' sampler settings on validation patches ``val`` (M, H, H) if given; returns (models, training record)."""
    key = jax.random.PRNGKey(cfg.seed)
    sampler = PatchSampler(train, cfg.factor, batch_size=cfg.batch, augment=True)
    record: dict[str, Any] = {"n_train_patches": int(train.shape[0]),
                              "n_val_patches": 0 if val is None else int(val.shape[0])}
    scale = latent_scale_of(train, cfg.factor)
    record["latent_scale"] = scale
    trust = None
    if "mse_minkowski_surrogate" in cfg.models:
        surrogate = load_default_surrogate(version=cfg.surrogate_version)
        calib = train[evenly(train.shape[0], 64)]
        tau, stats = calibrate_trust(surrogate, calib, cfg.trust_weight_at_p90)
        trust = TrustGatedMinkowski(surrogate, tau)
        record["trust_gate"] = {"tau": tau, **stats, "surrogate_version": cfg.surrogate_version,
                                "surrogate_thresholds": np.asarray(surrogate.thresholds).tolist(),
                                "calibration_patches": int(calib.shape[0])}
    losses = {"mse": lambda w: mse_loss,
              "mse_minkowski_relaxed": lambda w: mse_minkowski_loss(relaxed_loss(cfg), w),
              "mse_minkowski_surrogate": lambda w: mse_minkowski_loss(trust, w),
              "generative": lambda w: flow_matching_loss(),
              "generative_minkowski": lambda w: flow_matching_loss(relaxed_loss(cfg), w)}
    weights = tuple(cfg.minkowski_weights) or (cfg.minkowski_weight,)
    bases: dict[bool, Any] = {}
    for flow in (False, True):
        if not any((n in GENERATIVE) == flow for n in cfg.models):
            continue
        base = build_model("generative" if flow else "mse", cfg, jax.random.fold_in(key, 1000 + flow),
                           latent_scale=scale)
        n_pre = cfg.flow_pretrain_steps if flow else cfg.pretrain_steps
        if n_pre:
            name = "flow_pretrain" if flow else "unet_pretrain"
            base, record[name] = _run(base, losses["generative" if flow else "mse"](0.0), sampler, n_pre,
                                      jax.random.fold_in(key, 2000 + flow), cfg, name, ckpt_dir, progress, log)
        bases[flow] = base
    models: dict[str, Any] = {}
    val_scores: dict[str, Any] = {}
    for name in cfg.models:
        flow = name in GENERATIVE
        n = cfg.flow_steps if flow else cfg.steps
        k_fit = jax.random.fold_in(key, 3000 + flow)
        # the weight sweep is for the U-Nets; the generative Minkowski model keeps ``minkowski_weight``
        candidates = (0.0,) if "minkowski" not in name else (cfg.minkowski_weight,) if flow else weights
        runs = []
        for w in candidates:
            tag = name if len(candidates) == 1 else f"{name}_w{w:g}"
            m, rec = _run(bases[flow], losses[name](w), sampler, n, k_fit, cfg, tag, ckpt_dir, progress, log)
            rec["minkowski_weight"] = w if "minkowski" in name else None
            if val is not None and not flow:
                rec["validation"] = validation_scores(m, val, cfg)
            runs.append((m, rec))
        ref = record.get("mse", {}).get("validation")
        if len(runs) > 1 and val is not None:
            ref = ref or validation_scores(bases[flow], val, cfg)
            keys = [selection_key(r["validation"], ref, cfg) for _, r in runs]
            best = max(range(len(runs)), key=lambda i: keys[i])
            log(f"{name} on validation: " + ", ".join(f"weight {w:g}: {k[0]}/4 conditions, gain {k[1]:+.3f}"
                                                      for w, k in zip(candidates, keys))
                + f"; keeping {candidates[best]:g}")
            val_scores[name] = {f"{w:g}": {**r["validation"], "conditions_met": k[0], "gain": k[1]}
                                for w, (_, r), k in zip(candidates, runs, keys)}
        else:
            best = 0
        models[name], record[name] = runs[best]
        n_settings = len(cfg.noise_scales) * len(cfg.sde_noises) * max(1, len(cfg.sampler_steps))
        if flow and val is not None and n_settings > 1:
            log(f"{name}: sampler settings on validation")
            best = calibrate_noise(models[name], val, cfg, log)
            log(f"{name}: keeping {best['n_steps']} steps, noise scale {best['noise_scale']:g}, sde noise "
                f"{best['sde_noise']:g}")
            models[name] = models[name].with_noise_scale(best["noise_scale"], best["sde_noise"], best["n_steps"])
            record[name].update({k: best[k] for k in ("n_steps", "noise_scale", "sde_noise")})
            record[name]["sampler_validation"] = best["all"]
    if val_scores:
        record["minkowski_weight_sweep"] = val_scores
    return models, record
