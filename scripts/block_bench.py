"""Time one stage-4 block of the `paper` preset, M2AS (pruned) against NAFNet, part by part.

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python scripts/block_bench.py [--threads 2] \
        [--fraction 10] [--repeats 15] [--dtype bf16]

(the allocator policy of the m2ae CLI and benchmark: huge pages, 16 MiB mmap threshold)

The grid is 2152x1436's stage-4 grid (180x270, 256 channels), random weights with every
branch active, a blob-shaped 10 % mask. Parts are timed separately on the same inputs (median
of --repeats after a warm-up); 'block' is the whole forward. For hot-spot hunting only: the
issue's numbers come from `m2ae bench`.
"""
from __future__ import annotations

import argparse

import torch

from m2ae_core.benchmark.machine import median_ms
from m2ae_core.benchmark.workload import activate_all_branches_, blob_mask
from m2ae_core.memory import return_freed_memory_promptly
from m2ae_core.layers import NAFBlock, simple_gate
from m2ae_core.m2as import M2ASBlock
from m2ae_core.masked_conv import PrunePlan
from m2ae_core.precision import resolve_dtype



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fraction", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--size", default="180x270", help="stage grid HxW")
    parser.add_argument("--dtype", default="fp32", help="fp32, bf16 or fp16")
    args = parser.parse_args()
    return_freed_memory_promptly()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    h, w = map(int, args.size.split("x"))
    c = args.channels
    naf, m2as = NAFBlock(c).eval(), M2ASBlock(c).eval()
    activate_all_branches_(naf), activate_all_branches_(m2as)
    dtype = resolve_dtype(args.dtype, torch.device("cpu"))
    naf, m2as = naf.to(dtype), m2as.to(dtype)
    # channels-last, as inside the network
    x = torch.randn(1, h, w, c).permute(0, 3, 1, 2).to(dtype)
    mask = blob_mask(h, w, args.fraction / 100, seed=1).view(1, 1, h, w).bool()
    start = (torch.randn(1, 2, h, w) * 2 * mask).to(dtype)
    end = (torch.randn(1, 2, h, w) * 2 * mask).to(dtype)
    plan = PrunePlan.from_mask(mask)

    with torch.inference_mode():
        mid = m2as.masked_spatial_mix(x, mask, plan)
        f4 = m2as.conv4(m2as.norm2(mid))
        f1 = m2as.norm1(x)
        parts = {
            "NAF block": lambda: naf(x),
            "M2AS block (pruned)": lambda: m2as(x, mask, start, end, plan, True, True),
            "NAF first half (+residual)": lambda: x + naf.beta * naf.spatial_mix(x),
            "NAF second half (+residual)": lambda: mid + naf.gamma * naf.conv5(
                simple_gate(naf.conv4(naf.norm2(mid)))),
            "M2AS second half (+residual)": lambda: m2as.motion_aware_half(
                mid, start, end, plan, True, True),
            "  unfolded (session 3)": lambda: mid + m2as.gamma * m2as.conv5(
                m2as.gated_deform_pruned(m2as.conv4(m2as.norm2(mid)), plan, start, end)),
            "plan (once per stage)": lambda: PrunePlan.from_mask(mask),
            "norm1": lambda: m2as.norm1(x),
            "NAF conv1+conv2+SG": lambda: simple_gate(naf.conv2(naf.conv1(f1))),
            "M2AS masked mix (pruned)": lambda: m2as.masked_spatial_mix(x, mask, plan),
            "norm2 + conv4": lambda: m2as.conv4(m2as.norm2(mid)),
            "NAF SG(f4)": lambda: simple_gate(f4),
            "M2AS gated deform (pruned)": lambda: m2as.gated_deform_pruned(f4, plan, start, end),
            "  static affine + SG only": lambda: m2as.dconv.static_gated_rows(
                f4.permute(0, 2, 3, 1)),
            "conv5": lambda: m2as.conv5(simple_gate(f4)),
        }
        print(f"{h}x{w} grid, {c} channels, {plan.masked / plan.total:.1%} masked "
              f"({plan.dilated / plan.total:.1%} dilated), {args.threads} threads, {dtype}")
        for name, fn in parts.items():
            print(f"{name:32s} {median_ms(fn, args.repeats):8.1f} ms")


if __name__ == "__main__":
    main()
