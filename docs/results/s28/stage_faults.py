"""Per-stage wall time, system CPU time and minor faults of one model in a process of its own,
like a bench cell (session 28). A variant may switch off the heap trims between stages.

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 OMP_NUM_THREADS=2 PYTHONPATH=.:scripts \
        python docs/results/s28/stage_faults.py MODEL[:FRACTION] FORWARDS [notrim]

Prints one line per forward (after one warm-up) and the medians.
"""
import argparse
import resource
import statistics
import sys
import time

import torch

from forward_setup import add_forward_arguments, prepare_forward
import m2ae_core.network as network

STAGES = ("intro", "encoders.0", "encoders.1", "encoders.2", "encoders.3", "middle_blks",
          "decoders.0", "decoders.1", "decoders.2", "decoders.3", "ending")


def usage():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), r.ru_stime, r.ru_minflt


def main():
    spec, forwards = sys.argv[1], int(sys.argv[2])
    variant = sys.argv[3] if len(sys.argv) > 3 else "as-is"
    if variant == "notrim":
        network.release_free_heap = lambda: None
    model, _, fraction = spec.partition(":")
    parser = argparse.ArgumentParser()
    add_forward_arguments(parser)
    args = [model] + (["--fraction", fraction] if fraction else [])
    forward = prepare_forward(parser.parse_args(args))
    record = {}
    for name in STAGES:
        module = forward.model.get_submodule(name)
        module.register_forward_pre_hook(lambda m, a, n=name: record.__setitem__(n, usage()))

        def post(m, a, o, n=name):
            t0, s0, f0 = record[n]
            t1, s1, f1 = usage()
            record[n] = (t1 - t0, s1 - s0, f1 - f0)
        module.register_forward_hook(post)
    rows = []
    with torch.inference_mode():
        forward()
        for _ in range(forwards):
            begin = usage()
            forward()
            end = usage()
            total = (end[0] - begin[0], end[1] - begin[1], end[2] - begin[2])
            rows.append({**record, "total": total})
            print(f"{spec} {variant}: {total[0]:.2f} s, sys {total[1]:.2f} s, {total[2]} faults",
                  flush=True)
    names = [n for n in STAGES if n in rows[0]] + ["total"]
    line = "  ".join(
        f"{n} {statistics.median(r[n][0] for r in rows):.3f}/{statistics.median(r[n][1] for r in rows):.2f}"
        f"/{int(statistics.median(r[n][2] for r in rows))}" for n in names)
    print(f"medians {spec} {variant} (wall s / sys s / faults): {line}")
    with open("/proc/self/status") as f:
        print([l.strip() for l in f if l.startswith(("VmHWM", "VmRSS"))])


if __name__ == "__main__":
    main()
