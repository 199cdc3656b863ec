#!/usr/bin/env bash
# Downscaling at the paper's scale on a GPU: wider networks, larger batches and many more steps than the CPU
# defaults of the shipped weights (docs/downscaling.md). Needs jax with CUDA (pip install -U "jax[cuda12]").
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
steps = 4000
flow_steps = 8000
lr = 1e-3
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
