"""Polynomial closures: the classical deterministic parameterization of Lorenz-96 subgrid tendencies.

Wilks (2005, QJRMS 131, 389-407, doi:10.1256/qj.04.03) fits the coarse-grained subgrid tendency U_k as a quartic
polynomial of the local resolved variable X_k by least squares; Arnold, Moroz & Palmer (2013, Phil. Trans. R.
Soc. A 371, doi:10.1098/rsta.2011.0479) use a cubic. The closure is local and the same at every k.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from nemic.core.errors import ConfigError, DataError
from nemic.core.process import AbstractProcess, PyTree


class PolynomialClosure(AbstractProcess):
    """Tendency ``U(X) = sum_i coeffs[i] X^i`` applied pointwise to the state field ``field``.

    Args:
        coeffs: polynomial coefficients, lowest degree first, shape (degree + 1,). Differentiable.
        field: name of the state field the closure acts on.
    """

    coeffs: jax.Array
    field: str = eqx.field(static=True, default="x")

    def __call__(self, x: jax.Array) -> jax.Array:  # type: ignore[override]
        return jnp.polyval(self.coeffs[::-1], x)

    def tendency(self, state: PyTree, t: Any, key: Any = None) -> PyTree:
        zeros = jax.tree_util.tree_map(jnp.zeros_like, state)
        x = getattr(state, self.field)
        return eqx.tree_at(lambda s: getattr(s, self.field), zeros, self(x))

    @classmethod
    def fit(cls, x: Any, u: Any, degree: int = 4, field: str = "x") -> "PolynomialClosure":
        """Least-squares fit of ``u ~ poly(x)`` over all samples (any shape; flattened).

        Raises:
            DataError: if shapes differ, data contain NaN, or there are fewer samples than coefficients.
        """
        x = np.asarray(x, dtype=float).ravel()
        u = np.asarray(u, dtype=float).ravel()
        if x.shape != u.shape:
            raise DataError(f"x and u must have the same number of values, got {x.size} and {u.size}")
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(u))):
            raise DataError("polynomial closure fit: x and u must be finite")
        if degree < 0 or x.size <= degree:
            raise ConfigError(f"need 0 <= degree < number of samples, got degree={degree}, {x.size} samples")
        # scale x for conditioning, then convert back to coefficients of the raw variable
        s = max(np.abs(x).max(), 1e-12)
        vander = np.vander(x / s, degree + 1, increasing=True)
        c_scaled, *_ = np.linalg.lstsq(vander, u, rcond=None)
        coeffs = c_scaled / s ** np.arange(degree + 1)
        return cls(coeffs=jnp.asarray(coeffs), field=field)


