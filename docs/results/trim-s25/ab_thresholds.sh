#!/bin/sh
# trim threshold 128 KiB (glibc's default, the old behaviour) / 32 MiB / 64 MiB, rotated
. /work/main/.venv/bin/activate
cd /work/main
for i in 1 2 3; do
  for t in 131072 33554432 67108864; do
    export MALLOC_TRIM_THRESHOLD_=$t
    python -m m2ae_core.cli bench --models paper-pruned nafnet-w32 --fractions 10 --sizes 2152x1436 --repeats 3 --rounds 1 --threads 2 --out /tmp/s25/trim-ab/t$t-$i > /tmp/s25/trim-ab/t$t-$i.log 2>&1
    grep -E "^\| 2152x1436" /tmp/s25/trim-ab/t$t-$i/bench.md | sed "s/^/T=$t run $i /"
  done
done
