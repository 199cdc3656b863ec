"""The hybrid atmosphere with the column network: a zero-initialised network leaves the core's tendency exactly
unchanged, levels that differ from the core's are a one-line error, and (slow) online training runs through the
one loop on a short reference and returns finite weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nemic.core.errors import DataError
from nemic.experiments.atmos_training import OnlineConfig, hybrid, state_loss, train_online
from nemic.models.atmosphere import PrimitiveEquations
from nemic.nn.column import ColumnNet

EQ = np.linspace(0.0, 1.0, 9)
SPEEDY = [0.0, 0.05, 0.14, 0.26, 0.42, 0.6, 0.77, 0.9, 1.0]


@pytest.fixture(scope="module")
def model():
    return PrimitiveEquations(21, 8)


def test_zero_network_leaves_the_core_tendency_unchanged(model):
    net = ColumnNet(EQ, width=16, depth=1, key=jax.random.key(0), zero_init=True)
    x = ColumnNet.pack(jnp.full(8, 270.0), jnp.full(8, 1e-3), jnp.ones(8), jnp.ones(8), 1e5, 300.0, 10.0)
    net = net.with_statistics(x, jnp.ones_like(x), jnp.full(32, 1e-5), 3e-5)
    state = model.initial_state(jax.random.key(1), perturbation=5e3)
    h = hybrid(model, net)
    a, b = h.tendency(state, 0.0), model.tendency(state, 0.0)
    for la, lb in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        assert np.array_equal(np.asarray(la), np.asarray(lb))


def test_network_on_other_levels_is_refused(model):
    net = ColumnNet(SPEEDY, width=8, depth=1, key=jax.random.key(0))
    with pytest.raises(DataError, match="trained on sigma levels") as e:
        hybrid(model, net)
    assert "\n" not in str(e.value)


def test_online_training_runs_through_the_loop(model):
    """A reference made by the core itself (6 h apart); two iterations of 1-save windows change the weights and
    keep them finite."""
    import xarray as xr

    from nemic.core.rollout import rollout

    dt = 3600.0
    m = PrimitiveEquations(21, 8, dt=dt)
    s0 = m.initial_state(jax.random.key(2), perturbation=5e3)
    traj = rollout(m, m.default_stepper(), s0, dt=dt, n_steps=18, save_every=6, observe=m.observe)
    f = traj.states
    lat, lon = m.grid.lat, m.grid.lon
    dims3, dims2 = ("time", "level", "lat", "lon"), ("time", "lat", "lon")
    ds = xr.Dataset({"T": (dims3, np.asarray(f.air_temperature)), "u": (dims3, np.asarray(f.eastward_wind)),
                     "v": (dims3, np.asarray(f.northward_wind)), "q": (dims3, np.asarray(f.specific_humidity)),
                     "ps": (dims2, np.asarray(f.surface_air_pressure))},
                    coords={"time": 0.25 * np.arange(f.air_temperature.shape[0]), "level": m.grid.sigma,
                            "lat": lat, "lon": lon})
    net = ColumnNet(EQ, width=8, depth=1, key=jax.random.key(0), zero_init=True)
    x = ColumnNet.pack(jnp.full(8, 270.0), jnp.full(8, 1e-3), jnp.ones(8), jnp.ones(8), 1e5, 300.0, 10.0)
    net = net.with_statistics(x, jnp.ones_like(x), jnp.full(32, 1e-5), 3e-5)
    trained, hist = train_online(net, m, ds, OnlineConfig(dt=dt, curriculum=((1, 2),), batch_size=1),
                                 progress=False)
    assert len(hist) == 2 and np.all(np.isfinite(hist))
    w0, w1 = net.mlp.layers[-1].weight, trained.mlp.layers[-1].weight
    assert np.all(np.isfinite(np.asarray(w1))) and not np.array_equal(np.asarray(w0), np.asarray(w1))
    assert float(state_loss(jax.tree_util.tree_map(lambda a: a, traj.states))(f, f)) == 0.0
