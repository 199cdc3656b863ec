"""Lipschitz layers, the geometric constraints of the learned surrogate, a few training steps, checkpoints."""

from itertools import combinations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nemic.core.errors import ConfigError, DataError
from nemic.metrics.minkowski import MinkowskiLoss, minkowski_functionals
from nemic.metrics.minkowski.surrogate import (
    constraint_violations,
    polyomino_min_perimeter,
    r2_scores,
    stack_measures,
)
from nemic.nn.lipschitz import LipschitzResidualBlock, SpectralConv2d, SpectralLinear, pixel_unshuffle
from nemic.nn.minkowski_surrogate import MinkowskiSurrogate
from nemic.train.checkpoint import load_module, save_module
from nemic.train.loop import TrainingDivergedError
from nemic.train.surrogate import init_readout, load_default_surrogate, train_surrogate

THR = np.array([0.1, 1.0, 4.0])


def operator_norm(layer, shape, key, iters=60):
    """Largest singular value of the linear part of a conv layer by power iteration on f^T f (independent)."""
    v = jnp.asarray(np.random.default_rng(key).standard_normal(shape))

    @eqx.filter_jit  # the layer is an argument, not a captured constant (XLA would constant-fold the SVD)
    def power(layer, v):
        def f(x):
            return layer(x) - layer.bias[:, None, None]

        def body(_, v):
            w = jax.vjp(f, v)[1](f(v))[0]
            return w / jnp.linalg.norm(w)

        v = jax.lax.fori_loop(0, iters, body, v)
        return jnp.linalg.norm(f(v))

    return float(power(layer, v))


def test_spectral_layers_are_1_lipschitz():
    key = jax.random.PRNGKey(0)
    for k, (cin, cout) in zip((3, 1), ((2, 4), (6, 3))):
        conv = SpectralConv2d(cin, cout, k, key=jax.random.fold_in(key, k))
        conv = eqx.tree_at(lambda c: c.weight, conv, conv.weight * 7.3)  # any scale of the raw weights
        s = operator_norm(conv, (cin, 12, 12), 100 + k)
        assert 0.1 < s <= 1.0 + 1e-9
    lin = SpectralLinear(5, 3, key=key)
    w = jax.vmap(lin)(jnp.eye(5)).T - lin.bias[:, None]
    np.testing.assert_allclose(np.linalg.svd(np.asarray(w), compute_uv=False)[0], 1.0, rtol=1e-9)
    blk = LipschitzResidualBlock(4, key=key)
    xs = jnp.asarray(np.random.default_rng(1).standard_normal((20, 2, 4, 10, 10)))
    def ratio(b, ab):
        return jnp.linalg.norm(b(ab[0]) - b(ab[1])) / jnp.linalg.norm(ab[0] - ab[1])

    ratios = eqx.filter_jit(jax.vmap(ratio, in_axes=(None, 0)))(blk, xs)
    assert float(ratios.max()) <= blk.lipschitz_bound() + 1e-9
    x = jnp.arange(2 * 4 * 6.0).reshape(2, 4, 6)
    y = pixel_unshuffle(x, 2)
    assert y.shape == (8, 2, 3) and float(jnp.linalg.norm(y)) == pytest.approx(float(jnp.linalg.norm(x)))


def test_polyomino_bound_is_the_least_perimeter():
    # exhaustive search over all sets of n cells in a 4 x 4 grid (numpy edge counts)
    cells = np.arange(16)
    for n in range(1, 9):
        best = np.inf
        for comb in combinations(cells, n):
            m = np.zeros(16, bool)
            m[list(comb)] = True
            p = np.pad(m.reshape(4, 4), 1)
            best = min(best, np.count_nonzero(p[:, 1:] != p[:, :-1]) + np.count_nonzero(p[1:] != p[:-1]))
        assert float(polyomino_min_perimeter(n)) == best, n
    assert float(polyomino_min_perimeter(0.0)) == 0.0 and float(polyomino_min_perimeter(-2.0)) == 0.0


def test_exact_measures_satisfy_the_constraints(opera_sample):
    x = opera_sample.rain_rate.values[:, :128, :128]
    ex = minkowski_functionals(x, THR, components=True)
    v = constraint_violations(stack_measures(ex), 128 * 128)
    assert not v["any"].any()
    # and the checker sees violations where there are some
    bad = np.asarray(stack_measures(ex)).copy()
    bad[0, 0, 1] = bad[0, 0, 0] + 5  # area grows with the threshold
    bad[1, 1, 0] = 1.0  # perimeter below the bound
    bad[2, 2, 2] = bad[2, 3, 2] + 1  # more Euler than components: negative holes
    v = constraint_violations(bad, 128 * 128)
    assert v["area_monotone"][0, 1] and v["perimeter_bound"][1, 0] and v["holes_nonnegative"][2, 2]
    assert v["any"].sum() == 3


