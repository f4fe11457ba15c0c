"""1x1 convolution at inference on CPU: ``F.linear`` (MKL's matmul) against oneDNN's
convolution on the same channels-last rows, for the shapes of `paper` / NAFNet-w32 at
2152x1436 (full-size bands, stage-4 bands, the pruned conv1 table, the middle blocks).

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python scripts/pointwise_speed.py \
        [--threads 2] [--dtype float32|bfloat16] [--repeats 7] [--backward]

Prints ms per call (median of --repeats, measured twice, alternated) and the speed-up;
``--backward`` times forward + backward instead (what training would pay). Where
``layers.onednn_pointwise`` comes from; the issue's numbers come from ``m2ae bench``.
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from m2ae_core.benchmark.machine import median_ms
from m2ae_core.memory import return_freed_memory_promptly

# (in channels, out channels, pixels, what it is)
SHAPES = [
    (32, 64, 2160 * 64, "full size, conv1/conv4 of a band"),
    (64, 32, 2160 * 64, "full size, 2C -> C"),
    (256, 512, 270 * 60, "stage 4, conv1/conv4 of a band"),
    (256, 256, 270 * 60, "stage 4, conv3/conv5 of a band"),
    (256, 512, 28700, "stage 4, pruned conv1 table at 50 %"),
    (512, 1024, 135 * 90, "middle block, conv1/conv4"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--backward", action="store_true",
                        help="time forward + backward (training) instead of inference")
    args = parser.parse_args()
    return_freed_memory_promptly()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    gen = torch.Generator().manual_seed(0)
    mode = "forward + backward" if args.backward else "inference"
    print(f"{args.threads} threads, {args.dtype}, {mode}; ms per call, median of {args.repeats}")
    print(f"{'shape':>22} | {'linear':>13} | {'conv':>13} | speed-up | what")
    for cin, cout, n, what in SHAPES:
        rows = torch.randn(n, cin, generator=gen).to(dtype)
        weight = torch.randn(cout, cin, generator=gen).to(dtype)
        bias = torch.randn(cout, generator=gen).to(dtype)
        if args.backward:
            for tensor in (rows, weight, bias):
                tensor.requires_grad_(True)
        as_map = rows.view(1, n, 1, cin).permute(0, 3, 1, 2)  # channels-last, no copy
        kernel = weight.view(cout, cin, 1, 1)

        def linear():
            return F.linear(rows, weight, bias)

        def conv():
            return F.conv2d(as_map, kernel, bias)

        times = []
        for _ in range(2):
            for fn in (linear, conv):
                times.append(median_ms(lambda: _step(fn, args.backward), args.repeats))
        speedup = min(times[0::2]) / min(times[1::2])
        print(f"{f'{cin}->{cout} x {n}':>22} | {times[0]:6.2f} {times[2]:6.2f} | "
              f"{times[1]:6.2f} {times[3]:6.2f} | {speedup:7.2f}x | {what}", flush=True)


def _step(fn, backward: bool) -> None:
    """One inference call, or one forward + backward (the backward of a sum of squares)."""
    if backward:
        fn().square().mean().backward()
        return
    with torch.inference_mode():
        fn()


if __name__ == "__main__":
    main()
