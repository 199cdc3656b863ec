"""A stochastic CNN closure of the two-layer QG model: a random field perturbs a CNN's PV forcing.

``e`` (C, ny, nx) is a :class:`~nemic.processes.stochastic.GaussianRandomField` on the model's periodic grid
(NeuralGCM's random fields, Kochkov et al. 2024, Nature 632, 1060, doi:10.1038/s41586-024-07744-y; the network is
the benchmark's fully convolutional closure of Ross et al. 2023, JAMES 15, e2022MS003258,
doi:10.1029/2022MS003258), and ``f(q) = out_scale * net(q / in_scale)`` the deterministic forcing. Three ways
(``mode``) to let the noise in:

* ``"input"``: ``dq/dt = out_scale * net([q / in_scale, e])``, the noise as extra input channels (NeuralGCM's
  design: the network learns the distribution). The mean over the noise of a nonlinear network is not the
  deterministic forcing, so a closure warm-started from a deterministic one drifts away from its climate.
* ``"multiplicative"``: ``dq/dt = f(q) (1 + r) - <f(q) r>`` with ``r = clip(e, -1, 1)`` (one pattern for both
  layers if C = 1, one per layer if C = 2) and ``<.>`` the domain mean of each layer (which keeps each layer's
  mean PV, as the zero-mean CNN does): stochastically perturbed tendencies (SPPT, Buizza, Miller & Palmer 1999,
  QJRMS 125, 2887, doi:10.1002/qj.49712556006; the clipping to ``|r| <= 1`` as in Palmer et al. 2009, ECMWF
  Technical Memorandum 598).
* ``"additive"``: ``dq/dt = f(q) + out_scale (e - <e>)``, a random forcing in units of the closure's scale.

In the last two the network is the deterministic one, unchanged, and the noise is symmetric and independent of
``q``, so the mean of the forcing over the noise is exactly ``f(q)``: the closure keeps the deterministic mean
forcing and adds spread around it. The field's amplitude, correlation length and correlation time are trainable
(alone, or with the network); the field lives in the rollout's noise state (a key is needed).

:meth:`StochasticCNNClosure.from_deterministic` starts from a trained deterministic
:class:`~nemic.processes.qg_closures.CNNClosure`: the same weights, plus first-layer weights for the noise
channels in ``"input"`` mode (with ``noise_weight=0`` the stochastic closure equals the deterministic one for
any noise), its network unchanged in the other modes, so an offline-trained closure can be fine-tuned with an
ensemble score through rollouts
(:func:`nemic.train.ensemble_losses.fit_ensemble`).

Registered in :mod:`nemic.nn.registry` as ``"QGStochasticCNNClosure"``: saved and loaded with
:func:`nemic.train.checkpoint.save_module` / ``load_module``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp

from nemic.core.errors import ConfigError, check_int_at_least, check_positive
from nemic.core.process import AbstractProcess
from nemic.models.qg.grid import QGGrid, as_grid
from nemic.models.qg.model import QGState
from nemic.nn.conv import CircularCNN
from nemic.nn.registry import module_spec, register_module, spec_of
from nemic.processes.qg_closures import CNNClosure
from nemic.processes.stochastic import GaussianRandomField

__all__ = ["MODES", "STOCHASTIC_CNN_CLOSURE_KIND", "StochasticCNNClosure"]

#: the ways the noise enters the closure (see the module documentation)
MODES = ("input", "multiplicative", "additive")


class StochasticCNNClosure(AbstractProcess):
    """A QG PV closure perturbed by the current random field ``e``: ``out_scale * net([q / in_scale, e])``
    (``mode="input"``), ``f (1 + clip(e, -1, 1)) - <f clip(e, -1, 1)>`` (``"multiplicative"``) or
    ``f + out_scale (e - <e>)`` (``"additive"``) with ``f = out_scale * net(q / in_scale)``.

    Args:
        net: a module mapping (2 + C, ny, nx) (``"input"``) or (2, ny, nx) (the other modes) to (2, ny, nx) (a
            zero-mean :class:`~nemic.nn.conv.CircularCNN` conserves each layer's mean PV).
        noise: a :class:`GaussianRandomField` with grid ``(ny, nx)`` and ``C`` channels (``field=None``); its
            correlation length is in grid points (``dx=1``) and its correlation time in seconds.
        in_scale, out_scale: PV scale (2,), s^-1, and forcing scale (2,), s^-2, as in
            :class:`~nemic.processes.qg_closures.CNNClosure`.
        grid: the model grid it is meant for (optional).
        value: the current noise field (bound by the rollout).
        mode: ``"input"``, ``"multiplicative"`` or ``"additive"``; the last two need C = 1 (one pattern for both
            layers) or C = 2 (one per layer).

    Add it to a model as a plain process (``model + closure`` forms a Sum): its tendency needs nothing from the
    model. :meth:`closure_tendency` gives the same tendency for diagnostics that pass the model.
    """

    net: Any
    noise: GaussianRandomField
    in_scale: jax.Array
    out_scale: jax.Array
    grid: QGGrid | None = eqx.field(static=True)
    value: Any = None
    mode: str = eqx.field(static=True, default="input")
    stochastic: ClassVar[bool] = True

    def __init__(self, net: Any, noise: GaussianRandomField, in_scale, out_scale, grid: Any = None,
                 value: Any = None, mode: str = "input"):
        if mode not in MODES:
            raise ConfigError(f"StochasticCNNClosure mode must be one of {', '.join(MODES)}; got {mode!r}")
        if mode != "input" and noise.channels not in (1, 2):
            raise ConfigError(f"a {mode} StochasticCNNClosure needs 1 or 2 noise channels (one pattern for both "
                              f"layers, or one per layer), got {noise.channels}")
        if not isinstance(noise, GaussianRandomField) or len(noise.grid) != 2:
            raise ConfigError("StochasticCNNClosure needs a 2-D GaussianRandomField (grid (ny, nx)), got "
                              f"{type(noise).__name__}")
        if noise.field is not None:
            raise ConfigError("the noise of a StochasticCNNClosure is an input of its network: build the "
                              "GaussianRandomField with field=None")
        self.net = net
        self.noise = noise
        self.in_scale = jnp.asarray(in_scale, dtype=float).reshape(2)
        self.out_scale = jnp.asarray(out_scale, dtype=float).reshape(2)
        self.grid = None if grid is None else as_grid(grid)
        if self.grid is not None and (self.grid.ny, self.grid.nx) != noise.grid:
            raise ConfigError(f"the noise grid {noise.grid} is not the model grid ({self.grid.ny}, {self.grid.nx})")
        self.value = value
        self.mode = mode

    @classmethod
    def from_deterministic(cls, closure: CNNClosure, grid: Any, *, channels: int = 1, sigma: float = 1.0,
                           length: float = 2.0, tau: float = 86400.0, noise_weight: float = 0.1,
                           mode: str = "input", key: jax.Array) -> StochasticCNNClosure:
        """Start from a trained :class:`CNNClosure` whose network is a :class:`CircularCNN`. ``mode="input"``: the
        same weights, plus first-layer weights for ``channels`` noise inputs drawn from ``N(0, noise_weight^2)``
        times the scale of the first layer's existing weights (0 gives the deterministic closure exactly). The
        other modes keep the network as it is (``noise_weight`` is not used).

        Args:
            grid: the model (or its grid); the random field lives on its (ny, nx) points.
            sigma, length, tau: the random field's amplitude (dimensionless in ``"multiplicative"`` mode, in
                units of ``out_scale`` in ``"additive"`` mode), correlation length (grid points) and time (s).
        """
        if not isinstance(closure, CNNClosure) or not isinstance(closure.net, CircularCNN):
            raise ConfigError("from_deterministic needs a CNNClosure around a CircularCNN, got "
                              f"{type(closure).__name__}")
        check_int_at_least("channels", channels, 1)
        check_positive("noise_weight", noise_weight, allow_zero=True)
        g = as_grid(grid)
        noise = GaussianRandomField((g.ny, g.nx), sigma=sigma, length=length, tau=tau, channels=channels)
        if not bool(jnp.all(jnp.isfinite(jax.grad(lambda n: jnp.sum(n.filter()))(noise).log_length))):
            # exp(-k^2 L^2 / 2) underflows at the largest wavenumbers (float32: L above ~2.9 grid points), and
            # the gradient of its square root there is not finite
            raise ConfigError(f"the random field's correlation length {length} grid points is too long for "
                              f"{noise.log_length.dtype} on a {g.ny}x{g.nx} grid (its spectral filter underflows and "
                              "gradients become NaN); use a shorter length or float64")
        if mode != "input":
            return cls(closure.net, noise, closure.in_scale, closure.out_scale, g, mode=mode)
        det = closure.net
        cfg = det.config()
        k_net, k_w = jax.random.split(key)
        net = CircularCNN(2 + channels, cfg["out_channels"], widths=cfg["widths"], kernel_sizes=cfg["kernel_sizes"],
                          zero_mean=cfg["zero_mean"], key=k_net)
        w0 = det.layers[0].conv.weight  # (O, I, k, k)
        scale = jnp.std(w0)
        w_noise = noise_weight * scale * jax.random.normal(k_w, (w0.shape[0], channels) + w0.shape[2:], w0.dtype)
        for i, layer in enumerate(det.layers):
            w = jnp.concatenate([w0, w_noise], axis=1) if i == 0 else layer.conv.weight
            net = eqx.tree_at(lambda n, i=i: (n.layers[i].conv.weight, n.layers[i].conv.bias), net,
                              (w, layer.conv.bias))
        return cls(net, noise, closure.in_scale, closure.out_scale, g)

    # the noise-state protocol
    def init_noise(self, state, key):
        return self.noise.init_noise(state, key)

    def advance_noise(self, noise, key, dt):
        return self.noise.advance(noise, key, dt)

    def bind_noise(self, noise):
        return StochasticCNNClosure(self.net, self.noise, self.in_scale, self.out_scale, self.grid, noise, self.mode)

    def with_zero_noise(self) -> StochasticCNNClosure:
        """This closure with the noise input held at zero (a deterministic closure, e.g. for diagnostics)."""
        zeros = jnp.zeros((self.noise.channels,) + self.noise.grid, self.noise.log_sigma.dtype)
        return self.bind_noise(zeros)

    def forcing(self, q, e):
        """The PV forcing (2, ny, nx), s^-2, of physical PV ``q`` (2, ny, nx), s^-1, with noise ``e`` (C, ny, nx)."""
        dt = q.dtype
        x = q / jax.lax.stop_gradient(jnp.asarray(self.in_scale, dt))[:, None, None]
        out_scale = jax.lax.stop_gradient(jnp.asarray(self.out_scale, dt))[:, None, None]
        e = e.astype(dt)
        if self.mode == "input":
            return self.net(jnp.concatenate([x, e], axis=0)).astype(dt) * out_scale
        f = self.net(x).astype(dt) * out_scale
        if self.mode == "multiplicative":
            p = f * jnp.clip(e, -1.0, 1.0)  # (C, ...) broadcasts against the two layers when C = 1
        else:
            p = jnp.broadcast_to(out_scale * e, f.shape)
        return f + p - jnp.mean(p, axis=(-2, -1), keepdims=True)

    def deterministic_forcing(self, q):
        """The forcing with the noise at zero (``"input"``) or its mean over the noise (the other modes), which
        is the deterministic network's ``out_scale * net(q / in_scale)``."""
        c = self.noise.channels
        return self.forcing(q, jnp.zeros((c,) + tuple(q.shape[-2:]), q.dtype))

    def tendency(self, state: QGState, t: Any, key: Any = None) -> QGState:
        if self.value is None:
            raise ConfigError("StochasticCNNClosure has no noise state: run it through rollout/simulate with a key")
        q = state.q
        if tuple(q.shape[-2:]) != self.noise.grid:
            raise ConfigError(f"the state's grid {tuple(q.shape[-2:])} is not the closure's {self.noise.grid}")
        return QGState.from_q(self.forcing(q, self.value))

    def closure_tendency(self, model: Any, state: QGState, t: Any, key: Any = None) -> QGState:
        return self.tendency(state, t, key)


