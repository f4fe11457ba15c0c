"""The banded M2AS block's passes timed one by one, with the gated mix recomputed in pass 2
(as shipped) and kept whole between passes 1 and 2 (tried in session 26, not kept).

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 OMP_NUM_THREADS=2 python docs/results/taps-s26/mix_whole_ab.py

The block is written out here with timers (as m2ae_core/m2as_banded.py had it at 29b8b34),
on the `paper` model's stage-4 input at 2152x1436 with the benchmark's 10 % blob mask; medians
of seven calls after a warm-up, ms. Output: mix_whole_ab.txt.
"""
import sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "scripts"))
import argparse, time, statistics, torch
from collections import deque
from forward_setup import add_forward_arguments, prepare_forward
from m2ae_core.masked_conv import PrunePlan
from m2ae_core.m2as_banded import StageWorkspace, TapTable
from m2ae_core.m2as_banded import _masked_mix, _channel_attention, _mix_band, _range_of
from m2ae_core.banded import band_rows, bands
from m2ae_core.layers import linear_rows, pixel_rows
P = {}
def tick(name, t0):
    t1 = time.perf_counter(); P.setdefault(name, []).append(t1 - t0); return t1
def block_banded(block, x, plan, start, end, workspace):
    t = time.perf_counter()
    _, c, h, w = x.shape
    rows = band_rows(x, 2 * c)
    masked_mix = _masked_mix(block, x, plan, workspace); t = tick("mix", t)
    if KEEP:
        mix = workspace.take("mixmap", (h * w, c), x.dtype, x.device).view(1, h, w, c).permute(0, 3, 1, 2)
        total = torch.zeros(1, c, 1, 1)
        for top, bottom in bands(h, rows):
            b_ = mix[:, :, top:bottom]
            torch.square(block.norm1(x[:, :, top:bottom]), out=b_)
            if masked_mix is not None:
                first, last = _range_of(plan.mask_index, top * w, bottom * w)
                if last > first:
                    pixel_rows(b_).index_copy_(0, plan.mask_index[first:last] - top * w, masked_mix[first:last])
            total += b_.sum((2, 3), keepdim=True)
        attention = block.sca[1](total / (h * w))
    else:
        attention, mix = _channel_attention(block, x, plan, masked_mix, rows)
    t = tick("pass1", t)
    out = x
    for top, bottom in bands(h, rows):
        band = mix[:, :, top:bottom] if KEEP else _mix_band(block, x, plan, masked_mix, top, bottom)
        torch.addcmul(x[:, :, top:bottom], block.beta, block.conv3(band * attention), out=out[:, :, top:bottom])
    t = tick("pass2", t)
    fold = block.folded_conv4()
    taps = None
    if plan.masked:
        reads = workspace.tap_reads(plan, start, end, fold.taps.shape[1], out.dtype)
        taps = TapTable(reads, fold.border, out.dtype, workspace)
    t = tick("setup3", t)
    pending = deque()
    acc = {"taps": 0.0, "conv5": 0.0, "folded": 0.0, "gate": 0.0, "keep": 0.0}
    def finish(top, bottom, gated, first, last):
        s = time.perf_counter()
        if last > first:
            gated.index_copy_(0, plan.mask_index[first:last] - top * w, taps.gated_taps(fold, first, last))
        s2 = time.perf_counter(); acc["taps"] += s2 - s
        band = out[:, :, top:bottom]
        update = block.conv5(gated.view(1, bottom - top, w, c).permute(0, 3, 1, 2))
        band.addcmul_(block.gamma, update)
        acc["conv5"] += time.perf_counter() - s2
    for top, bottom in bands(h, rows):
        s = time.perf_counter()
        folded = linear_rows(pixel_rows(block.norm2(out[:, :, top:bottom])), fold.weight, fold.bias)
        s2 = time.perf_counter(); acc["folded"] += s2 - s
        first, last = _range_of(plan.mask_index, top * w, bottom * w)
        reach = -1
        if taps is not None:
            taps.keep(folded, top * w, bottom * w)
            if last > first:
                reach = int(taps.reads.reach[first:last].max())
        s3 = time.perf_counter(); acc["keep"] += s3 - s2
        g = fold.gate_(folded)
        acc["gate"] += time.perf_counter() - s3
        pending.append((reach, (top, bottom, g, first, last)))
        while pending and pending[0][0] < bottom:
            finish(*pending.popleft()[1])
    for _, a in pending: finish(*a)
    for k, v in acc.items(): P.setdefault(k, []).append(v)
    tick("pass3", t)
    return out
p = argparse.ArgumentParser(); add_forward_arguments(p)
f = prepare_forward(p.parse_args(["paper-pruned", "--fraction", "10"]))
m = f.model
sm = m._stage_masks(f.mask)[3]
plans = {"10": PrunePlan.from_mask(sm), "0": PrunePlan.from_mask(torch.zeros_like(sm))}
with torch.inference_mode():
    padded, x = m._intro(f.image)
    for e, d in zip(m.encoders[:3], m.downs[:3]): x = d(e(x))
    stage = m.encoders[3]
    info = stage.analyze(x, sm)
    block = stage.blocks()[0]
    ws = StageWorkspace()
    res = {}
    for rep in range(8):
      for KEEP in (False, True):
        for name, pl in plans.items():
            name = name + ("keep" if KEEP else "")
            P.clear()
            xx = x.clone(); s = time.perf_counter(); block_banded(block, xx, pl, info.start, info.end, ws); tot = time.perf_counter() - s
            if rep: res.setdefault(name, []).append(dict({k: v[0] for k, v in P.items()}, total=tot))
    for name, rs in res.items():
        print(name, " ".join(f"{k} {statistics.median(r[k] for r in rs)*1e3:.1f}" for k in rs[0]))
