"""Stochastic closures of two-scale Lorenz-96 as ensembles (the recipe behind ``nemic l96 stochastic``).

Run:  python examples/l96_stochastic.py [--quick]

Trains, for c = 10 and c = 4, a deterministic neural closure (offline, then online through rollouts), the
polynomial + AR(1) closure of Arnold et al. (2013) and a stochastic neural closure (the deterministic network with
a Gaussian random field as input, fine-tuned by the fair CRPS of 4-member ensembles through rollouts), then
scores 40-member ensembles from 100 initial conditions: CRPS, spread/error and rank histograms against lead
time, and the Hellinger distance of the climate of X. Results go to runs/l96_stochastic/.
"""

import sys

from nemic.experiments.l96_stochastic import L96StochasticConfig, quick_config, run_all

if __name__ == "__main__":
    cfg = quick_config() if "--quick" in sys.argv else L96StochasticConfig()
    metrics = run_all(cfg, "runs/l96_stochastic", c_values=(10.0, 4.0))
    for c, m in metrics["by_c"].items():
        print(f"c = {c}")
        for name, s in m["closures"].items():
            print(f"  {name:17s} CRPS@1 {s['crps']['1.0']:.3f}  spread/error@1 {s['spread_error']['1.0']:.2f}  "
                  f"Hellinger {s['hellinger_x']:.3f}")
        print("  checks:", m["checks"])
