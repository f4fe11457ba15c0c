import sys, os, time, torch, statistics
from collections import deque, defaultdict
from m2ae_core.benchmark.cell import make_inputs
from m2ae_core.benchmark.models import build_spec_model, parse_model_spec
from m2ae_core.memory import return_freed_memory_promptly, release_free_heap
from m2ae_core.masked_conv import PrunePlan, masked_gated_depthwise, pointwise_table
from m2ae_core import m2as_banded as mb
from m2ae_core.layers import linear_rows, pixel_rows
from m2ae_core.banded import band_rows, bands
return_freed_memory_promptly(); torch.set_num_threads(2)
from m2ae_core import layers
if os.environ.get("CB"): layers.CHUNK_BYTES = int(os.environ["CB"])
T = defaultdict(list)
def banded(block, x, plan, start, end):
    t0 = time.perf_counter()
    _, c, h, w = x.shape
    rows = band_rows(x, 2 * c)
    masked_mix = mb._masked_mix(block, x, plan); t1 = time.perf_counter()
    attention, mix = mb._channel_attention(block, x, plan, masked_mix, rows); t2 = time.perf_counter()
    out = x
    for top, bottom in bands(h, rows):
        band = mb._mix_band(block, x, plan, masked_mix, top, bottom)
        out[:, :, top:bottom] = torch.addcmul(x[:, :, top:bottom], block.beta, block.conv3(band * attention))
    del mix, band, masked_mix, x
    t3 = time.perf_counter()
    fold = block.folded_conv4()
    taps = mb.TapTable(plan, start, end, fold, 2 * c, out.dtype) if plan.masked else None
    t4 = time.perf_counter()
    pending = deque(); tt = [0.0]
    def finish(top, bottom, gated, first, last):
        if last > first:
            a = time.perf_counter()
            gated.index_copy_(0, plan.mask_index[first:last] - top * w, taps.gated_taps(fold, first, last))
            tt[0] += time.perf_counter() - a
        band = out[:, :, top:bottom]
        update = block.conv5(gated.view(1, bottom - top, w, c).permute(0, 3, 1, 2))
        band.copy_(torch.addcmul(band, block.gamma, update))
    for top, bottom in bands(h, rows):
        folded = linear_rows(pixel_rows(block.norm2(out[:, :, top:bottom])), fold.weight, fold.bias)
        first, last = mb._range_of(plan.mask_index, top * w, bottom * w)
        reach = -1
        if taps is not None:
            taps.keep(folded, top * w, bottom * w)
            if last > first:
                reach = int(taps.reach[first:last].max())
        pending.append((reach, (top, bottom, fold.gate_(folded), first, last)))
        while pending and pending[0][0] < bottom:
            finish(*pending.popleft()[1])
    for _, a in pending:
        finish(*a)
    t5 = time.perf_counter()
    for k, v in zip(["mix", "attn(pass1)", "pass2", "fold+taptable", "pass3", "  taps"], [t1-t0, t2-t1, t3-t2, t4-t3, t5-t4, tt[0]]):
        T[k].append(v * 1e3)
    return out
fractions = [float(f) for f in sys.argv[1].split(",")]
model = build_spec_model(parse_model_spec("paper-pruned"))
stage = model.encoders[3]
cap = {}
stage.register_forward_pre_hook(lambda m, a, k: cap.update(x=a[0].clone(), mask=a[1]), with_kwargs=True)
for f in fractions:
    image, mask = make_inputs(1436, 2152, f, "cpu")
    with torch.inference_mode():
        model(image, mask=mask, pruned=True)
        x0 = cap["x"]; info = stage.analyze(x0, cap["mask"]); plan = PrunePlan.from_mask(info.mask > 0.5)
        bl = stage.blocks()[:4]
        for rep in range(4):
            if rep == 1: T.clear()
            x = x0.clone(); release_free_heap()
            for b in bl:
                x = banded(b, x, plan, info.start, info.end)
    print(f"{f:4.0f}%", " ".join(f"{k} {statistics.median(v):6.1f}" for k, v in T.items()), flush=True)
