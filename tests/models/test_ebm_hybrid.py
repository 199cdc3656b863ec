"""Moist EBM reference and the hybrid EBM with a neural heat transport trained through the solver."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from nemic.experiments import ebm_hybrid as X
from nemic.models.ebm import (
    DiffusiveEBM,
    EBMState,
    MoistDiffusion,
    moist_static_energy_temperature,
    saturation_specific_humidity,
)


def _T(n):
    return 28.0 - 45.0 * jnp.linspace(-1, 1, n) ** 2


def test_saturation_humidity_matches_clausius_clapeyron_scaling():
    # d ln q_sat / dT ~ L/(R_v T^2) ~ 7 %/K near 15 degC (Held & Soden 2006)
    q = saturation_specific_humidity(jnp.array([14.5, 15.5]))
    assert 0.06 < float(jnp.log(q[1] / q[0])) < 0.075
    assert abs(float(saturation_specific_humidity(20.0)) - 0.622 * 23.37 / 1000) < 2e-4  # es(20 C) = 23.4 hPa


def test_moist_diffusion_conserves_energy_and_is_dry_diffusion_of_h():
    m = DiffusiveEBM(24)
    md = MoistDiffusion(D=jnp.asarray(0.3), heat_capacity=m.heat_capacity, relative_humidity=jnp.asarray(0.8),
                        num_lat=24)
    T = _T(24)
    tend = md.tendency(EBMState(Ts=T), 0.0).Ts
    assert abs(float(jnp.sum(m.weights * tend))) < 1e-13 * float(jnp.sum(m.weights * jnp.abs(tend)))
    # same operator as the dry diffusion (same D) applied to h
    dry = m.with_params(D=0.3).diffusion().tendency(EBMState(Ts=moist_static_energy_temperature(T, 0.8)), 0.0).Ts
    assert np.allclose(tend, dry, rtol=1e-12, atol=1e-20)
    # linearly implicit solve: residual of the true nonlinear system is O(eta^2)
    res = []
    for eta in (1e5, 5e4, 2.5e4):
        x = md.implicit_solve(EBMState(Ts=T), 0.0, eta).Ts
        res.append(float(jnp.max(jnp.abs(x - eta * md.tendency(EBMState(Ts=x), 0.0).Ts - T))))
    slope = np.polyfit(np.log([1e5, 5e4, 2.5e4]), np.log(res), 1)[0]
    assert slope > 1.8, (slope, res)


def test_zero_initialised_neural_transport_is_the_dry_ebm():
    m = DiffusiveEBM(20, insolation_type="daily", albedo_width=2.0)
    net = X.NeuralDiffusivity.init(m, jax.random.PRNGKey(0))
    s0 = m.initial_state()
    hyb = eqx.filter_jit(lambda p: X._run(p, s0, 200, m.default_timestep).final.Ts)(X.hybrid_process(m, net))
    dry = eqx.filter_jit(lambda p: X._run(p, s0, 200, m.default_timestep).final.Ts)(m)
    assert np.allclose(hyb, dry, rtol=0, atol=1e-10)
    tend = net.tendency(EBMState(Ts=_T(20)), 0.0).Ts
    assert abs(float(jnp.sum(m.weights * tend))) < 1e-12 * float(jnp.sum(m.weights * jnp.abs(tend)))


def test_check_grads_through_neural_transport_rollout():
    m = DiffusiveEBM(8, insolation_type="daily", albedo_width=2.0)
    net = X.NeuralDiffusivity.init(m, jax.random.PRNGKey(1), width=4)
    net = eqx.tree_at(lambda n: n.mlp.layers[-1].weight, net, 0.3 * jnp.ones_like(net.mlp.layers[-1].weight))
    w0 = net.mlp.layers[0].weight

    def f(w):
        n = eqx.tree_at(lambda n: n.mlp.layers[0].weight, net, w)
        return X._run(X.hybrid_process(m, n), m.initial_state(), 10, m.default_timestep).final.Ts

    check_grads(jax.jit(f), (w0,), order=1, modes=["rev"], atol=1e-5, rtol=1e-5)
    batched = jax.jit(jax.vmap(lambda T: net.edge_diffusivity(T)))(jnp.stack([_T(8), _T(8) + 1]))
    assert batched.shape == (2, 7) and bool(jnp.all(batched > 0))


def test_online_training_reduces_the_rollout_error():
    res = X.train_hybrid_ebm(16, steps=30, n_starts=3, horizon_days=60)
    h = res["history"]
    assert h[-1] < 0.2 * h[0], h[::5]


@pytest.mark.slow
def test_trained_hybrid_matches_moist_reference_better_than_dry_ebm():
    res = X.train_hybrid_ebm(30, steps=150)
    rep = X.evaluate_hybrid_ebm(res)
    hyb, dry = rep["models"]["hybrid"], rep["models"]["dry"]
    assert hyb["equilibrium_rmse_vs_reference"] < 0.3 * dry["equilibrium_rmse_vs_reference"]
    assert hyb["co2_response_rmse_vs_reference"] < 0.3 * dry["co2_response_rmse_vs_reference"]  # not trained on it
    assert hyb["seasonal_cycle_rmse_vs_reference"] < 0.3 * dry["seasonal_cycle_rmse_vs_reference"]


def test_hybrid_training_settings_and_weights_file(tmp_path):
    from nemic.core.errors import ConfigError
    from nemic.train.checkpoint import CheckpointError, load_module, save_module

    with pytest.raises(ConfigError, match="learning_rate"):  # before any spin-up
        X.train_hybrid_ebm(16, steps=2, learning_rate=float("nan"))
    m = DiffusiveEBM(12, insolation_type="daily", albedo_width=2.0)
    net = X.NeuralDiffusivity.init(m, jax.random.PRNGKey(2), width=5)
    net = eqx.tree_at(lambda n: n.mlp.layers[-1].weight, net, 0.2 * jnp.ones_like(net.mlp.layers[-1].weight))
    path = save_module(tmp_path / "transport", net)
    back = load_module(path, kind="NeuralDiffusivity")
    T = EBMState(Ts=_T(12))
    np.testing.assert_array_equal(back.tendency(T, 0.0).Ts, net.tendency(T, 0.0).Ts)
    assert float(back.heat_capacity) == float(net.heat_capacity) and back.config() == net.config()
    with pytest.raises(CheckpointError, match="'NeuralDiffusivity', not of a 'LocalStencilMLP'"):
        load_module(path, kind="LocalStencilMLP")
