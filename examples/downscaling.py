"""Downscale OPERA radar rain with the shipped models: one patch, every model, a generative ensemble.

    .venv/bin/python examples/downscaling.py [--data OPERA_FILE] [--members 8] [--out downscaling_out]

Cuts the wettest 120 x 120 patch (240 km at 2 km) of the last frame, averages it over 10 x 10 blocks (the 20 km
input), downscales the coarse field with the U-Nets trained with MSE, MSE + relaxed Minkowski and MSE + surrogate
Minkowski loss and draws an ensemble from the flow-matching models, then prints the verification scores of each
against the observed patch and saves a PNG side by side. Without --data the OPERA sample shipped with nemic is
used. The same through the command line: ``nemic downscale sample`` and ``nemic downscale evaluate``.
"""

import argparse
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from nemic.data.patches import block_average, downscaling_patches
from nemic.experiments.downscaling import default_weights_dir, load_models, open_rain
from nemic.experiments.downscaling_eval import postprocess, predict
from nemic.experiments.downscaling_plots import plot_cases
from nemic.metrics import crps_ensemble, fss, mae, minkowski_distance, rapsd_error, spread_error


def main():
    ap = argparse.ArgumentParser(description="downscale one OPERA patch with nemic's shipped models")
    ap.add_argument("--data", default=None, help="OPERA file (ODIM-HDF5 or netCDF); default: shipped sample")
    ap.add_argument("--members", type=int, default=8)
    ap.add_argument("--out", default="downscaling_out")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    models, _ = load_models(default_weights_dir())
    factor = next(iter(models.values())).factor
    rain, name = open_rain(args.data)
    patch = downscaling_patches(rain.isel(time=-1), 120, factor=factor, max_patches_per_frame=1)
    truth = np.asarray(patch.values[:1], np.float32)  # (1, 120, 120) mm/h
    coarse = np.asarray(block_average(truth, factor))  # (1, 12, 12)
    preds = predict(models, coarse, args.members, jax.random.key(0))
    thr = jnp.asarray([0.1, 0.5, 1.0, 2.0, 5.0, 10.0])
    print(f"{name}, frame {str(patch.time.values[0])[:16]}, patch at ({int(patch.y0[0])}, {int(patch.x0[0])})")
    print(f"{'model':26s} {'MAE':>7s} {'FSS5/9':>7s} {'RAPSD':>7s} {'Mink.':>7s} {'CRPS':>7s} {'spr/err':>7s}")
    for m, p in preds.items():
        members = p if p.ndim == 4 else p[None]
        row = [float(mae(members.mean(0), truth).mean()),
               float(np.mean([fss(x, truth, 5.0, 9, pooled=True) for x in members])),
               float(np.mean([rapsd_error(x, truth).mean() for x in members])),
               float(np.mean([minkowski_distance(x, truth, thr).mean.mean() for x in members]))]
        if p.ndim == 4:
            row += [float(crps_ensemble(p, truth).mean()), float(spread_error(p, truth))]
        print(f"{m:26s} " + " ".join(f"{v:7.3f}" for v in row))
    plot_cases(out, preds, truth, np.asarray(postprocess(coarse)), n_cases=1, n_members=4, name="downscaling.png")
    print(f"figure: {out / 'downscaling.png'}")


if __name__ == "__main__":
    main()
