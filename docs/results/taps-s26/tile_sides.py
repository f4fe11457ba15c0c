"""Side of the pruned depthwise 3x3's tiles (MIX_TILE), session 26.

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 OMP_NUM_THREADS=2 python docs/results/taps-s26/tile_sides.py 5,10,25

The `paper` model's stage-4 input at 2152x1436 with the benchmark's blob mask at each share,
the conv1 table of its dilated set, then masked_gated_depthwise under plans of tile sides
4..16 (the results checked equal first): median ms of nine calls, twice. Output:
tile_sides.txt.
"""
import sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "scripts"))
import argparse, time, statistics, torch
from forward_setup import add_forward_arguments, prepare_forward
from m2ae_core.masked_conv import PrunePlan, masked_gated_depthwise, pointwise_table
from m2ae_core.layers import pixel_rows
def t(fn, n=9):
    fn(); xs = []
    for _ in range(n):
        s = time.perf_counter(); fn(); xs.append(time.perf_counter() - s)
    return statistics.median(xs) * 1e3
for fr in sys.argv[1].split(","):
    p = argparse.ArgumentParser(); add_forward_arguments(p)
    f = prepare_forward(p.parse_args(["paper-pruned", "--fraction", fr]))
    m = f.model; sm = m._stage_masks(f.mask)[3]
    with torch.inference_mode():
        padded, x = m._intro(f.image)
        for e, d in zip(m.encoders[:3], m.downs[:3]): x = d(e(x))
        block = m.encoders[3].blocks()[0]
        plans = {s: PrunePlan.from_mask(sm, tile=s) for s in (4, 6, 8, 10, 12, 16)}
        table = pointwise_table(pixel_rows(block.norm1(x)).index_select(0, plans[12].table_index), block.conv1)
        ref = masked_gated_depthwise(table, plans[12], block.conv2)
        for s, pl in plans.items():
            assert torch.allclose(masked_gated_depthwise(table, pl, block.conv2), ref, atol=1e-5)
        for rep in range(2):
            print(fr, "%", "  ".join(f"tile {s}: {t(lambda: masked_gated_depthwise(table, pl, block.conv2)):.2f} ms ({pl.tiles.count} tiles)" for s, pl in plans.items()), flush=True)
