"""Seconds and system CPU seconds per top-level module, several models in one process,
forwards alternated (session 27). A spec may carry its blur share: ``paper-pruned:0``.

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 OMP_NUM_THREADS=2 PYTHONPATH=.:scripts \
        python docs/results/s27/stage_sys.py nafnet-w32,paper-pruned:10,paper-dense:10 ROUNDS

A warm-up forward each, then ROUNDS forwards each in turn; prints the medians of wall and
system seconds of the stages from encoders.3 on, and of the whole forward.
"""
import argparse
import resource
import statistics
import sys
import time

import torch

from forward_setup import add_forward_arguments, prepare_forward

SHOWN = ("encoders.0", "encoders.3", "middle_blks", "decoders.0", "decoders.1", "decoders.2",
         "decoders.3")


def clocks():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), usage.ru_stime


def hook_stages(model, record):
    for name, module in model.named_children():
        items = ([(f"{name}.{i}", m) for i, m in enumerate(module)]
                 if isinstance(module, torch.nn.ModuleList) else [(name, module)])
        for sub, m in items:
            if sub in SHOWN:
                m.register_forward_pre_hook(lambda _m, _a, n=sub: record(n, True))
                m.register_forward_hook(lambda _m, _a, _o, n=sub: record(n, False))


def main():
    specs, rounds = sys.argv[1].split(","), int(sys.argv[2])
    forwards = []
    for text in specs:
        spec, _, fraction = text.partition(":")
        parser = argparse.ArgumentParser()
        add_forward_arguments(parser)
        forward = prepare_forward(parser.parse_args([spec] + (["--fraction", fraction]
                                                              if fraction else [])))
        times = {}

        def record(name, starting, times=times):
            wall, sys_s = clocks()
            if starting:
                times[name] = (-wall, -sys_s)
            else:
                w0, s0 = times[name]
                times[name] = (w0 + wall, s0 + sys_s)
        hook_stages(forward.model, record)
        forwards.append((text, forward, times, []))
    with torch.inference_mode():
        for r in range(rounds + 1):
            for text, forward, times, rows in forwards:
                times.clear()
                w0, s0 = clocks()
                forward()
                w1, s1 = clocks()
                if r:
                    rows.append(dict(times, total=(w1 - w0, s1 - s0)))
                    print(f"{text}: {w1 - w0:.2f} s (sys {s1 - s0:.2f})", flush=True)
    print("medians, wall / sys seconds")
    for text, _, _, rows in forwards:
        cells = []
        for key in rows[0]:
            wall = statistics.median(row[key][0] for row in rows)
            sys_s = statistics.median(row[key][1] for row in rows)
            cells.append(f"{key} {wall:.3f}/{sys_s:.2f}")
        print(f"{text}: " + "  ".join(cells))


if __name__ == "__main__":
    main()
