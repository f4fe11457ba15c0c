#!/usr/bin/env bash
# Train the default model (configs/small-gpu.yaml) and its equal-budget dense NAFNet
# (configs/nafnet-small-gpu.yaml) side by side on one GPU for a fixed wall-clock budget.
#
#   bash scripts/gpu_train_compare.sh OUT [PHOTOS] [BUDGET_SECONDS]
#
# A 60-step probe of both runs measures seconds per step; both then resume with the same
# `steps`, chosen so that the cosine schedule ends inside the budget (equal budget means
# equal steps and samples, not equal seconds). Results land in OUT/<run>/.
#
# Environment: RUNS (config names under configs/, default the pair above); PACE (seconds per
# step assumed = PACE x the probe's, default 1.3: the probe's last steps are served from the
# loaders' prefetched batches, faster than steady state); SLACK (seconds past the budget at
# which a run stops with an exact checkpoint, default 60); PROBE (probe steps, default 60);
# TRAIN_SET (extra `KEY=VALUE` overrides for every run, space-separated).
set -u
out=${1:?usage: gpu_train_compare.sh OUT [PHOTOS] [BUDGET_SECONDS]}
photos=${2:-../shared/data/photos}
budget=${3:-330}
probe=${PROBE:-60}
python=${PYTHON:-python3}
read -r -a runs <<< "${RUNS:-small-gpu nafnet-small-gpu}"
pace=${PACE:-1.3}
extra=()
for item in ${TRAIN_SET:-}; do extra+=(--set "$item"); done
mkdir -p "$out"

train() {  # train RUN EXTRA-ARGS... (background; log in OUT/RUN.log)
    local run=$1; shift
    "$python" -m m2ae_core.training.trainer --config "configs/$run.yaml" \
        --out "$out/$run" --set "data.photos=$photos" "${extra[@]}" "$@" >>"$out/$run.log" 2>&1 &
}

for run in "${runs[@]}"; do train "$run" --stop-at "$probe" --steps 100000; done
wait
steps=$("$python" - "$out" "$budget" "$probe" "$pace" "${runs[@]}" <<'PY'
import json, sys
out, budget, probe, pace = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
runs = sys.argv[5:]
slowest = 0.0
for run in runs:
    records = [json.loads(line) for line in open(f"{out}/{run}/metrics.jsonl")]
    train = [r for r in records if r.get("kind") == "train"]
    slowest = max(slowest, train[-1]["s_per_step"])  # past warm-up: the last interval
print(probe + int(budget / (pace * slowest)) // 10 * 10)
PY
) || { echo "probe failed; logs in $out/*.log"; exit 1; }
echo "probe done: both runs resume to $steps steps"
for run in "${runs[@]}"; do train "$run" --resume --steps "$steps" --time-limit "$((budget + ${SLACK:-60}))"; done
wait
for run in "${runs[@]}"; do tail -n 3 "$out/$run.log"; done
