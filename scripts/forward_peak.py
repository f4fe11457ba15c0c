"""Peak resident memory of each forward, one benchmark model per process.

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 OMP_NUM_THREADS=2 python scripts/forward_peak.py \
        --models nafnet-w32 paper-pruned [--fraction 10] [--drop-previous-output]

Each model runs in a fresh process set up like a benchmark cell (allocator policy, inputs,
threads): forwards in a row, the high-water mark (VmHWM) reset before each one, so every line
is that forward's own peak. By default the previous forward's output stays alive during the
next one, as in `m2ae bench`; ``--drop-previous-output`` frees it first. For explaining peak
memory; the issue's numbers come from `m2ae bench`.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys


def child(spec_text: str, args) -> list[float]:
    import torch

    from m2ae_core.benchmark.cell import make_inputs
    from m2ae_core.benchmark.machine import peak_rss_bytes, set_threads
    from m2ae_core.benchmark.models import build_spec_model, parse_model_spec
    from m2ae_core.benchmark.workload import parse_size
    from m2ae_core.memory import return_freed_memory_promptly

    return_freed_memory_promptly()
    set_threads(args.threads)
    spec = parse_model_spec(spec_text)
    model = build_spec_model(spec)
    height, width = parse_size(args.size)
    image, mask = make_inputs(height, width, args.fraction if spec.uses_mask else None, "cpu")
    peaks, output = [], None
    with torch.inference_mode():
        for _ in range(args.forwards):
            if args.drop_previous_output:
                output = None
            with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
                fh.write("5")  # VmHWM := current RSS
            output = model(image, mask=mask, pruned=spec.mode != "dense")
            peaks.append(peak_rss_bytes() / 2 ** 20)
    del output  # alive until here: the next forward ran with it, as in `m2ae bench`
    return peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["nafnet-w32", "paper-pruned"])
    parser.add_argument("--size", default="2152x1436", help="WxH")
    parser.add_argument("--fraction", type=float, default=10.0, help="blur mask, percent")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--forwards", type=int, default=6)
    parser.add_argument("--drop-previous-output", action="store_true")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args)))
        return
    for spec in args.models:
        command = [sys.executable, __file__, "--child", spec, "--size", args.size,
                   "--fraction", str(args.fraction), "--threads", str(args.threads),
                   "--forwards", str(args.forwards)]
        if args.drop_previous_output:
            command.append("--drop-previous-output")
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{spec}: child failed\n{done.stderr[-2000:]}")
        peaks = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{spec}: peak MiB per forward " + " ".join(f"{p:.0f}" for p in peaks)
              + f" (after the first: {min(peaks[1:]):.0f}-{max(peaks[1:]):.0f})", flush=True)


if __name__ == "__main__":
    main()
