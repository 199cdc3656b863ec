"""Downscaling losses against independent references: the MSE of the untrained residual U-Net (exactly
nearest-neighbour upsampling) computed with numpy, the trust-gated surrogate loss with the gate off against
nemic's existing surrogate MinkowskiLoss, the gate's calibration, and a tiny training through fit."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nemic.core.errors import ConfigError
from nemic.metrics.minkowski import MinkowskiLoss
from nemic.nn.minkowski_surrogate import MinkowskiSurrogate
from nemic.nn.unet import SuperResolutionUNet
from nemic.train.downscaling_losses import (TrustGatedMinkowski, calibrate_trust, mse_loss, mse_minkowski_loss,
                                            surrogate_error)

THR = np.array([0.5, 1.0, 3.0])


def fields(n=3, size=16, seed=0):
    rng = np.random.default_rng(seed)
    f = rng.gamma(0.5, 3.0, (n, size, size))
    return np.where(f < 0.1, 0.0, f)


def test_mse_of_the_untrained_unet_is_that_of_nearest_upsampling():
    fine = fields()
    coarse = fine.reshape(3, 4, 4, 4, 4).mean(axis=(2, 4))
    net = SuperResolutionUNet(1, 1, factor=4, width=4, depth=1, key=jax.random.key(0))
    want = np.mean((np.repeat(np.repeat(np.log1p(coarse), 4, -2), 4, -1) - np.log1p(fine)) ** 2)
    rel = MinkowskiLoss(THR, transform="log1p")
    b = {"coarse": jnp.asarray(coarse), "fine": jnp.asarray(fine)}
    got, total = eqx.filter_jit(lambda n, b: (mse_loss(n, b)[0], mse_minkowski_loss(rel, 3.0)(n, b)[0]))(net, b)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    # the relaxed Minkowski term adds weight x MinkowskiLoss of the predicted rain (here: upsampled coarse)
    up = np.repeat(np.repeat(coarse, 4, -2), 4, -1)
    np.testing.assert_allclose(total, want + 3.0 * float(rel(jnp.asarray(up), jnp.asarray(fine))), rtol=1e-9)
    with pytest.raises(ConfigError):
        mse_minkowski_loss(rel, -1.0)


def test_trust_gate_off_is_the_surrogate_minkowski_loss_and_gate_calibration():
    sur = MinkowskiSurrogate(THR, channels=4, blocks=1, factor=2, key=jax.random.key(1))
    pred, target = jnp.asarray(fields(seed=1)), jnp.asarray(fields(seed=2))
    ref = MinkowskiLoss(THR, method="surrogate", surrogate=sur)(pred, target)
    off, mean_gate = TrustGatedMinkowski(sur, 0.0)(pred, target)
    np.testing.assert_allclose(off, ref, rtol=1e-10)
    assert float(mean_gate) == 1.0
    # gated: each sample's term times exp(-tau e_b), e_b its surrogate error on the target
    tau, stats = calibrate_trust(sur, np.asarray(target), weight_at_p90=0.1)
    e = np.asarray(surrogate_error(sur, target))
    np.testing.assert_allclose(np.exp(-tau * np.percentile(e, 90)), 0.1, rtol=1e-9)
    gated = TrustGatedMinkowski(sur, tau)
    term, gate = gated.per_sample(pred, target)
    np.testing.assert_allclose(gate, np.exp(-tau * e), rtol=1e-9)
    np.testing.assert_allclose(gated(pred, target)[0], np.mean(np.exp(-tau * e) * np.asarray(term)), rtol=1e-9)
    # gradients reach the prediction only through the surrogate term, never the surrogate's weights
    g = jax.grad(lambda p: gated(p, target)[0])(pred)
    assert bool(jnp.all(jnp.isfinite(g))) and float(jnp.sum(g**2)) > 0


def test_tiny_training_lowers_the_flow_and_minkowski_losses():
    from nemic.data.patches import PatchSampler
    from nemic.nn.flow import ConditionalFlow
    from nemic.train.downscaling_losses import flow_matching_loss
    from nemic.train.loop import default_optimizer, fit

    y, x = np.indices((16, 16))
    rng = np.random.default_rng(0)
    fine = np.stack([4 * np.exp(-((y - a) ** 2 + (x - b) ** 2) / 12.0) for a, b in rng.uniform(2, 14, (16, 2))])
    sampler = PatchSampler(np.where(fine < 0.1, 0, fine), 4, batch_size=4)
    for model, loss in ((SuperResolutionUNet(1, 1, factor=4, width=4, depth=1, key=jax.random.key(0)),
                         mse_minkowski_loss(MinkowskiLoss(THR, transform="log1p"), 10.0)),
                        (ConditionalFlow(4, width=4, depth=1, key=jax.random.key(0)), flow_matching_loss())):
        res = fit(model, loss, sampler, optimizer=default_optimizer(1e-2, 60), n_iters=60, key=jax.random.key(2),
                  progress=False)
        h = np.asarray(res.history)
        assert h[-10:].mean() < 0.8 * h[:10].mean(), (type(model).__name__, h[:10].mean(), h[-10:].mean())


def test_trust_gate_with_the_bit_quad_surrogate_v2_under_jit_and_grad():
    # the shipped v2 surrogate holds an MLP (a function leaf): the frozen copy must still trace under jit/grad
    from nemic.train.surrogate import load_default_surrogate

    sur = load_default_surrogate(version=2)
    pred, target = jnp.asarray(fields(seed=3) + 0.2), jnp.asarray(fields(seed=4))
    ref = MinkowskiLoss(np.asarray(sur.thresholds), method="surrogate", surrogate=sur)(pred, target)
    off, _ = eqx.filter_jit(lambda p, t: TrustGatedMinkowski(sur, 0.0)(p, t))(pred, target)
    np.testing.assert_allclose(off, ref, rtol=1e-6)
    g = eqx.filter_jit(jax.grad(lambda p: TrustGatedMinkowski(sur, 2.0)(p, target)[0]))(pred)
    assert bool(jnp.all(jnp.isfinite(g))) and float(jnp.sum(g**2)) > 0
