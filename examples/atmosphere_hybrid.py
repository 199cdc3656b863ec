"""A free run of the shipped hybrid atmosphere (dinosaur's core + the column network trained on SPEEDY) and its
climate against the SPEEDY truth, next to the bare dynamical core.

    .venv/bin/python examples/atmosphere_hybrid.py --days 365 --out /tmp/hybrid
    .venv/bin/python examples/atmosphere_hybrid.py --days 365 --truth runs/atmos_truth --out /tmp/hybrid

The same as

    nemic atmos run --years 1 --out DIR/hybrid
    nemic atmos run --physics none --days 365 --out DIR/bare_core
    nemic atmos evaluate --run DIR/hybrid --truth TRUTH --baseline bare_core=DIR/bare_core --out DIR/evaluation

Both runs start from the shipped SPEEDY state of 2000-08-28 (T21, 8 equidistant sigma levels) with dt = 1800 s
and the dry-mass fixer (the hybrid also with its global-balance, energy and humidity fixers); the hybrid's insolation follows the calendar. Without ``--truth`` only the runs are
made (the truth comes from ``nemic atmos generate`` with ``vertical = "equidistant"``, see docs/atmosphere.md).
"""

import argparse
import time
from pathlib import Path

from nemic.experiments.atmos_climate import evaluate
from nemic.experiments.atmos_climate_run import ClimateRunConfig, run_climate
from nemic.io.terminal import progress


def main():
    ap = argparse.ArgumentParser(description="free run of the shipped hybrid atmosphere and its climate")
    ap.add_argument("--days", type=float, default=365.0)
    ap.add_argument("--truth", default=None, help="truth directory of 'nemic atmos generate' (optional)")
    ap.add_argument("--out", default="hybrid_out")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for physics, name in (("hybrid", "hybrid"), ("none", "bare_core")):
        cfg = ClimateRunConfig(physics=physics, days=args.days, mean_days=min(30.0, args.days))
        t0 = time.perf_counter()
        with progress(f"{name}, {args.days:g} days") as bar:
            m = run_climate(cfg, out / name, progress=bar)
        print(f"{name}: {m['days']:.0f} days in {time.perf_counter() - t0:.0f} s; global mean T "
              f"{m['global_mean_air_temperature']['first']:.2f} -> {m['global_mean_air_temperature']['last']:.2f} K, "
              f"precipitation {m['global_mean_precipitation_flux']['last'] * 86400:.2f} mm/day at the end")
    if args.truth:
        m = evaluate(out / "hybrid", args.truth, out / "evaluation", baselines={"bare_core": str(out / "bare_core")})
        for name, s in m["scores"].items():
            print(f"{name:28s} zonal-mean RMSE: T {s['T']['zonal_mean_rmse']:.2f} K, u {s['u']['zonal_mean_rmse']:.2f} "
                  f"m/s, q {s['q']['zonal_mean_rmse'] * 1e3:.3f} g/kg, precipitation "
                  f"{s['precipitation']['zonal_mean_rmse']:.2f} mm/day")
        print(f"figures and metrics.json in {out / 'evaluation'}")


if __name__ == "__main__":
    main()
