"""NAFNet-w32 and the pruned `paper` model with and without the tap kernel, forwards
alternated in one process (session 27): the same machine state for all three, so this VM's
drift between runs cancels out.

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 OMP_NUM_THREADS=2 PYTHONPATH=.:scripts \
        python docs/results/s27/pair_kernel.py ROUNDS [--fraction 10]

One warm-up each, then ROUNDS rounds of (NAFNet-w32, pruned with kernel, pruned with ops);
prints each round and the medians, and the per-round ratios to NAFNet-w32. For explaining;
the issue's numbers come from `m2ae bench` (one process per cell).
"""
import argparse
import os
import statistics
import sys
import time

import torch

from forward_setup import add_forward_arguments, prepare_forward
from m2ae_core import fused_taps


def main():
    rounds = int(sys.argv[1])
    fraction = sys.argv[sys.argv.index("--fraction") + 1] if "--fraction" in sys.argv else "10"
    os.environ[fused_taps.ENV_SWITCH] = "auto"
    built = fused_taps.kernel
    assert built() is not None, "the kernel cannot be built here"

    def prepared(spec):
        parser = argparse.ArgumentParser()
        add_forward_arguments(parser)
        return prepare_forward(parser.parse_args([spec, "--fraction", fraction]))

    naf, pruned = prepared("nafnet-w32"), prepared("paper-pruned")

    def with_kernel(on):
        def run():
            fused_taps.kernel = built if on else (lambda: None)
            try:
                return pruned()
            finally:
                fused_taps.kernel = built
        return run

    runs = {"nafnet-w32": naf, "pruned, kernel": with_kernel(True),
            "pruned, ops": with_kernel(False)}
    times = {name: [] for name in runs}
    with torch.inference_mode():
        for r in range(rounds + 1):
            line = []
            for name, run in runs.items():
                begin = time.perf_counter()
                run()
                seconds = time.perf_counter() - begin
                if r:
                    times[name].append(seconds)
                line.append(f"{name} {seconds:.2f} s")
            if r:
                print(f"round {r}: " + ", ".join(line), flush=True)
    base = times["nafnet-w32"]
    print(f"medians ({fraction} % mask, 2152x1436): " + ", ".join(
        f"{name} {statistics.median(t):.2f} s" for name, t in times.items()))
    for name in ("pruned, kernel", "pruned, ops"):
        ratios = [a / b for a, b in zip(times[name], base)]
        print(f"{name} / nafnet-w32 per round: " + " ".join(f"{x:.3f}" for x in ratios)
              + f"; median {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
