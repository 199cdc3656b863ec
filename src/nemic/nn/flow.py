r"""A conditional flow-matching model for stochastic precipitation downscaling.

:class:`ConditionalFlow` learns the distribution of fine rain fields given their coarse block averages by
**conditional flow matching** with the straight (rectified-flow / optimal-transport) probability path of Lipman
et al. (2023, "Flow matching for generative modeling", ICLR, arXiv:2210.02747) and Liu, Gong & Liu (2023,
"Flow straight and fast", ICLR, arXiv:2209.03003):

.. math:: x_t = (1 - t)\,x_0 + t\,x_1,\qquad x_0 \sim \mathcal N(0, I),\qquad
   \mathcal L = \mathbb E_{t, x_0, x_1} \big\| v_\theta(x_t, t \mid c) - (x_1 - x_0) \big\|^2 ,

with :math:`t \sim U(0, 1)`. Sampling integrates :math:`dx/dt = v_\theta(x, t \mid c)` from :math:`t = 0` (noise)
to :math:`t = 1` with a fixed-step Euler or Heun (explicit trapezoidal) scheme; each random key gives one member
of an ensemble.

**Stochastic sampler** (``sde_noise`` :math:`\varepsilon > 0`). Along the straight path,
:math:`E[x_0 \mid x_t = x] = x - t\,v(x, t)`, so the score of the marginal :math:`p_t` is
:math:`\nabla \log p_t(x) = -(x - t\,v)/(1 - t)`. For any :math:`g(t)` the SDE
:math:`dx = [v + \tfrac12 g^2 \nabla\log p_t]\,dt + g\,dW` has the same marginals as the ODE (Song et al. 2021,
arXiv:2011.13456, eq. 6; Ma et al. 2024, SiT, arXiv:2401.08740, eq. 11 for interpolants). With
:math:`g^2 = 2\varepsilon(1 - t)`, which vanishes at the data end:

.. math:: dx = \big[(1 + \varepsilon t)\,v_\theta(x, t) - \varepsilon x\big]\,dt + \sqrt{2\varepsilon(1 - t)}\,dW .

It is integrated with Euler-Maruyama (``"euler"``) or the stochastic Heun scheme (``"heun"``: the trapezoidal
rule on the drift, one noise increment a step), each noise increment of variance
:math:`\int_t^{t + \Delta t} g^2 = \varepsilon\,\Delta t\,(2 - 2t - \Delta t)`. With the exact velocity it samples
the same distribution as the ODE; with a learnt one, the injected noise and the score's pull
(:math:`-\varepsilon(x - t v)`) correct part of the velocity's errors, and the members are less alike (an
under-trained flow's ODE contracts). :math:`\varepsilon = 0` is the ODE sampler exactly.

**Rain space.** The model works in the transformed variable

.. math:: x_1 = \big(\log(1 + R) - \log(1 + \uparrow\! C)\big) / s ,

the log rain rate :math:`R` (mm/h) minus the log of the nearest-neighbour upsampled coarse field :math:`C`,
divided by a fixed scale :math:`s` (``latent_scale``, of order the standard deviation of that residual), so that
the data are roughly standard normal. The rain rate is recovered as
:math:`R = \exp(\max(\log(1 + \uparrow C) + s x, 0)) - 1 \ge 0`: every sample is non-negative.

**Velocity field.** A :class:`~nemic.nn.unet.SuperResolutionUNet` (``factor = 1``, no residual) on the fine
grid whose input channels are the state :math:`x_t`, the conditioning :math:`\log(1 + \uparrow C)` and three
constant channels :math:`t, \sin \pi t, \cos \pi t` (the flow time).

:meth:`ConditionalFlow.denoised` gives the one-step estimate :math:`\hat x_1 = x_t + (1 - t) v_\theta`, on which
a Minkowski loss can act during training (:mod:`nemic.train.downscaling_losses`).

Registered as ``"ConditionalFlow"`` in :mod:`nemic.nn.registry` (save/load with
:func:`nemic.train.checkpoint.save_module` / :func:`~nemic.train.checkpoint.load_module`).
"""

from __future__ import annotations

