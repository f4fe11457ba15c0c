"""Which ops a pruned forward spends its extra time in, blur fraction F against 0 % (one process).

Session 27 (its outputs here ran with the tap kernel on: prefix M2AE_FUSED_TAPS=auto
to repeat them). Run: GLIBC_TUNABLES=glibc.malloc.hugetlb=1 OMP_NUM_THREADS=2 PYTHONPATH=.:scripts \
    python docs/results/s27/op_diff.py paper-pruned 25 [100 ...]
One warm-up forward per setting, then one profiled forward (torch.profiler, self CPU time by
op); prints the ops whose self time grew most against the 0 % forward.
"""
import argparse
import sys

import torch
from torch.profiler import ProfilerActivity, profile

from forward_setup import add_forward_arguments, prepare_forward


def self_ms_by_op(forward) -> tuple[dict, float]:
    with torch.inference_mode():
        forward()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            forward()
    rows = {e.key: (e.self_cpu_time_total / 1e3, e.count) for e in prof.key_averages()}
    total = sum(ms for ms, _ in rows.values())
    return rows, total


def main():
    spec, fractions = sys.argv[1], sys.argv[2:]
    results = {}
    for fraction in ["0"] + fractions:
        parser = argparse.ArgumentParser()
        add_forward_arguments(parser)
        forward = prepare_forward(parser.parse_args([spec, "--fraction", fraction]))
        results[fraction] = self_ms_by_op(forward)
        del forward
    base, base_total = results["0"]
    for fraction in fractions:
        rows, total = results[fraction]
        print(f"{spec} {fraction} % vs 0 %: self CPU {total:.0f} vs {base_total:.0f} ms")
        grown = sorted(rows, key=lambda k: -(rows[k][0] - base.get(k, (0, 0))[0]))
        for key in grown[:14]:
            ms, count = rows[key]
            was, was_count = base.get(key, (0.0, 0))
            print(f"  {key:40s} {was:8.1f} -> {ms:8.1f} ms  ({was_count} -> {count} calls)")


if __name__ == "__main__":
    main()
