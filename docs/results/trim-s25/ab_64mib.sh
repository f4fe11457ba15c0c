#!/bin/sh
# alternate old (glibc's 128 KiB trim threshold, via its own env tunable) and new (64 MiB policy)
. /work/main/.venv/bin/activate
cd /work/main
for i in 1 2 3; do
  for mode in old new; do
    if [ $mode = old ]; then export MALLOC_TRIM_THRESHOLD_=131072; else unset MALLOC_TRIM_THRESHOLD_; fi
    python -m m2ae_core.cli bench --models paper-pruned nafnet-w32 --fractions 10 --sizes 2152x1436 --repeats 3 --rounds 1 --threads 2 --out /tmp/s25/trim-ab/$mode-$i > /tmp/s25/trim-ab/$mode-$i.log 2>&1
    grep -E "^\| 2152x1436" /tmp/s25/trim-ab/$mode-$i/bench.md | sed "s/^/$mode-$i /"
  done
done
