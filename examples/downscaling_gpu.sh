#!/usr/bin/env bash
# Downscaling at the paper's scale on a GPU: wider networks, larger batches and many more steps than the CPU
# settings of the shipped weights (examples/downscaling_full.sh, docs/downscaling.md): the same schedule (shared
# pre-training, Minkowski fine-tuning with a validation sweep of its weight, the flows' sampler (starting noise
# scale and stochastic-sampler noise) chosen on validation by spread/error and Minkowski distance).
# Needs jax with CUDA (pip install -U "jax[cuda12]").
# Run from the repository root:   bash examples/downscaling_gpu.sh OPERA_FILE [RUNS_DIR]
# The same settings file works on a CPU, only much more slowly.
set -euo pipefail
DATA=${1:?usage: bash examples/downscaling_gpu.sh OPERA_FILE [RUNS_DIR]}
R=${2:-runs/downscale_gpu}
N=${NEMIC:-.venv/bin/nemic}
mkdir -p "$R"
cat > "$R/gpu.toml" <<'TOML'
width = 32
flow_width = 32
depth = 3
batch = 32
pretrain_steps = 3000
steps = 1000
flow_pretrain_steps = 6000
flow_steps = 2000
lr = 1e-3
minkowski_weights = [2.0, 5.0, 10.0, 25.0, 50.0]
val_fraction = 0.15
noise_scales = [1.0, 1.1, 1.25, 1.5, 2.0]
sde_noises = [0.0, 0.5, 1.0, 2.0, 4.0]
max_patches_per_frame = 48
stride = 60
ode_steps = 16
solver = "heun"
members = 16
max_test_patches = 256
TOML
nvidia-smi --query-gpu=name,memory.total --format=csv || true
${PYTHON:-.venv/bin/python} -c "import jax; print('jax devices:', jax.devices())"
/usr/bin/time -v $N downscale train --data "$DATA" --factor 10 --config "$R/gpu.toml" --out "$R/x10" --no-progress
$N downscale evaluate --data "$DATA" --weights "$R/x10/weights" --out "$R/x10_eval" --no-progress
