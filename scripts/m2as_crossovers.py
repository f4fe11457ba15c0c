"""The two crossovers of the pruned M2AS block, measured on one stage-4 block of `paper`.

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python scripts/m2as_crossovers.py \
        [--fractions 0 10 25 50 75 90 100] [--threads 2] [--repeats 7]

For each blob-mask share it prints, in ms (median of --repeats after a warm-up):
- the mask-aware mix (conv1 + depthwise 3x3 + gate) pruned on the mask's tiles against the
  dense mix: where ``masked_conv.DENSE_MIX_SHARE`` belongs;
- the whole block on the whole map against the block in bands of rows (twice each,
  alternated): where ``m2as_banded.M2AS_BAND_SHARE`` belongs; the NAF block for scale. The
  banded block here makes its tables afresh, as a stage's first block does; the later blocks
  of a stage reuse them (``StageWorkspace``), which session 22 measured on 4 blocks with
  docs/results/workspace-s22/crossover.py.
Grid: 2152x1436's stage-4 grid (180x270, 256 channels), random weights with every branch
active, trajectories of ~2 px on the mask. For choosing thresholds; the issue's numbers come
from `m2ae bench`.
"""
from __future__ import annotations

import argparse

import torch

from m2ae_core.benchmark.machine import median_ms
from m2ae_core.benchmark.workload import activate_all_branches_, blob_mask
from m2ae_core.layers import NAFBlock, pixel_rows, simple_gate
from m2ae_core.m2as import M2ASBlock
from m2ae_core.m2as_banded import m2as_block_banded
from m2ae_core.masked_conv import PrunePlan, masked_gated_depthwise, pointwise_table
from m2ae_core.memory import return_freed_memory_promptly


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fractions", type=float, nargs="+",
                        default=[0, 10, 25, 50, 75, 90, 100])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    return_freed_memory_promptly()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    h, w, c = 180, 270, 256
    block = activate_all_branches_(M2ASBlock(c).eval())
    naf = activate_all_branches_(NAFBlock(c).eval())
    x = torch.randn(1, h, w, c).permute(0, 3, 1, 2)  # channels-last, as in the network
    print(f"{h}x{w} grid, {c} channels, {args.threads} threads; ms, median of {args.repeats}")
    print(f"{'masked':>7} | {'mix pruned':>10} {'mix dense':>9} | "
          f"{'block whole':>15} {'block banded':>15} {'NAF block':>9}")
    with torch.inference_mode():
        f1 = block.norm1(x)
        rows = pixel_rows(f1)
        for fraction in args.fractions:
            mask = blob_mask(h, w, fraction / 100, seed=1).view(1, 1, h, w).bool()
            start = torch.randn(1, 2, h, w) * 2 * mask
            end = torch.randn(1, 2, h, w) * 2 * mask
            plan = PrunePlan.from_mask(mask)

            def mix_pruned():
                if not plan.masked:
                    return rows.square()
                table = pointwise_table(rows.index_select(0, plan.table_index), block.conv1)
                return masked_gated_depthwise(table, plan, block.conv2)

            def whole():
                mid = block.masked_spatial_mix(x, mask, plan)
                return block.motion_aware_half(mid, start, end, plan, True, True)

            def banded():
                return m2as_block_banded(block, x, plan, start, end)

            pruned_ms = median_ms(mix_pruned, args.repeats)
            dense_ms = median_ms(lambda: simple_gate(block.conv2(block.conv1(f1))),
                                 args.repeats)
            times = [median_ms(fn, args.repeats) for fn in (whole, banded, whole, banded)]
            naf_ms = median_ms(lambda: naf(x), args.repeats)
            print(f"{plan.masked / plan.total:7.1%} | {pruned_ms:10.1f} {dense_ms:9.1f} | "
                  f"{times[0]:7.1f} {times[2]:7.1f} {times[1]:7.1f} {times[3]:7.1f} "
                  f"{naf_ms:9.1f}", flush=True)


if __name__ == "__main__":
    main()
