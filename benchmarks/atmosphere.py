"""Benchmark: time per step of the global atmosphere (T21 L8 by default) on the CPU.

Measured side by side in one process, float32 (JAX's default), each a jitted ``rollout`` of ``--steps`` steps
with the model's default stepper (IMEX-SIL3 + dinosaur's filters), median of ``--repeats`` runs after a
compiling warm-up, the cases interleaved:

* the bare dynamical core (dinosaur's primitive equations through nemic's IMEX adapter);
* core + Held-Suarez forcing;
* core + a column MLP (``ColumnPhysics``, per-column MLP of width ``--width`` and depth 2 on all 2048 columns):
  the overhead of learned physics (goal: <= 1.5x the bare core);
* core + the shipped hybrid's physics (its ``ColumnNet`` as a packed column function), alone and inside
  ``GlobalBalance`` (the balanced physics of the long runs), unless ``--no-shipped``;
* the same, applied once per step before the dynamics (``OncePerStep``: process splitting, as jcm couples its
  physics) instead of at each of IMEX-SIL3's three explicit stages;
* jcm's SPEEDY model (dinosaur core + SPEEDY physics, jcm's defaults) at the same truncation, levels and step,
  timed on continuations of a compiled run (``Model.resume``);
* gradient / forward wall time for a 1-day rollout of core + column MLP (``checkpoint=True``).

    .venv/bin/python benchmarks/atmosphere.py            # writes benchmarks/results/atmosphere.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp

from nemic.core import OncePerStep, rollout
from nemic.experiments.atmos_climate_fixers import GlobalBalance
from nemic.experiments.atmos_climate_run import shipped_dir
from nemic.models.atmosphere import (
    ColumnPhysics,
    ColumnTendencies,
    HeldSuarez,
    PackedColumnFunction,
    PrimitiveEquations,
)
from nemic.train.checkpoint import load_module


class ColumnMLP(eqx.Module):
    """A per-column MLP in the ColumnPhysics contract (inputs scaled to O(1), outputs to physical rates)."""

    mlp: eqx.nn.MLP
    levels: int = eqx.field(static=True)

    def __init__(self, levels: int, width: int, key):
        self.levels = levels
        self.mlp = eqx.nn.MLP(4 * levels + 3, 4 * levels + 1, width, 2, key=key)

    def __call__(self, c):
        x = jnp.concatenate([c.temperature / 300.0 - 1.0, c.specific_humidity * 100.0, c.eastward_wind / 10.0,
                             c.northward_wind / 10.0,
                             jnp.stack([c.surface_pressure / 1e5 - 1.0, c.insolation / 400.0, c.latitude / 90.0])])
        y = self.mlp(x)
        L = self.levels
        return ColumnTendencies(y[:L] * 1e-6, y[L:2 * L] * 1e-9, y[2 * L:3 * L] * 1e-6, y[3 * L:4 * L] * 1e-6,
                                jax.nn.softplus(y[-1]) * 1e-5)


def time_rollouts(cases, stepper, state, dt, steps, repeats):
    """Compile every case, then time them interleaved (case after case in each repeat, so that a change in the
    machine's load hits all of them alike). Returns ({name: compile + first run [s]}, {name: median s/step})."""
    run = eqx.filter_jit(lambda p, s: rollout(p, stepper, s, dt=dt, n_steps=steps, save_every=steps).states)
    first, times = {}, {name: [] for name in cases}
    for name, p in cases.items():
        t0 = time.perf_counter()
        jax.block_until_ready(run(p, state))
        first[name] = time.perf_counter() - t0
    for _ in range(repeats):
        for name, p in cases.items():
            t0 = time.perf_counter()
            jax.block_until_ready(run(p, state))
            times[name].append((time.perf_counter() - t0) / steps)
    return first, {name: statistics.median(t) for name, t in times.items()}


def time_jcm(truncation, layers, dt_minutes, days):
    """Seconds per step of jcm's SPEEDY model (None and the reason if jcm cannot be set up): one run of ``days``
    compiles, then the fastest of two continuations (``Model.resume``) of ``days`` each is timed."""
    try:
        from jcm.model import Model
        from jcm.physics.speedy.speedy_coords import get_speedy_coords
    except ImportError:
        return None, "jcm not installed"
    try:
        model = Model(coords=get_speedy_coords(layers=layers, spectral_truncation=truncation),
                      time_step=dt_minutes)
        jax.block_until_ready(jax.tree_util.tree_leaves(model.run(save_interval=1, total_time=days)))
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            jax.block_until_ready(jax.tree_util.tree_leaves(model.resume(save_interval=1, total_time=days)))
            times.append(time.perf_counter() - t0)
        return min(times) / (days * 24 * 60 / dt_minutes), None
    except Exception as e:  # noqa: BLE001  (a benchmark of a third-party model: report, do not fail)
        return None, f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--truncation", type=int, default=21)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--jcm-days", type=int, default=2)
    ap.add_argument("--no-jcm", action="store_true")
    ap.add_argument("--no-shipped", action="store_true", help="skip the shipped hybrid's network")
    ap.add_argument("--no-gradient", action="store_true", help="skip the 1-day gradient / forward timing")
    ap.add_argument("--weights", action="append", default=[],
                    help="another column network (.eqx) to time like the shipped one, once per step (repeatable)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "atmosphere.json"))
    args = ap.parse_args()

    model = PrimitiveEquations(args.truncation, args.layers)
    g, dt = model.grid, model.dt
    stepper = model.default_stepper()
    state = model.initial_state(jax.random.key(0), perturbation=5e3, surface_humidity=0.01)
    net = ColumnMLP(g.layers, args.width, jax.random.key(1))
    cases = {"bare core": model, "core + Held-Suarez": model + HeldSuarez(g),
             "core + column MLP": model + ColumnPhysics(g, net)}
    if not args.no_shipped and args.truncation == 21 and args.layers == 8:
        shipped = load_module(shipped_dir() / "column_net.eqx", kind="ColumnNet")
        phys = ColumnPhysics(g, PackedColumnFunction(shipped, shipped.levels), insolation="daily")
        size = f"{shipped.mlp.width_size} x {shipped.mlp.depth}"
        cases[f"core + shipped ColumnNet ({size}), every stage"] = model + phys
        cases["core + shipped + GlobalBalance, every stage"] = model + GlobalBalance(phys)
        cases["core + shipped + GlobalBalance, once per step"] = model + OncePerStep(GlobalBalance(phys))
    for path in args.weights:
        net = load_module(path, kind="ColumnNet")
        phys = ColumnPhysics(g, PackedColumnFunction(net, net.levels), insolation="daily")
        name = f"core + {Path(path).parent.name} ({net.mlp.width_size} x {net.mlp.depth}) + balance, once per step"
        cases[name] = model + OncePerStep(GlobalBalance(phys))
    res = {"grid": str(g), "dt_s": dt, "dtype": str(jnp.zeros(()).dtype), "steps": args.steps,
           "cpu": platform.processor() or platform.machine(), "per_step_s": {}, "compile_s": {}}
    first, per = time_rollouts(cases, stepper, state, dt, args.steps, args.repeats)
    res["per_step_s"].update(per)
    res["compile_s"].update(first)
    for name in cases:
        print(f"{name:50s} {per[name] * 1e3:8.2f} ms/step   (compile + first run {first[name]:.1f} s)", flush=True)
    bare = res["per_step_s"]["bare core"]

    # gradient / forward for a 1-day rollout of core + column MLP
    n_day = round(86400 / dt)
    if args.no_gradient:
        n_day = 0
    p = cases["core + column MLP"]

    def loss(p):
        traj = rollout(p, stepper, state, dt=dt, n_steps=n_day, save_every=n_day, checkpoint=True)
        f = model.observe(jax.tree_util.tree_map(lambda x: x[-1], traj.states))
        return jnp.mean(f.air_temperature) + jnp.mean(f.eastward_wind ** 2)

    if n_day:
        fwd = eqx.filter_jit(loss)
        grad = eqx.filter_jit(eqx.filter_grad(loss))
        jax.block_until_ready(fwd(p))
        jax.block_until_ready(jax.tree_util.tree_leaves(grad(p)))
        t0 = time.perf_counter()
        jax.block_until_ready(fwd(p))
        t_fwd = time.perf_counter() - t0
        t0 = time.perf_counter()
        jax.block_until_ready(jax.tree_util.tree_leaves(grad(p)))
        t_grad = time.perf_counter() - t0
        res["one_day_rollout"] = {"steps": n_day, "forward_s": t_fwd, "gradient_s": t_grad, "ratio": t_grad / t_fwd}

    if not args.no_jcm:
        per, why = time_jcm(args.truncation, args.layers, dt / 60.0, args.jcm_days)
        res["per_step_s"]["jcm SPEEDY (dycore + physics)"] = per
        if why:
            res["jcm_note"] = why
    res["ratio_to_bare_core"] = {k: (v / bare if v else None) for k, v in res["per_step_s"].items()}
    print("\nper step, relative to the bare core:")
    for k, v in res["per_step_s"].items():
        r = res["ratio_to_bare_core"][k]
        print(f"  {k:50s} {'n/a' if v is None else f'{v * 1e3:8.2f} ms'}   "
              f"{'' if r is None else f'{r:5.2f}x'}")
    if res.get("jcm_note"):
        print("  jcm:", res["jcm_note"])
    d = res.get("one_day_rollout")
    if d:
        print(f"1-day rollout ({d['steps']} steps), core + column MLP: forward {d['forward_s']:.2f} s, gradient "
              f"{d['gradient_s']:.2f} s, ratio {d['ratio']:.2f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print("wrote", args.out)


if __name__ == "__main__":
    main()
