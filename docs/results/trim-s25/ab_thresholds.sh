#!/bin/sh
# Session 25: m2ae bench at 2152x1436, 10 %, with glibc's trim threshold at 128 KiB (its default:
# the behaviour before the policy set it), 32 MiB and 64 MiB, in turns, three runs each.
# Usage (an environment with m2ae installed): sh ab_thresholds.sh [OUT]   (output ab_thresholds.txt)
out=${1:-/tmp/trim-ab}
cd "$(git rev-parse --show-toplevel)" || exit 1
for i in 1 2 3; do
  for t in 131072 33554432 67108864; do
    MALLOC_TRIM_THRESHOLD_=$t python -m m2ae_core.cli bench --models paper-pruned nafnet-w32 \
      --fractions 10 --sizes 2152x1436 --repeats 3 --rounds 1 --threads 2 --out "$out/t$t-$i" \
      > "$out-t$t-$i.log" 2>&1
    grep -E "^\| 2152x1436" "$out/t$t-$i/bench.md" | sed "s/^/T=$t run $i /"
  done
done
