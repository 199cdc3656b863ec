#!/usr/bin/env bash
# The full CPU training of the downscaling models shipped with nemic (docs/downscaling.md, "Shipped weights"):
# factor 10 (20 km -> 2 km), a shared MSE pre-training of the U-Nets and a shared flow-matching pre-training of
# the flows, a validation sweep of the Minkowski weight and a validation choice of the flows' sampler (number of
# steps, starting noise, stochastic-sampler noise) on the latest training frames, then the evaluation on the
# later time block.
# Run from the repository root:   bash examples/downscaling_full.sh OPERA_FILE [RUNS_DIR]
# (the shared day of OPERA data: ../shared/data/opera/opera_rain_2023-08-01_0000-1600.nc)
# The shipped weights were made with these settings in three processes (models = the three U-Nets; the training
# of the two flows; their sampler calibration on the validation patches), which give the same weights as this one
# command; the sizes fit the 90-minute goal on 2 CPU cores (docs/downscaling.md has the times).
set -euo pipefail
DATA=${1:?usage: bash examples/downscaling_full.sh OPERA_FILE [RUNS_DIR]}
R=${2:-runs/downscale_full}
N=${NEMIC:-.venv/bin/nemic}
mkdir -p "$R"
cat > "$R/full.toml" <<'TOML'
width = 8
flow_width = 8
depth = 3
batch = 4
pretrain_steps = 400
steps = 60
flow_pretrain_steps = 1200
flow_steps = 480
lr = 2e-3
minkowski_weights = [5.0, 25.0]
val_fraction = 0.15
noise_scales = [1.0]
sde_noises = [0.0, 0.5]
sampler_steps = [8, 16, 32]
spread_band = [0.8, 1.2]
ode_steps = 8
members = 8
max_test_patches = 16
TOML
# train (and score on the test block), then score the saved weights again with the evaluate command
/usr/bin/time -v $N downscale train --data "$DATA" --factor 10 --config "$R/full.toml" --out "$R/x10" --no-progress
$N downscale evaluate --data "$DATA" --weights "$R/x10/weights" --out "$R/x10_eval" --max-patches 16 --no-progress
