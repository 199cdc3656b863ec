"""Run in a subprocess with 8 simulated CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count=8``) by
``test_sharding.py``; prints one JSON line of measured differences and shardings. Not collected by pytest.

The unsharded references are computed in the same process on one device (the default device, no mesh), with
the same functions the library offers without sharding (``ensemble_rollout``, ``fit``)."""

import json
import sys
import tempfile
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

jax.config.update("jax_enable_x64", True)

from nemic.core import RK4, AR1Noise, ensemble_rollout, rollout  # noqa: E402
from nemic.data.streaming import StreamingWindowSampler  # noqa: E402
from nemic.data.zarr_store import generate_ensemble, open_zarr  # noqa: E402
from nemic.errors import ConfigError  # noqa: E402
from nemic.models.lorenz96 import Lorenz96, Lorenz96State, TwoScaleLorenz96  # noqa: E402
from nemic.parallel import make_mesh, sharded_ensemble_rollout  # noqa: E402
from nemic.train.loop import fit  # noqa: E402


class Regression(eqx.Module):
    """A batch sampler: random rows of a fixed data set (leading axis = batch)."""
    x: jax.Array
    y: jax.Array
    batch_size: int = eqx.field(static=True)

    def __call__(self, key, iteration):
        idx = jax.random.randint(key, (self.batch_size,), 0, self.x.shape[0])
        return {"x": self.x[idx], "y": self.y[idx]}


def mse(model, batch, key):
    pred = jax.vmap(model)(batch["x"])
    return jnp.mean((pred - batch["y"]) ** 2)


def _spec(x):
    """The partition spec of ``x``, one entry per dimension (trailing ``None``\\ s written out)."""
    spec = list(x.sharding.spec)
    return [str(a) if a is not None else None for a in spec + [None] * (x.ndim - len(spec))]


