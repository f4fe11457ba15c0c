"""Time banded blocks as the network calls them: one block forward after another, in place.

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 OMP_NUM_THREADS=2 python scripts/banded_block_time.py \
        LABEL [--repeats 17]

Prints one line per call: an M2AS block of `paper`'s stage 4 (180x270 grid, 256 channels, as at
2152x1436) at 0 / 10 / 25 % masked (``--fractions``), handed its input (``overwrite_input``) with a stage
workspace, and NAF blocks of NAFNet-w32's stage 4 and of a half-resolution stage (720x1080,
64 channels) with a shared scratch map. Median ms over the forwards after two warm-ups. For
A/B runs of a change: alternate processes of the old and new code (``git stash``), the label
tells them apart. Random weights with every branch active; trajectories of a few pixels.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from m2ae_core.benchmark.workload import activate_all_branches_, blob_mask
from m2ae_core.layers import NAFBlock
from m2ae_core.m2as import M2ASBlock
from m2ae_core.m2as_banded import StageWorkspace
from m2ae_core.masked_conv import PrunePlan
from m2ae_core.memory import return_freed_memory_promptly


def median_ms(step, x: torch.Tensor, repeats: int) -> float:
    times = []
    for _ in range(repeats + 2):
        begin = time.perf_counter()
        x = step(x)
        times.append(time.perf_counter() - begin)
        x.mul_(0.5)  # keeps the values bounded over many residual additions
    return statistics.median(times[2:]) * 1e3


def channels_last_input(h: int, w: int, c: int) -> torch.Tensor:
    return torch.randn(1, h, w, c).permute(0, 3, 1, 2)


def m2as_times(repeats: int, fractions=(0, 10, 25)) -> list[str]:
    h, w, c = 180, 270, 256
    block = M2ASBlock(c).eval()
    activate_all_branches_(block)
    x = channels_last_input(h, w, c)
    lines = []
    for percent in fractions:
        mask = torch.zeros(1, 1, h, w, dtype=torch.bool)
        if percent == 100:
            mask = torch.ones(1, 1, h, w, dtype=torch.bool)
        elif percent:
            mask = blob_mask(h, w, percent / 100, seed=1).view(1, 1, h, w).bool()
        start, end = torch.randn(1, 2, h, w) * 2 * mask, torch.randn(1, 2, h, w) * 2 * mask
        plan, workspace = PrunePlan.from_mask(mask), StageWorkspace()

        def step(x, mask=mask, start=start, end=end, plan=plan, workspace=workspace):
            return block(x, mask, start, end, plan, True, True, overwrite_input=True,
                         workspace=workspace)

        lines.append(f"M2AS {percent} %: {median_ms(step, x.clone(), repeats):.1f} ms")
    return lines


def naf_times(repeats: int) -> list[str]:
    lines = []
    for h, w, c in ((180, 270, 256), (720, 1080, 64)):
        block = NAFBlock(c).eval()
        activate_all_branches_(block)
        x = channels_last_input(h, w, c)
        scratch = torch.empty_like(x)

        def step(x, block=block, scratch=scratch):
            return block(x, overwrite_input=True, scratch=scratch)

        lines.append(f"NAF {h}x{w}x{c}: {median_ms(step, x, repeats):.1f} ms")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("label", help="printed first: which code this run measures")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fractions", type=int, nargs="+", default=[0, 10, 25],
                        help="masked percent of the M2AS block's grid")
    args = parser.parse_args()
    return_freed_memory_promptly()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with torch.inference_mode():
        lines = m2as_times(args.repeats, args.fractions) + naf_times(args.repeats)
    print(args.label, " | ".join(lines), flush=True)


if __name__ == "__main__":
    main()
