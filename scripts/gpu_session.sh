#!/usr/bin/env bash
# Everything one short GPU lease runs (session 23), in one command, within DEADLINE seconds:
#   1. `m2ae bench` on CUDA at 2152x1436 (alone on the GPU, so its timings are clean), with
#      the design study and a per-op profile of the pruned model at 10 % blur;
#   2. tests/test_accelerator.py on CUDA (the pruned path, precision, tiling, CLI, training);
#   3. the two fine-tunes of the bundled default side by side with what time is left
#      (configs/small-gpu-restore.yaml, configs/small-gpu-heads.yaml);
#   4. everything packed for the trip back: OUT/results.tar.gz plus the weights.
#
#   bash scripts/gpu_session.sh OUT PHOTOS [DEADLINE_SECONDS]
#
# Each step has its own timeout, so a failing step costs its time, not the lease.
set -u
out=${1:?usage: gpu_session.sh OUT PHOTOS [DEADLINE_SECONDS]}
photos=${2:?usage: gpu_session.sh OUT PHOTOS [DEADLINE_SECONDS]}
deadline=${3:-560}
start=$(date +%s)
work=$(mktemp -d)
res=$work/results
mkdir -p "$res" "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
python=${PYTHON:-python3}
elapsed() { echo $(( $(date +%s) - start )); }
step() { echo "== $(elapsed) s: $*" | tee -a "$res/steps.txt"; }

step "machine"
{ nvidia-smi --query-gpu=name,memory.used,clocks.sm,driver_version --format=csv
  "$python" -c "import torch, sys; print(sys.version.split()[0], torch.__version__, torch.cuda.get_device_name())"
  nproc; } > "$res/machine.txt" 2>&1

step "bench"
timeout 200 "$python" -m m2ae_core.cli bench ${BENCH_EXTRA:-} --models paper-pruned paper-dense nafnet-w32 default \
    --fractions 0 10 50 100 --sizes "${BENCH_SIZE:-2152x1436}" --repeats 5 --device "${BENCH_DEVICE:-cuda}" --cell-timeout 40 \
    --design-study --design-size "${BENCH_SIZE:-2152x1436}" --profile --out "$res/bench-gpu" > "$res/bench.log" 2>&1
echo "bench rc $?" >> "$res/steps.txt"

step "accelerator tests"
timeout 150 "$python" -m pytest -q -p no:cacheprovider tests/test_accelerator.py \
    > "$res/test_accelerator.txt" 2>&1
echo "tests rc $?" >> "$res/steps.txt"

# what is left, less the probe and restart (~45 s), the final validation and packing (~35 s)
budget=$(( deadline - $(elapsed) - 80 ))
step "training, budget $budget s"
if [ "$budget" -gt 60 ]; then
    RUNS="small-gpu-restore small-gpu-heads" SLACK=10 timeout $(( budget + 70 )) \
        bash scripts/gpu_train_compare.sh "$work/train" "$photos" "$budget" > "$res/train.log" 2>&1
    echo "train rc $?" >> "$res/steps.txt"
fi

step "pack"
for run in small-gpu-restore small-gpu-heads; do
    dir=$work/train/$run
    [ -d "$dir" ] || continue
    cp "$work/train/$run.log" "$res/" 2>/dev/null
    cp "$dir/metrics.jsonl" "$res/$run.metrics.jsonl" 2>/dev/null
    cp "$dir/config.json" "$res/$run.config.json" 2>/dev/null
    for kind in final final_ema; do  # latest*: what a run stopped by its limit left
        for file in "$dir/$kind.safetensors" "$dir/${kind/final/latest}.safetensors"; do
            if [ -f "$file" ]; then cp "$file" "$out/$run.$(basename "$file")"; break; fi
        done
    done
done
step "done"
tar -czf "$out/results.tar.gz" -C "$work" results
ls -la "$out"