from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from nemic.core.errors import ConfigError, DataError
from nemic.nn.registry import register_module
from nemic.nn.unet import SuperResolutionUNet

__all__ = ["ConditionalFlow", "integrate_flow", "log_rain", "rain_from_log"]

_TIME_CHANNELS = 3
SOLVERS = ("euler", "heun")


def log_rain(rain: jax.Array) -> jax.Array:
    """``log(1 + max(R, 0))`` of a rain rate in mm/h."""
    return jnp.log1p(jnp.maximum(rain, 0.0))


def rain_from_log(y: jax.Array) -> jax.Array:
    """The inverse of :func:`log_rain`, clipped so that the rain rate is >= 0: ``exp(max(y, 0)) - 1``."""
    return jnp.expm1(jnp.maximum(y, 0.0))


def integrate_flow(velocity: Callable[[jax.Array, jax.Array], jax.Array], x0: jax.Array, key: jax.Array,
                   n_steps: int, solver: str = "euler", sde_noise: Any = 0.0) -> jax.Array:
    r"""Integrate the flow from ``x0`` at t = 0 to t = 1 in ``n_steps`` fixed steps (module docstring).

    ``velocity(x, t)`` returns :math:`v(x, t)` with the shape of ``x``. ``sde_noise`` = 0: the ODE
    :math:`dx/dt = v` (Euler, or Heun's trapezoidal predictor-corrector; Heun 1900; Karras et al. 2022,
    arXiv:2206.00364); > 0: the marginal-preserving SDE with :math:`g^2 = 2\varepsilon(1 - t)`, by Euler-Maruyama
    or stochastic Heun with the same noise increment in predictor and corrector. ``key`` draws the noise
    increments only. ``sde_noise`` may be a traced scalar (one compilation for several values).
    """
    if not isinstance(n_steps, int) or n_steps < 1:
        raise ConfigError(f"n_steps must be an integer >= 1, got {n_steps!r}")
    if solver not in SOLVERS:
        raise ConfigError(f"solver must be one of {SOLVERS}, got {solver!r}")
    dt = 1.0 / n_steps
    eps = jnp.asarray(sde_noise, x0.dtype)

    def drift(x, t):
        return (1.0 + eps * t) * velocity(x, t) - eps * x

    def step(x, i):
        t = i * dt
        dw = jax.random.normal(jax.random.fold_in(key, i.astype(jnp.int32)), x.shape, x.dtype)
        noise = jnp.sqrt(jnp.maximum(eps * dt * (2.0 - 2.0 * t - dt), 0.0)) * dw
        f = drift(x, t)
        if solver == "euler":
            return x + dt * f + noise, None
        x_pred = x + dt * f + noise
        return x + 0.5 * dt * (f + drift(x_pred, t + dt)) + noise, None

    x1, _ = jax.lax.scan(step, x0, jnp.arange(n_steps, dtype=x0.dtype))
    return x1


def _upsample(coarse: jax.Array, factor: int) -> jax.Array:
    return jnp.repeat(jnp.repeat(coarse, factor, axis=-2), factor, axis=-1) if factor > 1 else coarse


