"""A stochastic CNN closure of the QG eddy configuration trained by the CRPS (the recipe behind
``nemic qg stochastic``).

Run from the repository root (about 10 minutes of data generation, then the recipe; see docs/uncertainty.md):

    nemic qg generate --config eddy --years 3 --spinup-years 2.5 --save-every 8640 --operators op1 \\
        --no-float64 --out runs/qg_stoch/spin
    nemic qg generate --config eddy --years 2 --spinup-years 0 --save-every 240 --operators op1 --no-float64 \\
        --restart runs/qg_stoch/spin/hires.nc --out runs/qg_stoch/long
    nemic qg generate --config eddy --years 0.25 --spinup-years 0 --save-every 6 --operators op1 --no-float64 \\
        --restart runs/qg_stoch/long/hires.nc --out runs/qg_stoch/fine
    python examples/qg_stochastic.py

Trains the deterministic offline CNN on the long data (snapshots every 10 days), builds the stochastic CNN (the
same network's forcing perturbed SPPT-style, f (1 + clip(e, -1, 1)) less its domain mean, with e a Gaussian random
field) and fits the field's amplitude, correlation length and time by the fair CRPS of 2-member ensembles through
1-, 2- and 5-day rollouts on the first half of the 6-hourly data, chooses the amplitude of random-field initial
perturbations by spread/error on forecasts from that first half, forecasts 8-member ensembles up to 5 days from
the second half, and scores 180-day free runs by the benchmark's similarity. Results go to runs/qg_stoch/results/.
"""

import sys

from nemic.experiments.qg_stochastic import QGStochasticConfig, quick_config, run

if __name__ == "__main__":
    cfg = quick_config() if "--quick" in sys.argv else QGStochasticConfig()
    m = run(cfg, "runs/qg_stoch/long", "runs/qg_stoch/fine", "runs/qg_stoch/results", progress=True)
    for name, c in m["closures"].items():
        print(f"{name:18s} CRPS@1d {c['crps']['1']:.3f}  CRPS@5d {c['crps']['5']:.3f}  "
              f"similarity {None if c['similarity'] is None else c['similarity']['mean']}")
    print("spread/error by day:", m["closures"]["stochastic_cnn"]["spread_error"])
    print("checks:", m["checks"])
