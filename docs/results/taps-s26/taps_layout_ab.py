"""The taps' gathers with pixel-major ([Q, taps, 4], until session 26) and tap-major
([taps, Q, 4]) bilinear corners, band by band as the banded block calls them.

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 OMP_NUM_THREADS=2 python docs/results/taps-s26/taps_layout_ab.py PERCENT SCALE

A `paper` stage-4 block's grid (180x270, 512 channels in the table), a blob mask at PERCENT,
trajectories randn * SCALE on it. Both loops are written out here (the old one as it was in
m2ae_core/deform.py), reading one TapTable; the results are checked equal. Output:
taps_layout_ab.txt.
"""
import sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "scripts"))
import time, statistics, torch
import torch.nn.functional as F
from m2ae_core.benchmark.workload import activate_all_branches_, blob_mask
from m2ae_core.m2as import M2ASBlock
from m2ae_core.masked_conv import PrunePlan
from m2ae_core.m2as_banded import StageWorkspace, TapTable, _range_of
from m2ae_core.banded import band_rows, bands
from m2ae_core.layers import linear_rows, pixel_rows, simple_gate, cache_chunk
from m2ae_core.memory import return_freed_memory_promptly
return_freed_memory_promptly(); torch.set_num_threads(2); torch.manual_seed(0)
pct, scale = float(sys.argv[1]), float(sys.argv[2])
h, w, c = 180, 270, 256
block = M2ASBlock(c).eval(); activate_all_branches_(block)
x = torch.randn(1, h, w, c).permute(0, 3, 1, 2)
mask = blob_mask(h, w, pct / 100, seed=1).view(1, 1, h, w).bool()
start, end = torch.randn(1, 2, h, w) * scale * mask, torch.randn(1, 2, h, w) * scale * mask
plan = PrunePlan.from_mask(mask)
def t(fn, n=9):
    fn(); xs = []
    for _ in range(n):
        s = time.perf_counter(); fn(); xs.append(time.perf_counter() - s)
    return statistics.median(xs) * 1e3
with torch.inference_mode():
    ws = StageWorkspace()
    reads = ws.tap_reads(plan, start, end, 9, x.dtype)
    fold = block.folded_conv4()
    folded = linear_rows(pixel_rows(block.norm2(x)), fold.weight, fold.bias)
    tt = TapTable(reads, fold.border, x.dtype, ws); tt.keep(folded, 0, h * w)
    table = tt.table
    rows = band_rows(x, 2 * c)
    spans = [s for s in (_range_of(plan.mask_index, a * w, b * w) for a, b in bands(h, rows)) if s[1] > s[0]]
    tapw = fold.taps.t().contiguous(); border_taps = tapw * fold.border
    cr_t, cw_t = reads.corner_rows, reads.corner_weights
    cr_p, cw_p = cr_t.permute(1, 0, 2).contiguous(), cw_t.permute(1, 0, 2).contiguous()
    def loop(cr, cw, tap_major):
        res = []
        for a, b in spans:
            out = fold.kept_bias.expand(b - a, -1).clone()
            if tap_major:
                r, wt = cr[:, a:b], cw[:, a:b]; outside = (1.0 - wt.sum(-1)).t()
            else:
                r, wt = cr[a:b], cw[a:b]; outside = 1.0 - wt.sum(-1)
            n = b - a; step = cache_chunk(out.shape[1], out.device)
            for s0 in range(0, n, step):
                ch = slice(s0, min(s0 + step, n)); tg = out[ch]
                for k in range(9):
                    if tap_major:
                        sm = F.embedding_bag(r[k, ch], table, mode="sum", per_sample_weights=wt[k, ch])
                    else:
                        sm = F.embedding_bag(r[ch, k], table, mode="sum", per_sample_weights=wt[ch, k])
                    tg.addcmul_(sm, tapw[k])
                tg.addmm_(outside[ch], border_taps)
            res.append(simple_gate(out))
        return res
    old = lambda: loop(cr_p, cw_p, False)
    new = lambda: loop(cr_t, cw_t, True)
    print("max diff", max((p - q).abs().max().item() for p, q in zip(old(), new())))
    for rep in range(4):
        print(f"{pct:g} % scale {scale:g}: old {t(old):.2f} new {t(new):.2f} ms ({plan.masked} px, {len(spans)} bands)", flush=True)