@register_module("ConditionalFlow")
class ConditionalFlow(eqx.Module):
    """Conditional flow-matching downscaling model; see the module docstring.

    Args:
        factor: block-averaging factor between the coarse input and the fine grid (e.g. 8, 10, 16).
        width: channels of the U-Net's first level.
        depth: U-Net pooling levels (the fine sides must be multiples of ``2**depth``).
        latent_scale: ``s`` of the transformed variable (log(1 + mm/h) units).
        n_steps: default number of ODE steps for :meth:`sample`.
        solver: ``"euler"`` or ``"heun"``.
        noise_scale: standard deviation :math:`\\sigma` of the starting noise of :meth:`sample` (1: the trained
            flow's own; another value is a sampler calibration, e.g. fitted on validation data so that the
            ensemble's spread matches its error).
        sde_noise: :math:`\\varepsilon` of the stochastic sampler (0: the ODE; module docstring).
        key: ``jax.random`` key for the initial weights.

    Shapes: coarse (h, w) -> fine (h factor, w factor) per sample; :meth:`sample_batch` takes (B, h, w).
    """

    net: SuperResolutionUNet
    factor: int = eqx.field(static=True)
    width: int = eqx.field(static=True)
    depth: int = eqx.field(static=True)
    latent_scale: float = eqx.field(static=True)
    n_steps: int = eqx.field(static=True)
    solver: str = eqx.field(static=True)
    noise_scale: float = eqx.field(static=True)
    sde_noise: float = eqx.field(static=True)

    def __init__(self, factor: int = 10, width: int = 16, depth: int = 3, latent_scale: float = 0.5,
                 n_steps: int = 8, solver: str = "euler", noise_scale: float = 1.0, sde_noise: float = 0.0, *,
                 key: jax.Array):
        for name, v, lo in (("factor", factor, 1), ("width", width, 1), ("depth", depth, 0), ("n_steps", n_steps, 1)):
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ConfigError(f"ConditionalFlow: {name} must be an integer >= {lo}, got {v!r}")
        if not (isinstance(latent_scale, (int, float)) and latent_scale > 0):
            raise ConfigError(f"ConditionalFlow: latent_scale must be a number > 0, got {latent_scale!r}")
        if solver not in SOLVERS:
            raise ConfigError(f"ConditionalFlow: solver must be one of {SOLVERS}, got {solver!r}")
        if not (isinstance(noise_scale, (int, float)) and noise_scale > 0):
            raise ConfigError(f"ConditionalFlow: noise_scale must be a number > 0, got {noise_scale!r}")
        if not (isinstance(sde_noise, (int, float)) and 0 <= sde_noise < float("inf")):
            raise ConfigError(f"ConditionalFlow: sde_noise must be a finite number >= 0, got {sde_noise!r}")
        self.net = SuperResolutionUNet(2 + _TIME_CHANNELS, 1, factor=1, width=width, depth=depth, residual=False,
                                       key=key)
        self.factor, self.width, self.depth = factor, width, depth
        self.latent_scale, self.n_steps, self.solver = float(latent_scale), n_steps, solver
        self.noise_scale, self.sde_noise = float(noise_scale), float(sde_noise)

    def config(self) -> dict[str, Any]:
        """Hyperparameters that rebuild this module's skeleton (for :func:`nemic.train.checkpoint.save_module`)."""
        return {"factor": self.factor, "width": self.width, "depth": self.depth, "latent_scale": self.latent_scale,
                "n_steps": self.n_steps, "solver": self.solver, "noise_scale": self.noise_scale, "sde_noise": self.sde_noise}

    def with_noise_scale(self, noise_scale: float, sde_noise: float | None = None,
                         n_steps: int | None = None) -> "ConditionalFlow":
        """The same velocity field with another sampling noise scale :math:`\\sigma` (and, if given, another
        stochastic-sampler noise :math:`\\varepsilon` and number of sampling steps)."""
        cfg = {**self.config(), "noise_scale": noise_scale}
        if sde_noise is not None:
            cfg["sde_noise"] = sde_noise
        if n_steps is not None:
            cfg["n_steps"] = n_steps
        skeleton = ConditionalFlow(**cfg, key=jax.random.PRNGKey(0))
        return eqx.tree_at(lambda m: m.net, skeleton, self.net)

    # ----------------------------------------------------------------------------------- transforms
    def condition(self, coarse: jax.Array) -> jax.Array:
        """``log(1 + upsampled coarse)`` on the fine grid: (..., h, w) -> (..., H, W)."""
        return log_rain(_upsample(jnp.asarray(coarse), self.factor))

    def to_latent(self, fine: jax.Array, coarse: jax.Array) -> jax.Array:
        """Fine rain (..., H, W) in mm/h -> the model's variable ``(log(1 + R) - log(1 + up C)) / s``."""
        return (log_rain(fine) - self.condition(coarse)) / self.latent_scale

    def from_latent(self, x: jax.Array, coarse: jax.Array) -> jax.Array:
        """The model's variable -> rain rate (mm/h, >= 0)."""
        return rain_from_log(self.condition(coarse) + self.latent_scale * x)

    # ----------------------------------------------------------------------------------- velocity
    def velocity(self, x: jax.Array, t: jax.Array, coarse: jax.Array) -> jax.Array:
        """Velocity :math:`v_\\theta(x, t | c)` for one sample: x (H, W), scalar t, coarse (h, w) -> (H, W)."""
        if x.ndim != 2 or coarse.ndim != 2:
            raise DataError(f"ConditionalFlow.velocity expects x (H, W) and coarse (h, w), got {x.shape} and "
                            f"{coarse.shape}")
        if (coarse.shape[0] * self.factor, coarse.shape[1] * self.factor) != x.shape:
            raise DataError(f"coarse field {coarse.shape} times factor {self.factor} does not match the fine "
                            f"grid {x.shape}")
        t = jnp.asarray(t, x.dtype)
        ones = jnp.ones_like(x)
        inp = jnp.stack([x, self.condition(coarse), t * ones, jnp.sin(jnp.pi * t) * ones,
                         jnp.cos(jnp.pi * t) * ones])
        return self.net(inp)[0]

    def denoised(self, x_t: jax.Array, t: jax.Array, coarse: jax.Array) -> jax.Array:
        """One-step estimate of the data point, :math:`\\hat x_1 = x_t + (1 - t) v_\\theta(x_t, t)`, (H, W)."""
        return x_t + (1.0 - t) * self.velocity(x_t, t, coarse)

    # ----------------------------------------------------------------------------------- sampling
    def sample(self, coarse: jax.Array, key: jax.Array, n_steps: int | None = None, solver: str | None = None,
               noise_scale: Any = None, sde_noise: Any = None) -> jax.Array:
        """One fine rain field (H, W) in mm/h for one coarse field (h, w), integrating the flow from noise.

        Fixed steps ``dt = 1 / n_steps`` (:func:`integrate_flow`): the ODE with Euler or Heun, or the stochastic
        sampler when ``sde_noise`` > 0. ``noise_scale`` / ``sde_noise`` override the module's :math:`\\sigma` /
        :math:`\\varepsilon` (they may be traced scalars, e.g. to try several values under one compilation).
        ``key`` draws the starting noise; the SDE's increments come from ``fold_in(key, 1)``, so that with
        :math:`\\varepsilon = 0` both samplers start from the same noise and agree exactly.
        """
        n = self.n_steps if n_steps is None else n_steps
        solver = self.solver if solver is None else solver
        sigma = self.noise_scale if noise_scale is None else noise_scale
        eps = self.sde_noise if sde_noise is None else sde_noise
        coarse = jnp.asarray(coarse)
        # the state carries the wider of the data's and the weights' precision (the scan needs one dtype)
        coarse = coarse.astype(jnp.result_type(coarse.dtype, self.net.head.weight.dtype, jnp.float32))
        shape = (coarse.shape[0] * self.factor, coarse.shape[1] * self.factor)
        x0 = jnp.asarray(sigma, coarse.dtype) * jax.random.normal(key, shape, dtype=coarse.dtype)
        x1 = integrate_flow(lambda x, t: self.velocity(x, t, coarse), x0, jax.random.fold_in(key, 1), n, solver,
                            eps)
        return self.from_latent(x1, coarse)

    def sample_batch(self, coarse: jax.Array, key: jax.Array, n_members: int = 1, n_steps: int | None = None,
                     solver: str | None = None, noise_scale: Any = None, sde_noise: Any = None) -> jax.Array:
        """Ensembles for a batch: coarse (B, h, w) -> members (n_members, B, H, W) in mm/h."""
        coarse = jnp.asarray(coarse)
        if coarse.ndim != 3:
            raise DataError(f"sample_batch expects coarse fields (B, h, w), got shape {coarse.shape}")
        if not isinstance(n_members, int) or n_members < 1:
            raise ConfigError(f"n_members must be an integer >= 1, got {n_members!r}")
        keys = jax.random.split(key, n_members * coarse.shape[0])
        keys = keys.reshape((n_members, coarse.shape[0]) + keys.shape[1:])
        one = lambda c, k: self.sample(c, k, n_steps, solver, noise_scale, sde_noise)  # noqa: E731
        return jax.vmap(lambda ks: jax.vmap(one)(coarse, ks))(keys)
