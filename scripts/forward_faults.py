"""Kernel time and page faults of one forward, next to its wall time, in this process.

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 OMP_NUM_THREADS=2 python scripts/forward_faults.py \
        MODEL [--fraction 10] [--size 2152x1436]

MODEL is a `m2ae bench` model spec (``nafnet-w32``, ``paper-pruned``, ...). Set up like a
benchmark cell (allocator policy, inputs, threads); after a warm-up forward it prints the
second forward's seconds, minor page faults, and user and system CPU seconds (all threads).
System time is memory the kernel hands out and takes back: on a VM where faults are dear it
tells allocator settings apart more steadily than wall time (A/B: run it with glibc's own
``MALLOC_TRIM_THRESHOLD_`` / ``MALLOC_MMAP_THRESHOLD_`` set and unset).
"""
from __future__ import annotations

import argparse
import resource
import time

import torch

from m2ae_core.benchmark.cell import make_inputs
from m2ae_core.benchmark.machine import peak_rss_bytes, set_threads
from m2ae_core.benchmark.models import build_spec_model, parse_model_spec
from m2ae_core.benchmark.workload import parse_size
from m2ae_core.memory import return_freed_memory_promptly


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--fraction", type=float, default=10.0, help="blur mask, percent")
    parser.add_argument("--size", default="2152x1436", help="WxH")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    return_freed_memory_promptly()
    set_threads(args.threads)
    spec = parse_model_spec(args.model)
    model = build_spec_model(spec)
    height, width = parse_size(args.size)
    image, mask = make_inputs(height, width, args.fraction if spec.uses_mask else None, "cpu")
    pruned = spec.mode != "dense"
    with torch.inference_mode():
        model(image, mask=mask, pruned=pruned)
        before, begin = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        model(image, mask=mask, pruned=pruned)
        seconds, after = time.perf_counter() - begin, resource.getrusage(resource.RUSAGE_SELF)
    label = args.model + (f" {args.fraction:g} %" if spec.uses_mask else "")
    print(f"{label}: {seconds:.2f} s, minor faults {after.ru_minflt - before.ru_minflt}, "
          f"user {after.ru_utime - before.ru_utime:.2f} s, "
          f"sys {after.ru_stime - before.ru_stime:.2f} s, "
          f"process peak {peak_rss_bytes() / 2 ** 20:.0f} MiB", flush=True)


if __name__ == "__main__":
    main()
