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

from forward_setup import add_forward_arguments, prepare_forward
from m2ae_core.benchmark.machine import peak_rss_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_forward_arguments(parser)
    forward = prepare_forward(parser.parse_args())
    with torch.inference_mode():
        forward()
        before, begin = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        forward()
        seconds, after = time.perf_counter() - begin, resource.getrusage(resource.RUSAGE_SELF)
    print(f"{forward.label}: {seconds:.2f} s, minor faults {after.ru_minflt - before.ru_minflt}, "
          f"user {after.ru_utime - before.ru_utime:.2f} s, "
          f"sys {after.ru_stime - before.ru_stime:.2f} s, "
          f"process peak {peak_rss_bytes() / 2 ** 20:.0f} MiB", flush=True)


if __name__ == "__main__":
    main()
