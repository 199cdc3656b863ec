"""The column network: non-negative precipitation, a closed column water budget, zero init, jit/vmap/grad,
save/load, and offline training through the one loop lowering the loss."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nemic.core.errors import ConfigError, DataError
from nemic.nn.column import GRAVITY, ColumnNet, apply_columns
from nemic.train.checkpoint import load_module, save_module
from nemic.train.offline import fit_offline

# SPEEDY's 8-level sigma interfaces (Molteni 2003)
SB = [0.0, 0.05, 0.14, 0.26, 0.42, 0.6, 0.77, 0.9, 1.0]
L = 8


def _columns(n, seed=0):
    r = np.random.default_rng(seed)
    sig = 0.5 * (np.array(SB[1:]) + np.array(SB[:-1]))
    T = 288.0 * sig ** 0.19 + r.normal(0, 3, (n, L))
    q = 0.015 * sig ** 3 * r.uniform(0.2, 1.0, (n, L))
    u = r.normal(0, 10, (n, L))
    v = r.normal(0, 5, (n, L))
    ps = 1.0e5 + r.normal(0, 800, n)
    S = r.uniform(0, 500, n)
    lat = r.uniform(-90, 90, n)
    return ColumnNet.pack(T, q, u, v, ps, S, lat)


def _net(key=0, zero=False):
    x = _columns(512)
    net = ColumnNet(SB, width=32, depth=2, key=jax.random.key(key), zero_init=zero)
    return net.with_statistics(x.mean(0), x.std(0), jnp.full(4 * L, 1e-5), 3e-5), x


def test_precipitation_non_negative_and_water_budget_closed():
    net, x = _net()
    # push the precipitation/evaporation outputs far negative and positive by scaling the last layer
    net = eqx.tree_at(lambda m: m.mlp.layers[-1].weight, net, net.mlp.layers[-1].weight * 50.0)
    y = eqx.filter_jit(jax.vmap(net))(x)
    out = net.unpack(y)
    assert float(out["precipitation"].min()) >= 0.0 and float(out["evaporation"].min()) >= 0.0
    # independent evaluation of the budget: sum over levels of dq/dt * ps * dsigma / g, by numpy
    ps = np.asarray(x[:, 4 * L])
    col = (np.asarray(out["dqdt"]) * np.diff(SB)).sum(-1) * ps / GRAVITY
    e_minus_p = np.asarray(out["evaporation"] - out["precipitation"])
    np.testing.assert_allclose(col, e_minus_p, rtol=1e-9, atol=1e-12 * np.abs(e_minus_p).max())


def test_zero_init_gives_exactly_zero_tendencies():
    net, x = _net(zero=True)
    out = net.unpack(jax.vmap(net)(x))
    for k in ("dTdt", "dqdt", "dudt", "dvdt"):
        assert np.all(np.asarray(out[k]) == 0.0), k
    assert np.array_equal(np.asarray(out["precipitation"]), np.asarray(out["evaporation"]))


def test_apply_columns_matches_per_column_calls_and_jit_vmap_grad():
    net, _ = _net()
    r = np.random.default_rng(1)
    nlat, nlon = 4, 6
    T = 250 + 30 * r.random((L, nlat, nlon))
    q = 1e-3 * r.random((L, nlat, nlon))
    u, v = r.normal(0, 5, (2, L, nlat, nlon))
    ps = 1e5 + 100 * r.random((nlat, nlon))
    S = 400 * r.random((nlat, nlon))
    lat = np.linspace(-60, 60, nlat)
    out = eqx.filter_jit(apply_columns)(net, T, q, u, v, ps, S, lat)
    i, j = 2, 5
    y = net(ColumnNet.pack(T[:, i, j], q[:, i, j], u[:, i, j], v[:, i, j], ps[i, j], S[i, j], lat[i]))
    ref = net.unpack(y)
    np.testing.assert_allclose(out["dTdt"][:, i, j], ref["dTdt"], rtol=1e-12)
    np.testing.assert_allclose(out["precipitation"][i, j], ref["precipitation"], rtol=1e-12)
    # vmap over a batch of fields
    batched = eqx.filter_jit(jax.vmap(lambda t: apply_columns(net, t, q, u, v, ps, S, lat)["dqdt"]))(
        jnp.stack([T, T + 1]))
    assert batched.shape == (2, L, nlat, nlon)

    # grad with respect to the weights and the inputs, checked against finite differences
    @jax.jit
    def f(t):
        return jnp.sum(apply_columns(net, t, q, u, v, ps, S, lat)["dTdt"] ** 2)

    g = jax.jit(jax.grad(f))(jnp.asarray(T))
    d = jnp.asarray(r.normal(size=T.shape))
    h = 1e-4
    fd = (f(T + h * d) - f(T - h * d)) / (2 * h)
    np.testing.assert_allclose(float(jnp.vdot(g, d)), float(fd), rtol=1e-5)
    gw = eqx.filter_jit(eqx.filter_grad(
        lambda m: jnp.sum(apply_columns(m, T, q, u, v, ps, S, lat)["precipitation"])))(net)
    assert float(jnp.abs(gw.mlp.layers[-1].weight).sum()) > 0


def test_save_load_round_trip(tmp_path):
    net, x = _net(key=3)
    path = save_module(tmp_path / "col", net)
    back = load_module(path, kind="ColumnNet")
    assert back.sigma_boundaries == net.sigma_boundaries
    np.testing.assert_array_equal(np.asarray(jax.vmap(back)(x)), np.asarray(jax.vmap(net)(x)))


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(ConfigError):
        ColumnNet([0.0, 0.5, 0.4, 1.0], key=jax.random.key(0))
    net, _ = _net()
    with pytest.raises(DataError, match="levels"):
        apply_columns(net, *np.ones((4, 5, 3, 4)), np.ones((3, 4)), np.ones((3, 4)), np.zeros(3))
    with pytest.raises(DataError, match="inputs"):
        net(jnp.ones(10))


def test_offline_training_lowers_the_loss():
    # targets from a known smooth map of the inputs: the fitted net must beat its initial loss by a wide margin
    net, x = _net(zero=True)
    xn = (x - x.mean(0)) / x.std(0)
    w = np.random.default_rng(5).normal(size=(x.shape[1], 4 * L)) / np.sqrt(x.shape[1])
    target_t = 1e-5 * np.tanh(np.asarray(xn) @ w)
    y0 = jax.vmap(net)(x)
    targets = y0.at[:, :4 * L].set(target_t).at[:, L:2 * L].set(0.0)

    def loss(pred, tgt):
        return jnp.mean(((pred[:, :L] - tgt[:, :L]) / 1e-5) ** 2)

    before = float(loss(jax.vmap(net)(x), targets))
    trained, hist = fit_offline(net, x, targets, n_iters=150, batch_size=128, learning_rate=3e-3,
                                key=jax.random.key(0), loss=loss, progress=False)
    after = float(loss(jax.vmap(trained)(x), targets))
    assert after < 0.3 * before, (before, after)


def test_budget_closes_in_the_true_layer_thickness_after_training():
    """Regression: training every inexact array (fit_offline's default) once moved the stored d_sigma, so the
    budget closed only in learned thicknesses. After 30 Adam steps the budget closes in np.diff(SB)."""
    from nemic.train.offline import fit_offline

    net, x = _net()
    y = jnp.concatenate([jnp.full((x.shape[0], 4 * L), 1e-5), jnp.full((x.shape[0], 2), 3e-5)], axis=1)
    fitted, _ = fit_offline(net, x, y * 1e5, n_iters=30, batch_size=64, learning_rate=1e-2,
                            key=jax.random.key(1), progress=False)
    out = fitted.unpack(jax.vmap(fitted)(x))
    col = (np.asarray(out["dqdt"], float) * np.diff(SB)).sum(-1) * np.asarray(x[:, 4 * L]) / GRAVITY
    e_minus_p = np.asarray(out["evaporation"] - out["precipitation"], float)
    np.testing.assert_allclose(col, e_minus_p, rtol=1e-6, atol=1e-9 * np.abs(e_minus_p).max())
