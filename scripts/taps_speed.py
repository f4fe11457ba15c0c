"""Time the deformable taps of the pruned path per masked pixel, by chunk size.

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python scripts/taps_speed.py \
        [--channels 512] [--dtype fp32] [--threads 2] [--fraction 25]

``deform.accumulate_taps`` walks the masked pixels in chunks of ``layers.CHUNK_BYTES`` (of
fp32 accumulators): nine ``embedding_bag`` gathers and nine multiply-adds per chunk. This
times it on the 180x270 stage-4 grid of a 2152x1436 photo, for the masked pixels of a blob
mask with random trajectories (start and end displacements of standard deviation 3 pixels),
called once for all of them (the whole-map path) and band by band (12 calls: the banded
block, :mod:`m2ae_core.m2as_banded`). Prints microseconds per masked pixel for each chunk
size (median of --repeats; the sizes take turns, so that the machine's drift hits them
alike).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from m2ae_core import layers
from m2ae_core.benchmark.workload import blob_mask
from m2ae_core.deform import accumulate_taps, sample_corners
from m2ae_core.memory import return_freed_memory_promptly
from m2ae_core.precision import resolve_dtype

CHUNK_SIZES = (512 << 10, 1 << 20, 2 << 20, 4 << 20, 8 << 20)
GRID = (180, 270)
BANDS = 12


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=512, help="2C of the block")
    parser.add_argument("--dtype", default="fp32", help="fp32 or bf16 (the feature rows)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fraction", type=float, default=25.0, help="mask, percent")
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    return_freed_memory_promptly()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    h, w = GRID
    c = args.channels
    rows = torch.randn(h * w, c).to(resolve_dtype(args.dtype, torch.device("cpu")))
    index = blob_mask(h, w, args.fraction / 100, seed=1).view(-1).bool().nonzero().squeeze(1)
    pixels = index.numel()
    start, end = torch.randn(pixels, 2) * 3, torch.randn(pixels, 2) * 3
    weight, bias, border = torch.randn(c, 9), torch.randn(c), torch.randn(c)
    corner_rows, corner_weights = sample_corners(
        (1, h, w), torch.zeros(pixels, dtype=torch.long), index // w, index % w, start, end, 9)

    def run(per_call: int) -> float:
        out = bias.expand(pixels, -1).clone()
        begin = time.perf_counter()
        for first in range(0, pixels, per_call):
            part = slice(first, first + per_call)
            accumulate_taps(out[part], rows, corner_rows[:, part], corner_weights[:, part],
                            weight, border)
        return time.perf_counter() - begin

    print(f"{pixels} masked pixels ({args.fraction:g} % blob mask) of a {h}x{w} grid, {c} "
          f"channels, {args.dtype}, {args.threads} threads; us per masked pixel")
    default = layers.CHUNK_BYTES
    with torch.inference_mode():
        for label, per_call in (("one call", pixels), (f"{BANDS} calls", -(-pixels // BANDS))):
            times = {chunk: [] for chunk in CHUNK_SIZES}
            for repeat in range(args.repeats + 1):  # round-robin: drift hits every size alike
                for chunk in CHUNK_SIZES:
                    layers.CHUNK_BYTES = chunk
                    seconds = run(per_call)
                    if repeat:  # the first round is the warm-up
                        times[chunk].append(seconds)
            cells = [f"{chunk >> 10} KiB {statistics.median(t) / pixels * 1e6:.2f}"
                     for chunk, t in times.items()]
            print(f"{label:9s}: " + " | ".join(cells), flush=True)
    layers.CHUNK_BYTES = default


if __name__ == "__main__":
    main()
