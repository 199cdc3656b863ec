"""The Process protocol: anything that returns a tendency d(state)/dt.

A dynamical core, a classical parameterization, a neural network, a nudging term and a stochastic forcing are all
Processes; ``a + b`` composes them into a :class:`Sum` whose tendency is the sum of the terms' tendencies (as
dinosaur's ``compose_equations`` and diffrax's ``MultiTerm`` do).

Composition is closed under implicit-explicit splitting: adding explicit terms to an :class:`ImplicitExplicit`
process folds them into its explicit part, so ``ebm + nudging + correction`` is still an ``ImplicitExplicit``
that IMEX steppers accept without special code. A sum may hold at most one implicit part.

Randomness. ``tendency(state, t, key=None)`` receives a ``jax.random`` key from the rollout (the run key with the
step index folded in); a :class:`Sum` splits it among its stochastic terms, and deterministic processes ignore it
at no cost. Processes with memory (an AR(1) forcing) keep their random field in a *noise state* that the rollout
carries beside the model state and advances once per step (:meth:`AbstractProcess.init_noise`,
:meth:`AbstractProcess.advance_noise`); the stepper then sees the process with the current field bound into it
(:meth:`AbstractProcess.bind_noise`). This is NeuralGCM's choice of random fields that evolve with the run
(Kochkov et al. 2024, Nature 632, 1060), kept out of the physical state so that a model's state class, its
tendencies and its output stay the same whether or not a stochastic term is added; it is preferred to diffrax's
drift/diffusion terms because the stochastic parameterizations of the field (SPPT, AR(1) additive noise,
generative closures) are forcings that stay constant over a step, not Ito integrals of a Brownian path.

Design note: model time is *not* a field of the state. It is threaded by the steppers and the rollout as an
explicit argument ``t``. This keeps a tendency's pytree exactly the structure of the state.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp

from nemic.core.errors import ConfigError

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
    """A term of a model's right-hand side: ``tendency(state, t, key)`` has the pytree structure of ``state``.

    Subclasses hold their parameters as array fields (so ``jax.grad`` reaches them) and shape-determining
    settings as static fields. ``p + q`` returns ``Sum((p, q))`` (or an :class:`ImplicitExplicit` when either
    side has an implicit part).

    Class variables:
        stochastic: True when the tendency draws random numbers from ``key`` or holds a noise state; a rollout
            of a stochastic process needs a key.
    """

    stochastic: ClassVar[bool] = False

    @abc.abstractmethod
    def tendency(self, state: PyTree, t: Any, key: Any = None) -> PyTree:
        """Return d(state)/dt at time ``t``, with the same pytree structure as ``state``.

        ``key`` is a ``jax.random`` key for stochastic processes (``None`` in deterministic runs).
        """

    def __call__(self, state: PyTree, t: Any, key: Any = None) -> PyTree:
        return self.tendency(state, t, key)

    # ------------------------------------------------------------ randomness with memory (default: none)
    def init_noise(self, state: PyTree, key: Any) -> PyTree:
        """The initial noise state (random fields with memory) for a run from ``state``; ``None`` if none."""
        return None

    def advance_noise(self, noise: PyTree, key: Any, dt: Any) -> PyTree:
        """Advance the noise state by one step of size ``dt`` (called once per step, before the step)."""
        return noise

    def bind_noise(self, noise: PyTree) -> AbstractProcess:
        """This process with the current noise state bound into it (what the stepper sees during a step)."""
        return self

    # ------------------------------------------------------------ composition
    def __add__(self, other: AbstractProcess) -> AbstractProcess:
        if not isinstance(other, AbstractProcess):
            return NotImplemented
        return compose(self, other)

    def __radd__(self, other: Any) -> AbstractProcess:
        if isinstance(other, int) and other == 0:  # so that sum([p, q, r]) works
            return self
        return NotImplemented


def _terms(p: AbstractProcess) -> tuple[AbstractProcess, ...]:
    return p.terms if isinstance(p, Sum) else (p,)


def compose(*processes: AbstractProcess) -> AbstractProcess:
    """Sum of processes, closed under implicit-explicit splitting.

    Explicit terms join the explicit part of the (at most one) :class:`ImplicitExplicit` among ``processes``; the
    order of the explicit terms is kept, so ``core + zero_correction`` reproduces ``core`` bit for bit.

    Raises:
        ConfigError: if more than one process has an implicit part, or an argument is not a process.
    """
    for p in processes:
        if not isinstance(p, AbstractProcess):
            raise ConfigError(f"only processes can be added, got {type(p).__name__}")
    imex = [p for p in processes if isinstance(p, ImplicitExplicit)]
    implicit_bare = [p for p in processes if isinstance(p, AbstractImplicitProcess)]
    if len(imex) + len(implicit_bare) > 1:
        raise ConfigError(
            "a model can have at most one implicit part; got "
            + ", ".join(type(p).__name__ for p in imex + implicit_bare)
            + " (add their implicit operators into one AbstractImplicitProcess)"
        )
    if not imex and not implicit_bare:
        terms: list[AbstractProcess] = []
        for p in processes:
            terms.extend(_terms(p))
        return Sum(tuple(terms))
    implicit = imex[0].implicit if imex else implicit_bare[0]
    explicit: list[AbstractProcess] = []
    for p in processes:
        if isinstance(p, ImplicitExplicit):
            explicit.extend(_terms(p.explicit))
        elif not isinstance(p, AbstractImplicitProcess):
            explicit.extend(_terms(p))
    if not explicit:
        return implicit
    # keep the model's own stepper choice, so simulate(model + terms, None, ...) steps as the model would
    source = imex[0] if imex else None
    default = None
    if source is not None:
        try:
            default = source.default_stepper()
        except ConfigError:
            default = None
    return ImplicitExplicit(Sum(tuple(explicit)) if len(explicit) > 1 else explicit[0], implicit,
                            default=default)


def split_key(key: Any, n: int) -> tuple[Any, ...]:
    """``n`` independent keys from ``key`` (``None`` stays ``None``)."""
    if key is None:
        return (None,) * n
    if n == 1:
        return (key,)
    return tuple(jax.random.split(key, n))


class Sum(AbstractProcess):
    """The sum of several processes. The first term is the *core* (it owns the state's diagnostics).

    The tendencies are added in order, so ``core + zero_correction`` reproduces ``core`` bit for bit. The key of a
    step is split among the stochastic terms (deterministic terms get ``None``), so adding a deterministic term
    never changes the random numbers a stochastic one draws.
    """

    terms: tuple[AbstractProcess, ...]

    def __init__(self, terms: tuple[AbstractProcess, ...] | list[AbstractProcess]):
        terms = tuple(terms)
        if not terms:
            raise ConfigError("Sum needs at least one process")
        for p in terms:
            if not isinstance(p, AbstractProcess):
                raise ConfigError(f"Sum terms must be processes, got {type(p).__name__}")
            if isinstance(p, (ImplicitExplicit, AbstractImplicitProcess)):
                raise ConfigError(
                    f"Sum cannot hold the implicit part {type(p).__name__}; build it with '+' (nemic.core.compose),"
                    " which folds explicit terms into the implicit-explicit model")
        self.terms = terms

    @property
    def core(self) -> AbstractProcess:
        return self.terms[0]

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        return any(p.stochastic for p in self.terms)

    def _keys(self, key: Any) -> list[Any]:
        flags = [p.stochastic for p in self.terms]
        ks = iter(split_key(key, max(sum(flags), 1)))
        return [next(ks) if f else None for f in flags]

    def tendency(self, state: PyTree, t: Any, key: Any = None) -> PyTree:
        keys = self._keys(key)
        return tree_add(*(p.tendency(state, t, k) for p, k in zip(self.terms, keys)))

    def init_noise(self, state, key):
        noise = tuple(p.init_noise(state, k) for p, k in zip(self.terms, self._keys(key)))
        return None if all(n is None for n in noise) else noise

    def advance_noise(self, noise, key, dt):
        if noise is None:
            return None
        return tuple(p.advance_noise(n, k, dt) for p, n, k in zip(self.terms, noise, self._keys(key)))

    def bind_noise(self, noise):
        if noise is None:
            return self
        return Sum(tuple(p.bind_noise(n) for p, n in zip(self.terms, noise)))


class OncePerStep(AbstractProcess):
    """A term applied once per step, before the step, by forward Euler (sequential or Lie splitting).

    Every nemic stepper calls :func:`apply_once_per_step` first: the tendencies of the ``OncePerStep`` terms are
    evaluated once, at the state and time at the start of the step, added as ``x + dt f(x, t)``, and the stepper
    then integrates the remaining terms from that state. This is how SPEEDY and jcm couple their physics to the
    dynamical core (physics tendencies once per step, then the dynamics step; jcm's ``Model`` calls it the
    operator-split step), and it costs one evaluation of the term per step instead of one per stage (three for
    IMEX-SIL3). The splitting error is first order in ``dt``; a term stiffer than ``1/dt`` is unstable under it.

    With ``every = k > 1`` the term is applied only at the steps whose index ``round(t / dt)`` is a multiple of
    ``k``, as ``x + k dt f(x, t)``: a physics time step ``k`` times the dynamics step, as GCMs call (parts of) their
    physics less often than their dynamics. The skipped steps cost nothing under ``jit`` (``lax.cond``); under
    ``vmap`` both branches run.

    Outside a stepper (``tendency``, ``observe``) the wrapper is transparent.
    """

    term: AbstractProcess
    every: int = eqx.field(static=True, default=1)

    def __check_init__(self):
        if not isinstance(self.term, AbstractProcess) or isinstance(
                self.term, (ImplicitExplicit, AbstractImplicitProcess, OncePerStep)):
            raise ConfigError("OncePerStep wraps one explicit process (not an implicit part or another OncePerStep)")
        if not (isinstance(self.every, int) and self.every >= 1):
            raise ConfigError(f"OncePerStep every must be a whole number of steps >= 1, got {self.every!r}")

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        return self.term.stochastic

    def tendency(self, state: PyTree, t: Any, key: Any = None) -> PyTree:
        return self.term.tendency(state, t, key)

    def init_noise(self, state, key):
        return self.term.init_noise(state, key)

    def advance_noise(self, noise, key, dt):
        return self.term.advance_noise(noise, key, dt)

    def bind_noise(self, noise):
        return self if noise is None else OncePerStep(self.term.bind_noise(noise), self.every)


class _Spent(AbstractProcess):
    """Placeholder of a stochastic :class:`OncePerStep` term already applied in this step (zero tendency, same key
    share), or of the only explicit term."""

    was_stochastic: bool = eqx.field(static=True, default=False)

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        return self.was_stochastic

    def tendency(self, state: PyTree, t: Any, key: Any = None) -> PyTree:
        return tree_zeros_like(state)


def apply_once_per_step(process: AbstractProcess, state: PyTree, t: Any, dt: Any, key: Any = None
                        ) -> tuple[AbstractProcess, PyTree]:
    """Apply the :class:`OncePerStep` terms of ``process`` by forward Euler; return ``(rest, state')``.

    ``rest`` is ``process`` without those terms (stochastic ones leave a zero placeholder, so the key of the step is
    shared among the stochastic terms exactly as in ``process`` itself). Without such terms: ``(process, state)``.
    """
    explicit = process.explicit if isinstance(process, ImplicitExplicit) else process
    terms = _terms(explicit)
    if not any(isinstance(p, OncePerStep) for p in terms):
        return process, state
    keys = explicit._keys(key) if isinstance(explicit, Sum) else [key]
    for p, k in zip(terms, keys):
        if not isinstance(p, OncePerStep):
            continue
        if p.every == 1:
            state = tree_axpy(dt, p.tendency(state, t, k), state)
            continue
        due = jnp.round(jnp.asarray(t) / dt).astype(jnp.int32) % p.every == 0
        state = jax.lax.cond(due, lambda x, p=p, k=k: tree_axpy(p.every * dt, p.tendency(x, t, k), x),
                             lambda x: x, state)
    # a stochastic term applied already leaves a placeholder, so the others keep their share of the key; a
    # deterministic one leaves nothing (no zero tendency added at every stage)
    rest_terms = tuple(_Spent(True) if isinstance(p, OncePerStep) else p for p in terms
                       if not (isinstance(p, OncePerStep) and not p.stochastic)) or (_Spent(False),)
    rest = Sum(rest_terms) if len(rest_terms) > 1 else rest_terms[0]
    if isinstance(process, ImplicitExplicit):
        rest = ImplicitExplicit(rest, process.implicit, default=process.default)
    return rest, state


class FunctionProcess(AbstractProcess):
    """Wrap a plain function ``f(state, t) -> tendency`` as a deterministic process (handy in tests)."""

    fn: Any = eqx.field(static=True)

    def tendency(self, state: PyTree, t: Any, key: Any = None) -> PyTree:
        return self.fn(state, t)


class AbstractImplicitProcess(AbstractProcess):
    """A (stiff, usually linear) process that can also be stepped implicitly.

    Besides its tendency L(x) it provides ``implicit_solve(rhs, t, eta)`` returning the solution ``x`` of
    ``x - eta * L(x) = rhs``: the backward-Euler solve that IMEX steppers need.
    """

    @abc.abstractmethod
    def implicit_solve(self, rhs: PyTree, t: Any, eta: Any) -> PyTree:
        """Solve ``x - eta * tendency(x, t) = rhs`` for ``x``."""

    def __add__(self, other: AbstractProcess) -> AbstractProcess:
        if not isinstance(other, AbstractProcess):
            return NotImplemented
        if isinstance(other, (ImplicitExplicit, AbstractImplicitProcess)):
            return compose(self, other)  # raises: two implicit parts
        return ImplicitExplicit(other, self)


class ImplicitExplicit(AbstractProcess):
    """A right-hand side split into an explicit part and an implicitly treated part (for IMEX steppers).

    Its tendency is the sum of both, so explicit steppers can use it too. Randomness lives in the explicit part.
    ``default`` is the stepper :meth:`default_stepper` returns (set by :func:`compose` to the model's own).
    """

    explicit: AbstractProcess
    implicit: AbstractImplicitProcess
    default: Any = None

    def default_stepper(self) -> Any:
        """The stepper of the model these terms were added to."""
        if self.default is None:
            raise ConfigError("this implicit-explicit process has no default stepper: pass one "
                              "(e.g. nemic.core.IMEXSIL3())")
        return self.default

    def __check_init__(self):
        if not isinstance(self.implicit, AbstractImplicitProcess):
            raise ConfigError(
                f"the implicit part must be an AbstractImplicitProcess, got {type(self.implicit).__name__}")
        if isinstance(self.explicit, (ImplicitExplicit, AbstractImplicitProcess)):
            raise ConfigError("the explicit part of an ImplicitExplicit cannot hold a second implicit part")

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        return self.explicit.stochastic

    def tendency(self, state: PyTree, t: Any, key: Any = None) -> PyTree:
        return tree_add(self.explicit.tendency(state, t, key), self.implicit.tendency(state, t))

    def init_noise(self, state, key):
        return self.explicit.init_noise(state, key)

    def advance_noise(self, noise, key, dt):
        return self.explicit.advance_noise(noise, key, dt)

    def bind_noise(self, noise):
        if noise is None:
            return self
        return ImplicitExplicit(self.explicit.bind_noise(noise), self.implicit, default=self.default)
