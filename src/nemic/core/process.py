"""The Process protocol: anything that returns a tendency d(state)/dt.

A dynamical core, a classical parameterization, a neural network, a nudging term and a stochastic forcing are all
Processes; ``a + b`` composes them into a :class:`Sum` whose tendency is the sum of the terms' tendencies (as
dinosaur's ``compose_equations`` and diffrax's ``MultiTerm`` do).

Design note: model time is *not* a field of the state. It is threaded by the steppers and the rollout as an
explicit argument ``t``. This keeps a tendency's pytree exactly the structure of the state (no special leaf that
must have derivative 1), and lets the same state class be used for a snapshot, a batch and a trajectory.
"""

from __future__ import annotations

import abc
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

PyTree = Any


def tree_add(*trees: PyTree) -> PyTree:
    """Leafwise sum of pytrees with identical structure."""
    return jax.tree_util.tree_map(lambda *xs: sum(xs[1:], start=xs[0]), *trees)


def tree_axpy(a: Any, x: PyTree, y: PyTree) -> PyTree:
    """Leafwise ``a * x + y``."""
    return jax.tree_util.tree_map(lambda xi, yi: a * xi + yi, x, y)


def tree_scale(a: Any, x: PyTree) -> PyTree:
    """Leafwise ``a * x``."""
    return jax.tree_util.tree_map(lambda xi: a * xi, x)


def tree_zeros_like(x: PyTree) -> PyTree:
    """A pytree of zeros with the structure, shapes and dtypes of ``x``."""
    return jax.tree_util.tree_map(jnp.zeros_like, x)


class AbstractProcess(eqx.Module):
    """A term of a model's right-hand side: ``tendency(state, t)`` has the pytree structure of ``state``.

    Subclasses hold their parameters as array fields (so ``jax.grad`` reaches them) and shape-determining
    settings as static fields. ``p + q`` returns ``Sum((p, q))``.
    """

    @abc.abstractmethod
    def tendency(self, state: PyTree, t: Any) -> PyTree:
        """Return d(state)/dt at time ``t``, with the same pytree structure as ``state``."""

    def __call__(self, state: PyTree, t: Any) -> PyTree:
        return self.tendency(state, t)

    def __add__(self, other: AbstractProcess) -> Sum:
        if not isinstance(other, AbstractProcess):
            return NotImplemented
        return Sum(_terms(self) + _terms(other))


def _terms(p: AbstractProcess) -> tuple[AbstractProcess, ...]:
    return p.terms if isinstance(p, Sum) else (p,)


class Sum(AbstractProcess):
    """The sum of several processes. The first term is the *core* (it owns the state's diagnostics).

    The tendencies are added in order, so ``core + zero_correction`` reproduces ``core`` bit for bit.
    """

    terms: tuple[AbstractProcess, ...]

    def __init__(self, terms: tuple[AbstractProcess, ...] | list[AbstractProcess]):
        terms = tuple(terms)
        if not terms:
            raise ValueError("Sum needs at least one process")
        for p in terms:
            if not isinstance(p, AbstractProcess):
                raise TypeError(f"Sum terms must be processes, got {type(p).__name__}")
        self.terms = terms

    @property
    def core(self) -> AbstractProcess:
        return self.terms[0]

    def tendency(self, state: PyTree, t: Any) -> PyTree:
        return tree_add(*(p.tendency(state, t) for p in self.terms))


class FunctionProcess(AbstractProcess):
    """Wrap a plain function ``f(state, t) -> tendency`` as a process (handy in tests and notebooks)."""

    fn: Any = eqx.field(static=True)

    def tendency(self, state: PyTree, t: Any) -> PyTree:
        return self.fn(state, t)


class AbstractImplicitProcess(AbstractProcess):
    """A (stiff, usually linear) process that can also be stepped implicitly.

    Besides its tendency L(x) it provides ``implicit_solve(rhs, t, eta)`` returning the solution ``x`` of
    ``x - eta * L(x) = rhs``: the backward-Euler solve that IMEX steppers need.
    """

    @abc.abstractmethod
    def implicit_solve(self, rhs: PyTree, t: Any, eta: Any) -> PyTree:
        """Solve ``x - eta * tendency(x, t) = rhs`` for ``x``."""


class ImplicitExplicit(AbstractProcess):
    """A right-hand side split into an explicit part and an implicitly treated part (for IMEX steppers).

    Its tendency is the sum of both, so explicit steppers can use it too.
    """

    explicit: AbstractProcess
    implicit: AbstractImplicitProcess

    def tendency(self, state: PyTree, t: Any) -> PyTree:
        return tree_add(self.explicit.tendency(state, t), self.implicit.tendency(state, t))
