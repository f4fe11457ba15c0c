"""Whole-map against banded M2AS blocks at high masked shares, 4 stage-4 blocks of pruned
`paper` at 2152x1436 on the stage's captured input, the banded ones sharing a StageWorkspace;
alternated in one process, ms per block, median (range) of 6.

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 OMP_NUM_THREADS=2 python crossover.py 50,75,90,100,full

``full``: an all-ones mask (every grid pixel masked); the blob masks' "100 %" covers 99.6 %.
"""
import statistics
import sys
import time

import torch

from m2ae_core.benchmark.cell import make_inputs
from m2ae_core.benchmark.models import build_spec_model, parse_model_spec
from m2ae_core.m2as_banded import StageWorkspace, m2as_block_banded
from m2ae_core.masked_conv import PrunePlan
from m2ae_core.memory import release_free_heap, return_freed_memory_promptly

return_freed_memory_promptly()
torch.set_num_threads(2)
model = build_spec_model(parse_model_spec("paper-pruned"))
stage = model.encoders[3]
captured = {}
stage.register_forward_pre_hook(lambda m, a, k: captured.update(x=a[0].clone(), mask=a[1]),
                                with_kwargs=True)
for token in sys.argv[1].split(","):
    full = token == "full"
    image, mask = make_inputs(1436, 2152, 100.0 if full else float(token), "cpu")
    times = {"whole": [], "banded+workspace": []}
    with torch.inference_mode():
        model(image, mask=mask, pruned=True)
        x0 = captured["x"]
        stage_mask = torch.ones_like(captured["mask"]) if full else captured["mask"]
        info = stage.analyze(x0, stage_mask)
        plan = PrunePlan.from_mask(info.mask > 0.5)
        blocks = stage.blocks()[:4]
        for mode in [m for m in list(times) * 3 for _ in range(2)]:
            x = x0.clone()
            release_free_heap()
            workspace = StageWorkspace()
            start = time.perf_counter()
            for block in blocks:
                if mode == "whole":
                    mid = block.masked_spatial_mix(x, info.mask, plan)
                    x = block.motion_aware_half(mid, info.start, info.end, plan, True, True)
                else:
                    x = m2as_block_banded(block, x, plan, info.start, info.end,
                                          overwrite_input=True, workspace=workspace)
            times[mode].append((time.perf_counter() - start) / len(blocks) * 1e3)
            del workspace
    print(f"{token:>5}: masked share {plan.masked / plan.total:.3f}  " + "  ".join(
        f"{k} {statistics.median(v):6.1f} ({min(v):.0f}-{max(v):.0f})" for k, v in times.items()),
        flush=True)