#: the registry kind of :class:`StochasticCNNClosure` in weight files
STOCHASTIC_CNN_CLOSURE_KIND = "QGStochasticCNNClosure"


def _config(closure: StochasticCNNClosure) -> dict[str, Any]:
    net = spec_of(closure.net)
    g = closure.grid
    return {"net_kind": net.kind, "net": net.config(closure.net), "noise_grid": list(closure.noise.grid),
            "channels": closure.noise.channels, "mode": closure.mode,
            "in_scale": [float(x) for x in closure.in_scale],
            "out_scale": [float(x) for x in closure.out_scale],
            "grid": None if g is None else {"nx": g.nx, "ny": g.ny, "L": g.L, "W": g.W}}


def _build(config: dict[str, Any], key: Any) -> StochasticCNNClosure:
    net = module_spec(config["net_kind"]).build(dict(config["net"]), key)
    noise = GaussianRandomField(tuple(config["noise_grid"]), channels=int(config["channels"]))
    grid = config.get("grid")
    return StochasticCNNClosure(net, noise, config["in_scale"], config["out_scale"],
                                None if grid is None else QGGrid(**grid), mode=config.get("mode", "input"))


register_module(STOCHASTIC_CNN_CLOSURE_KIND, StochasticCNNClosure, build=_build, config=_config)
