"""The taps' corner layout, pixel-major (old, written out here) vs tap-major, in a whole
banded M2AS block: one process, the old functions monkeypatched in, calls alternated.

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 OMP_NUM_THREADS=2 python \
        docs/results/taps-s26/layout_whole_block_ab.py PERCENT SCALE

Ran against commit 29b8b34 (TapTable took a channel count then; it takes the border since).
Output: layout_whole_block_ab.txt.
"""
import sys, time, statistics, torch
import torch.nn.functional as F
import m2ae_core.m2as_banded as mb
import m2ae_core.deform as dm
from m2ae_core.benchmark.workload import activate_all_branches_, blob_mask
from m2ae_core.m2as import M2ASBlock
from m2ae_core.masked_conv import PrunePlan
from m2ae_core.layers import cache_chunk, simple_gate
from m2ae_core.trajectory import trajectory_instants
from m2ae_core.memory import return_freed_memory_promptly

def old_sample_corners(shape, batch_index, ys, xs, start, end, taps):
    _, h, w = shape
    offsets = trajectory_instants(start, end, taps)
    sx = xs.to(offsets.dtype).unsqueeze(1) + offsets[..., 0]
    sy = ys.to(offsets.dtype).unsqueeze(1) + offsets[..., 1]
    return dm.bilinear_taps(sy, sx, h, w, batch_index.unsqueeze(1))

def old_accumulate(out, rows, corner_rows, corner_weights, weight, border=None):
    tap_weights = weight.to(out.dtype).t().contiguous()
    border_taps = None if border is None else tap_weights * border.to(out.dtype)
    sw = corner_weights.to(rows.dtype)
    outside = None if border_taps is None else 1.0 - corner_weights.sum(-1)
    pixels = corner_rows.shape[0]
    step = cache_chunk(out.shape[1], out.device)
    for begin in range(0, pixels, step):
        chunk = slice(begin, min(begin + step, pixels)); target = out[chunk]
        for tap in range(tap_weights.shape[0]):
            s = F.embedding_bag(corner_rows[chunk, tap], rows, mode="sum", per_sample_weights=sw[chunk, tap])
            target.addcmul_(s, tap_weights[tap])
        if outside is not None:
            target.addmm_(outside[chunk], border_taps)

class OldReads:
    def __init__(self, plan, start, end, taps, dtype):
        w = plan.shape[2]
        corners, self.corner_weights = old_sample_corners(plan.shape, plan.item, plan.row, plan.col,
            start[plan.item, :, plan.row, plan.col], end[plan.item, :, plan.row, plan.col], taps)
        self.reach = corners.flatten(1).amax(1) // w
        touched = torch.zeros(plan.total, dtype=torch.bool); touched[corners.flatten()] = True
        self.needed = touched.nonzero().squeeze(1)
        position = torch.empty(plan.total, dtype=torch.long)
        position[self.needed] = torch.arange(self.needed.numel())
        self.corner_rows = position[corners]

def old_gated_taps(self, fold, first, last):
    reads = self.reads
    sampled = fold.kept_bias.to(reads.corner_weights.dtype).expand(last - first, -1).clone()
    old_accumulate(sampled, self.table, reads.corner_rows[first:last], reads.corner_weights[first:last], fold.taps, fold.border)
    return simple_gate(sampled.to(self.table.dtype))

new_gated, new_reads = mb.TapTable.gated_taps, mb.TapReads
def use(old):
    mb.TapTable.gated_taps = old_gated_taps if old else new_gated
    mb.TapReads = OldReads if old else new_reads

return_freed_memory_promptly(); torch.set_num_threads(2); torch.manual_seed(0)
h, w, c = 180, 270, 256
block = M2ASBlock(c).eval(); activate_all_branches_(block)
x0 = torch.randn(1, h, w, c).permute(0, 3, 1, 2)
pct, scale = float(sys.argv[1]), float(sys.argv[2])
mask = blob_mask(h, w, pct / 100, seed=1).view(1, 1, h, w).bool()
start, end = torch.randn(1, 2, h, w) * scale * mask, torch.randn(1, 2, h, w) * scale * mask
plan = PrunePlan.from_mask(mask)
ws = {True: mb.StageWorkspace(), False: mb.StageWorkspace()}
res = {True: [], False: []}
with torch.inference_mode():
    outs = {}
    for old in (True, False):
        use(old); outs[old] = block(x0.clone(), mask, start, end, plan, True, True, overwrite_input=True, workspace=ws[old])
    print("max diff", (outs[True] - outs[False]).abs().max().item())
    xs = {True: x0.clone(), False: x0.clone()}
    for rep in range(12):
        for old in ((True, False) if rep % 2 else (False, True)):
            use(old)
            s = time.perf_counter()
            xs[old] = block(xs[old], mask, start, end, plan, True, True, overwrite_input=True, workspace=ws[old])
            res[old].append(time.perf_counter() - s); xs[old].mul_(0.5)
print(f"{pct:g} % scale {scale:g}: old {statistics.median(res[True][2:])*1e3:.1f} new {statistics.median(res[False][2:])*1e3:.1f} ms; old {[round(v*1e3) for v in res[True]]} new {[round(v*1e3) for v in res[False]]}")
