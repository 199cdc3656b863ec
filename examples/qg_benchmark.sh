#!/usr/bin/env bash
# The ocean subgrid benchmark (Ross et al. 2023) at full size, both configurations: the commands behind the
# similarity table of docs/qg.md. 256-point runs coarse-grained to 64 points, CNN closures trained offline and
# online, four 360-day free runs per closure. About 3 hours on a 2-core CPU (mostly CNN training and CNN free runs).
# Run from the repository root:   bash examples/qg_benchmark.sh [RUNS_DIR]
set -euo pipefail
R=${1:-runs/qg}
N=${NEMIC:-.venv/bin/nemic}
EVAL="--steps 8640 --save-every 240 --spinup-steps 720 --runs 4 --no-float64"

# eddy: 6 years in float64, snapshots every 10 days of years 3-6; offline CNN 600 Adam steps
$N qg generate --config eddy --years 6 --spinup-years 3 --save-every 240 --out $R/eddy
$N qg train --data $R/eddy --mode offline --out $R/cnn_off --steps 600 --batch 8 --lr 1e-3 --widths 32,32,32,32
# jet (slower to equilibrate): 10 years in float32, snapshots every 10 days of years 5-10; 1500 Adam steps
$N qg generate --config jet --years 10 --spinup-years 5 --save-every 240 --no-float64 --out $R/jet
$N qg train --data $R/jet --mode offline --out $R/jet_cnn_off --steps 1500 --batch 8 --lr 1e-3 --widths 32,32,32,32

for C in eddy jet; do
  OFF=$R/jet_cnn_off; [ $C = eddy ] && OFF=$R/cnn_off
  # 90 days of 6-hourly coarse-grained snapshots after the long run, for online training
  $N qg generate --config $C --restart $R/$C/hires.nc --years 0.25 --spinup-years 0 --save-every 6 \
      --operators op1 --no-float64 --out $R/${C}_fine90
  # online: fine-tune the offline CNN through 2-day rollouts of the 64-point model; loss = state MSE + W x the
  # log KE-spectrum distance, for W = 0.1, 1 and 20
  for W in 0.1 1 20; do
    S=s; [ $W = 1 ] && S=sw1; [ $W = 20 ] && S=sw20
    $N qg train --data $R/${C}_fine90 --mode online --init $OFF --out $R/${C}_cnn_on_$S --steps 60 --batch 2 \
        --horizon 8 --lr 1e-4 --spectrum-weight $W
  done
  $N qg evaluate --data $R/$C --out $R/eval_${C}_final $EVAL \
      --closures smagorinsky,backscatter,cnn_offline=$OFF,cnn_online=$R/${C}_cnn_on_s
  $N qg evaluate --data $R/$C --out $R/eval_${C}_sw1 $EVAL --closures cnn_online_sw1=$R/${C}_cnn_on_sw1
  $N qg evaluate --data $R/$C --out $R/eval_${C}_sw20 $EVAL --closures cnn_online_sw20=$R/${C}_cnn_on_sw20
done
$N qg table $R/eval_eddy_final $R/eval_eddy_sw1 $R/eval_eddy_sw20 $R/eval_jet_final $R/eval_jet_sw1 $R/eval_jet_sw20