@pytest.mark.parametrize("seed", range(3))
def test_constraints_hold_for_random_weights(seed, opera_sample):
    key = jax.random.PRNGKey(seed)
    rng = np.random.default_rng(seed)
    model = MinkowskiSurrogate(THR, channels=4, blocks=1, key=key,
                               scales=rng.uniform(0.1, 50, (4, 3)))
    # random weights of any size: the constraint layer must still hold
    model = jax.tree_util.tree_map(
        lambda a: a * rng.uniform(0.5, 20) if eqx.is_inexact_array(a) and a.ndim == 4 else a, model)
    x = np.concatenate([opera_sample.rain_rate.values[:2, :32, :32],
                        rng.exponential(3.0, (2, 32, 32)), np.zeros((1, 32, 32))])
    m = model(x)
    assert m.area.shape == (5, 3)
    v = constraint_violations(stack_measures(m), 32 * 32)
    assert not v["any"].any()
    baseline = MinkowskiSurrogate(THR, channels=4, blocks=1, constrained=False, key=key,
                                  offsets=rng.normal(0, 100, (4, 3)), scales=np.full((4, 3), 100.0))
    vb = constraint_violations(stack_measures(baseline(x)), 32 * 32)
    assert vb["any"].any()  # nothing protects the baseline


def test_training_checkpoint_loss_and_transforms(tmp_path, opera_sample):
    x = opera_sample.rain_rate.values[:, :64, :64].reshape(6, 64, 64)
    x = np.concatenate([x[:, :32, :32], x[:, 32:, 32:]])  # 12 patches of 32 x 32
    y = stack_measures(minkowski_functionals(x, THR, components=True))
    model = MinkowskiSurrogate(THR, channels=4, blocks=1, key=jax.random.PRNGKey(0))
    trained, hist = train_surrogate(model, x, y, steps=15, batch_size=12, learning_rate=1e-2,
                                    key=jax.random.PRNGKey(1))
    start = init_readout(model, x, y)  # the data-based initialisation of train_surrogate, untrained
    assert len(hist) == 15 and np.all(np.isfinite(hist))
    std = np.std(np.asarray(y), axis=0) + 1.0

    def full_loss(m):
        return float(np.mean(((np.asarray(stack_measures(m(x))) - np.asarray(y)) / std) ** 2))

    assert full_loss(trained) < 0.95 * full_loss(start)
    r2 = r2_scores(stack_measures(trained(x)), y)
    assert r2.shape == (4, 3)
    # weights round trip: one file, eqx leaves + JSON header with the hyperparameters
    save_module(tmp_path / "sur", trained, extra={"recipe": "test"})
    back = load_module(tmp_path / "sur.eqx", kind="MinkowskiSurrogate")
    for a, b in zip(trained(x), back(x)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(DataError, match="does not exist"):
        load_module(tmp_path / "missing.eqx")
    # jit / vmap / grad through the surrogate and the surrogate loss
    np.testing.assert_allclose(eqx.filter_jit(lambda m, a: m(a).area)(trained, x), trained(x).area, rtol=1e-12)
    np.testing.assert_allclose(jax.vmap(lambda a: trained(a).perimeter)(x), trained(x).perimeter, rtol=1e-12)
    loss = MinkowskiLoss(THR, method="surrogate", surrogate=trained,
                         weights={"area": 1.0, "perimeter": 1.0, "euler": 1.0, "components": 1.0})
    g = jax.grad(lambda a: loss(a, jnp.asarray(x[::-1])))(jnp.asarray(x))
    assert g.shape == x.shape and np.all(np.isfinite(g)) and np.abs(g).max() > 0
    with pytest.raises(DataError, match="multiple"):
        trained(np.zeros((5, 33, 32)))
    with pytest.raises(DataError, match="NaN"):
        trained(np.where(np.arange(32) == 3, np.nan, x[0]))
    # a NaN learning rate is refused at the door; a training that diverges stops with one line, instead of
    # returning NaN thresholds
    with pytest.raises(ConfigError, match="learning_rate"):
        train_surrogate(model, x, y, steps=3, batch_size=4, learning_rate=float("nan"), key=jax.random.PRNGKey(1))
    with pytest.raises(TrainingDivergedError, match="iteration"):
        train_surrogate(model, x, y, steps=3, batch_size=4, learning_rate=1e300, key=jax.random.PRNGKey(1))


def test_shipped_weights_on_later_frames():
    # the shipped sample's 13:15 and 15:15 frames lie in the test block of the shipped weights' recipe
    from nemic.data.opera import extract_patches, load_sample
    frames = load_sample().rain_rate.isel(time=[4, 5])
    x = extract_patches(frames, size=128, stride=64, min_wet_fraction=0.1).values
    model = load_default_surrogate()
    assert model.constrained and model.thresholds.shape == (8,)
    pred = stack_measures(model(x))
    exact = stack_measures(minkowski_functionals(x, np.asarray(model.thresholds, float), components=True))
    assert not constraint_violations(pred, 128 * 128)["any"].any()
    assert np.nanmean(r2_scores(pred, exact)[0]) > 0.8  # area
    baseline = load_default_surrogate(constrained=False)
    assert not baseline.constrained
