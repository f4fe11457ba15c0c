#!/bin/sh
# Session 25, first A/B: glibc's 128 KiB trim threshold ('old') against the policy at 64 MiB
# ('new', the value the policy had then), alternated, three runs each.
# Usage (an environment with m2ae installed, code of dd23f3c^ + a 64 MiB DEFAULT_TRIM_THRESHOLD):
#   sh ab_64mib.sh [OUT]   (output ab_64mib.txt)
out=${1:-/tmp/trim-ab}
cd "$(git rev-parse --show-toplevel)" || exit 1
for i in 1 2 3; do
  for mode in old new; do
    if [ $mode = old ]; then export MALLOC_TRIM_THRESHOLD_=131072; else unset MALLOC_TRIM_THRESHOLD_; fi
    python -m m2ae_core.cli bench --models paper-pruned nafnet-w32 --fractions 10 --sizes 2152x1436 \
      --repeats 3 --rounds 1 --threads 2 --out "$out/$mode-$i" > "$out-$mode-$i.log" 2>&1
    grep -E "^\| 2152x1436" "$out/$mode-$i/bench.md" | sed "s/^/$mode-$i /"
  done
done