def main():
    out = {"n_devices": jax.device_count()}
    model = Lorenz96(F=8.0, K=40) + AR1Noise(sigma=0.3, phi=0.9, field="x")
    x0 = 8.0 + 0.5 * jax.random.normal(jax.random.key(0), (16, 40))
    keys = jax.random.split(jax.random.key(1), 16)
    kw = dict(dt=0.01, n_steps=200, save_every=20)
    ref = ensemble_rollout(model, RK4(), Lorenz96State(x=x0), keys=keys, **kw)
    mesh = make_mesh(ensemble=8)
    sh = sharded_ensemble_rollout(model, RK4(), Lorenz96State(x=x0), mesh=mesh, keys=keys, **kw)
    out["rollout_maxdiff"] = float(np.max(np.abs(np.asarray(sh.states.x) - np.asarray(ref.states.x))))
    out["rollout_scale"] = float(np.max(np.abs(np.asarray(ref.states.x))))
    out["rollout_spec"] = _spec(sh.states.x)
    out["rollout_shards"] = len({s.device for s in sh.states.x.addressable_shards})
    out["rollout_shard_shape"] = list(sh.states.x.addressable_shards[0].data.shape)
    out["t_replicated"] = bool(sh.t.sharding.is_fully_replicated)
    # members split over 4 x space 2: the last (grid) dimension also split
    mesh_s = make_mesh(ensemble=4, space=2)
    sp = sharded_ensemble_rollout(model, RK4(), Lorenz96State(x=x0), mesh=mesh_s, keys=keys, space_dim=-1, **kw)
    out["space_maxdiff"] = float(np.max(np.abs(np.asarray(sp.states.x) - np.asarray(ref.states.x))))
    out["space_spec"] = _spec(sp.states.x)
    # two-scale Lorenz-96 (a sum over the fast variables): XLA may order that reduction differently for 2 members
    # per device than for 16, so equality is to rounding, over a short horizon (chaos amplifies rounding later)
    two = TwoScaleLorenz96(K=8, J=32)
    s2 = jax.vmap(two.initial_state)(jax.random.split(jax.random.key(5), 16))
    kw2 = dict(dt=0.001, n_steps=100, save_every=100)
    ref2 = ensemble_rollout(two, RK4(), s2, **kw2)
    sh2 = sharded_ensemble_rollout(two, RK4(), s2, mesh=mesh, **kw2)
    out["two_scale_maxdiff"] = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(
        jax.tree_util.tree_leaves(ref2.states), jax.tree_util.tree_leaves(sh2.states)))
    # one device: the same call, unchanged
    one = sharded_ensemble_rollout(model, RK4(), Lorenz96State(x=x0), mesh=make_mesh(devices=jax.devices()[:1]),
                                   keys=keys, **kw)
    out["one_device_maxdiff"] = float(np.max(np.abs(np.asarray(one.states.x) - np.asarray(ref.states.x))))

    # training: data parallel over 8 devices against the plain loop
    kx, ky, km = jax.random.split(jax.random.key(2), 3)
    X = jax.random.normal(kx, (256, 3))
    Y = jnp.sin(X @ jnp.asarray([1.0, -2.0, 0.5]))[:, None] + 0.1 * jax.random.normal(ky, (256, 1))
    net = eqx.nn.MLP(3, 1, 16, 2, key=km)
    sampler = Regression(X, Y, 32)
    opts = dict(optimizer=optax.adam(1e-2), n_iters=5, key=jax.random.key(3), progress=False)
    plain = fit(net, mse, sampler, **opts)
    dp = fit(net, mse, sampler, mesh=make_mesh(ensemble=1, batch=8), **opts)
    diffs = jax.tree_util.tree_map(lambda a, b: float(jnp.max(jnp.abs(a - b))),
                                   eqx.filter(plain.model, eqx.is_array), eqx.filter(dp.model, eqx.is_array))
    out["train_maxdiff"] = max(jax.tree_util.tree_leaves(diffs))
    out["train_change"] = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
        jax.tree_util.tree_leaves(eqx.filter(net, eqx.is_array)),
        jax.tree_util.tree_leaves(eqx.filter(plain.model, eqx.is_array))))
    out["train_loss_diff"] = float(np.max(np.abs(np.asarray(plain.history) - np.asarray(dp.history))))
    w = jax.tree_util.tree_leaves(eqx.filter(dp.model, eqx.is_array))[0]
    out["param_replicated"] = bool(w.sharding.is_fully_replicated) and len(w.sharding.device_set) == 8

    # a chunked zarr generation sharded over the mesh, and data-parallel training streamed from it
    with tempfile.TemporaryDirectory() as tmp:
        store = generate_ensemble(Path(tmp) / "ens.zarr", model, RK4(), Lorenz96State(x=x0), keys=keys, mesh=mesh,
                                  chunk_members=8, **kw)
        out["zarr_maxdiff"] = float(np.max(np.abs(open_zarr(store).x.values - np.asarray(ref.states.x))))
        l96 = Lorenz96(F=6.0, K=40)

        def window_loss(m, batch, key):
            pred = jax.vmap(lambda x: rollout(m, RK4(), Lorenz96State(x=x), dt=0.01, n_steps=20,
                                              save_every=20).states.x[1])(batch["start"]["x"])
            return jnp.mean((pred - batch["target"]["x"][:, 0]) ** 2)

        fits = {}
        for name, m in (("plain", None), ("mesh", make_mesh(ensemble=1, batch=8))):
            with StreamingWindowSampler(store, 1, 16, seed=3) as sampler:
                fits[name] = fit(l96, window_loss, sampler, mesh=m, **opts)
        out["stream_fit_diff"] = abs(float(fits["plain"].model.F) - float(fits["mesh"].model.F))
        out["stream_fit_change"] = abs(float(fits["plain"].model.F) - 6.0)

    # bad input: one-line ConfigErrors
    errors = {}
    for name, call in {
        "ensemble": lambda: sharded_ensemble_rollout(model, RK4(), Lorenz96State(x=x0[:12]), mesh=mesh,
                                                     keys=keys[:12], **kw),
        "batch": lambda: fit(net, mse, Regression(X, Y, 12), mesh=make_mesh(ensemble=1, batch=8), **opts),
        "mesh": lambda: make_mesh(ensemble=3),
    }.items():
        try:
            call()
            errors[name] = None
        except ConfigError as e:
            errors[name] = str(e)
    out["errors"] = errors
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
