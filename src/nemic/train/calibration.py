"""Calibration of a few physical parameters: gradient descent through the solver, ensemble Kalman inversion, and
identifiability from the Fisher information.

All methods work on a *forward map* ``G(theta) -> y`` from a 1-D parameter vector (ideally non-dimensional, of
order one) to a 1-D vector of predicted observations, and a target ``y`` with noise standard deviations ``sigma``.
They count the forward-model runs they need, so methods can be compared by cost.

References:
    Kingma & Ba (2015), Adam, arXiv:1412.6980.
    Nocedal & Wright (2006), Numerical Optimization, 2nd ed., Springer, ch. 7 (L-BFGS) and 3.5 (zoom line search).
    Iglesias, Law & Stuart (2013), Ensemble Kalman methods for inverse problems, Inverse Problems 29, 045001,
        doi:10.1088/0266-5611/29/4/045001 (ensemble Kalman inversion with perturbed observations).
    Rao (1945), Cramer (1946): the Cramer-Rao bound, covariance >= F^-1 with F = J^T Sigma^-1 J (Gaussian noise).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nemic.core.errors import ConfigError, DataError

ForwardMap = Callable[[jax.Array], jax.Array]


def check_targets(y: Any, sigma: Any = None) -> tuple[jax.Array, jax.Array]:
    """Validate targets (finite, 1-D after ravel) and noise levels (finite, > 0); return them as float arrays."""
    y_np = np.asarray(y, dtype=float).ravel()
    if y_np.size == 0:
        raise DataError("calibration targets are empty")
    bad = ~np.isfinite(y_np)
    if np.any(bad):
        raise DataError(f"calibration targets contain {int(bad.sum())} NaN/inf value(s) (first at index "
                        f"{int(np.argmax(bad))}); remove or fill them before calibrating")
    s_np = np.ones_like(y_np) if sigma is None else np.broadcast_to(np.asarray(sigma, dtype=float).ravel(),
                                                                    y_np.shape)
    if not np.all(np.isfinite(s_np)) or np.any(s_np <= 0):
        raise DataError("noise standard deviations sigma must be finite and > 0")
    return jnp.asarray(y_np), jnp.asarray(s_np)


def misfit(forward: ForwardMap, y: jax.Array, sigma: jax.Array) -> Callable[[jax.Array], jax.Array]:
    """The negative log-likelihood (up to a constant) ``0.5 mean(((G(theta) - y)/sigma)^2)`` as a function of theta."""
    def loss(theta):
        r = (forward(theta) - y) / sigma
        return 0.5 * jnp.mean(r**2)
    return loss


class _Counter:
    def __init__(self):
        self.n = 0

    def __call__(self, *_):
        self.n += 1


def _counted(fn: Callable, counter: _Counter) -> Callable:
    def wrapped(theta):
        jax.debug.callback(counter, jnp.zeros(()))
        return fn(theta)
    return wrapped


@dataclasses.dataclass
class CalibrationResult:
    """Outcome of a calibration.

    Attributes:
        theta: best parameter vector (p,). history: loss (or ensemble misfit) per iteration.
        n_forward: number of forward-model runs (a gradient evaluation counts one forward run plus its adjoint).
        n_gradient: number of gradient (adjoint) evaluations (0 for ensemble methods).
        method: name. ensemble: final ensemble (J, p) for ensemble methods, else None.
    """

    theta: np.ndarray
    history: np.ndarray
    n_forward: int
    n_gradient: int
    method: str
    ensemble: np.ndarray | None = None


def fit_gradient(loss: Callable[[jax.Array], jax.Array], theta0: Any, *, method: str = "lbfgs", steps: int = 100,
                 learning_rate: float = 0.05, tol: float = 1e-10) -> CalibrationResult:
    """Minimise ``loss(theta)`` by gradient descent through the model: Optax Adam or L-BFGS with a zoom line search.

    Stops after ``steps`` iterations or when the gradient norm drops below ``tol``. Every loss evaluation (also
    inside the line search) is counted as one forward run.
    """
    if method not in ("adam", "lbfgs"):
        raise ConfigError(f"method must be 'adam' or 'lbfgs', got {method!r}")
    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")
    theta = jnp.asarray(theta0, dtype=float)
    if not np.all(np.isfinite(np.asarray(theta))):
        raise DataError("initial parameters must be finite")
    fwd, grads = _Counter(), _Counter()
    f = _counted(loss, fwd)

    if method == "adam":
        opt = optax.adam(learning_rate)
        state = opt.init(theta)

        @jax.jit
        def step(theta, state):
            v, g = jax.value_and_grad(f)(theta)
            upd, state = opt.update(g, state, theta)
            return optax.apply_updates(theta, upd), state, v, g
    else:
        opt = optax.lbfgs()
        state = opt.init(theta)
        vg = optax.value_and_grad_from_state(f)

        @jax.jit
        def step(theta, state):
            v, g = vg(theta, state=state)
            upd, state = opt.update(g, state, theta, value=v, grad=g, value_fn=f)
            return optax.apply_updates(theta, upd), state, v, g

    history = []
    best, best_v = theta, np.inf
    for _ in range(steps):
        new, state, v, g = step(theta, state)
        jax.block_until_ready(new)
        grads.n += 1
        v = float(v)
        history.append(v)
        if v < best_v:
            best, best_v = theta, v
        theta = new
        if not np.isfinite(v) or float(jnp.linalg.norm(g)) < tol:
            break
    final = float(loss(theta))
    fwd.n += 1
    if final < best_v:
        best = theta
    return CalibrationResult(theta=np.asarray(best), history=np.asarray(history), n_forward=fwd.n,
                             n_gradient=grads.n, method=method)


def ensemble_kalman_inversion(forward: ForwardMap, ensemble0: Any, y: Any, sigma: Any, key: jax.Array, *,
                              n_iter: int = 10) -> CalibrationResult:
    """Ensemble Kalman inversion with perturbed observations (Iglesias, Law & Stuart 2013).

    ``u_j <- u_j + C_ug (C_gg + Gamma)^-1 (y + eta_j - G(u_j))``, ``eta_j ~ N(0, Gamma)``, Gamma = diag(sigma^2),
    with ensemble covariances ``C_ug``, ``C_gg``. Gradient-free; costs ``J`` forward runs per iteration (evaluated
    with ``vmap``). The estimate is the ensemble mean.

    Args:
        forward: G, theta (p,) -> (m,). ensemble0: initial ensemble (J, p), drawn from the prior.
        y: targets (m,). sigma: noise standard deviations (m,) or scalar. key: ``jax.random`` key.
    """
    y, sigma = check_targets(y, sigma)
    U = jnp.asarray(ensemble0, dtype=float)
    if U.ndim != 2 or U.shape[0] < 2:
        raise ConfigError(f"ensemble0 must have shape (J >= 2, p), got {U.shape}")
    if n_iter < 1:
        raise ConfigError(f"n_iter must be >= 1, got {n_iter}")
    gamma = jnp.diag(sigma**2)
    J = U.shape[0]
    G_all = jax.jit(jax.vmap(forward))

    @jax.jit
    def update(U, G, k):
        du, dg = U - U.mean(0), G - G.mean(0)
        c_ug = du.T @ dg / (J - 1)
        c_gg = dg.T @ dg / (J - 1)
        yj = y + sigma * jax.random.normal(k, G.shape, G.dtype)
        return U + jnp.linalg.solve(c_gg + gamma, (yj - G).T).T @ c_ug.T

    history, n_fwd = [], 0
    for k in jax.random.split(key, n_iter):
        G = G_all(U)
        n_fwd += J
        history.append(float(0.5 * jnp.mean(((G.mean(0) - y) / sigma) ** 2)))
        U = update(U, G, k)
    return CalibrationResult(theta=np.asarray(U.mean(0)), history=np.asarray(history), n_forward=n_fwd,
                             n_gradient=0, method="eki", ensemble=np.asarray(U))


def identifiability(forward: ForwardMap, theta: Any, sigma: Any, names: Sequence[str] | None = None, *,
                    rel_threshold: float = 0.05, corr_threshold: float = 0.95) -> dict[str, Any]:
    """Which parameters do the targets identify? Fisher information ``F = J^T Sigma^-1 J`` at ``theta``.

    Returns the singular values of ``Sigma^-1/2 J`` (small ones = directions the data cannot see), the weakest
    direction, the Cramer-Rao standard deviations ``sqrt(diag(F^-1))`` (in the units of theta), the parameter
    correlation matrix of ``F^-1``, the parameters whose Cramer-Rao std exceeds ``rel_threshold * |theta|``
    (``poorly_identified``) and the pairs whose correlation exceeds ``corr_threshold`` in magnitude
    (``inseparable_pairs``).
    """
    theta = jnp.asarray(theta, dtype=float)
    p = theta.shape[0]
    names = list(names) if names is not None else [f"theta{i}" for i in range(p)]
    jac = np.asarray(jax.jacfwd(forward)(theta))
    sig = np.broadcast_to(np.asarray(sigma, dtype=float).ravel(), (jac.shape[0],))
    Jw = jac / sig[:, None]
    _, s, vt = np.linalg.svd(Jw, full_matrices=False)
    # covariance F^-1 = V diag(1/s^2) V^T; singular values below 1e-10 s_max are floored there (a direction the
    # data do not see gets a huge, not a zero, variance)
    s_floor = np.maximum(s, 1e-10 * s[0]) if s[0] > 0 else np.ones_like(s)
    cov = (vt.T / s_floor**2) @ vt
    std = np.sqrt(np.maximum(np.diag(cov), 0.0))
    corr = cov / np.outer(std, std)
    th = np.abs(np.asarray(theta))
    poorly = [n for n, sd, t in zip(names, std, th) if sd > rel_threshold * max(t, 1e-12)]
    pairs = [(names[i], names[j], float(corr[i, j])) for i in range(p) for j in range(i + 1, p)
             if abs(corr[i, j]) > corr_threshold]
    weakest = vt[-1]
    return {"singular_values": s, "condition_number": float(s[0] / s[-1]) if s[-1] > 0 else float("inf"),
            "weakest_direction": dict(zip(names, weakest.tolist())), "cramer_rao_std": dict(zip(names, std.tolist())),
            "correlation": corr, "poorly_identified": poorly, "inseparable_pairs": pairs, "jacobian": jac}
