"""Time one NAF block whole and in bands of rows, at the `paper` preset's map sizes for 2152x1436.

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python scripts/band_speed.py [--dtype bf16] \
        [--threshold-mib 16] [--repeats 5]

The process applies the m2ae allocator policy with ``--threshold-mib`` as its mmap threshold
(16, the policy's; 1, the policy before session 18), so the band temporaries come from the
heap or from fresh mappings. Random weights with every branch active; median of --repeats
after a warm-up. For choosing band sizes and the threshold; `m2ae bench` measures networks.
"""
from __future__ import annotations

import argparse

import torch

from m2ae_core import banded, layers
from m2ae_core.benchmark.machine import median_ms
from m2ae_core.benchmark.workload import activate_all_branches_
from m2ae_core.layers import NAFBlock
from m2ae_core.memory import return_freed_memory_promptly
from m2ae_core.precision import resolve_dtype

# (channels, height, width) of the full-resolution, half and stage-4 maps at 2152x1436
MAPS = ((32, 1440, 2160), (64, 720, 1080), (256, 180, 270))
BAND_MIB = (2, 8, 32, 128)



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--threshold-mib", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    return_freed_memory_promptly(args.threshold_mib << 20)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dtype = resolve_dtype(args.dtype, torch.device("cpu"))
    print(f"{dtype}, mmap threshold {args.threshold_mib} MiB, {args.threads} threads")
    for channels, height, width in MAPS:
        block = activate_all_branches_(NAFBlock(channels).eval()).to(dtype)
        x = torch.randn(1, height, width, channels).permute(0, 3, 1, 2).to(dtype)
        with torch.no_grad():
            layers.wants_bands = lambda *_: False  # the ordinary whole-map path
            whole = median_ms(lambda: block(x), args.repeats)
            layers.wants_bands = banded.wants_bands
            cells = [f"whole {whole:.0f} ms"]
            for mib in BAND_MIB:
                rows = banded.band_rows(x, 2 * channels, band_bytes=mib << 20)
                if rows >= height:
                    continue
                ms = median_ms(lambda: banded.naf_block_banded(block, x, rows), args.repeats)
                cells.append(f"{mib} MiB ({rows} rows) {ms:.0f} ms")
        print(f"{channels} x {height} x {width}: " + ", ".join(cells), flush=True)


if __name__ == "__main__":
    main()
