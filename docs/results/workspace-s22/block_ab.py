"""Stage-4 blocks of pruned `paper` at 2152x1436 inside the network, three ways, alternated in
one process (groups of 3 repeats, twice): ``base`` without a stage workspace (each block makes its
own tables; until 79ff558 by the old whole-set path, since then in a workspace of its own), ``ws`` with one StageWorkspace for the blocks (as M2ASStage now runs them),
``heap`` without a workspace but with glibc serving everything from the heap for the loop
(mallopt M_MMAP_MAX=0, trim threshold 1 GiB: the upper bound of what reusing pages can save;
session 21, docs/results/heap-reuse-s21/). ms per block, median (range) over 6 repeats.

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 OMP_NUM_THREADS=2 python block_ab.py 10,25,50 [blocks]
"""
import ctypes
import statistics
import sys
import time

import torch

from m2ae_core.benchmark.cell import make_inputs
from m2ae_core.benchmark.models import build_spec_model, parse_model_spec
from m2ae_core.m2as_banded import StageWorkspace
from m2ae_core.masked_conv import PrunePlan
from m2ae_core.memory import release_free_heap, return_freed_memory_promptly

return_freed_memory_promptly()
torch.set_num_threads(2)
libc = ctypes.CDLL(None)
libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
fractions = [float(f) for f in sys.argv[1].split(",")]
count = int(sys.argv[2]) if len(sys.argv) > 2 else 4
model = build_spec_model(parse_model_spec("paper-pruned"))
stage = model.encoders[3]
captured = {}
stage.register_forward_pre_hook(lambda m, a, k: captured.update(x=a[0].clone(), mask=a[1]),
                                with_kwargs=True)
for fraction in fractions:
    image, mask = make_inputs(1436, 2152, fraction, "cpu")
    times = {"base": [], "ws": [], "heap": []}
    with torch.inference_mode():
        model(image, mask=mask, pruned=True)
        x0 = captured["x"]
        info = stage.analyze(x0, captured["mask"])
        plan = PrunePlan.from_mask(info.mask > 0.5)
        blocks = stage.blocks()[:count]
        for mode in [m for m in list(times) * 2 for _ in range(3)]:
            x = x0.clone()
            release_free_heap()
            if mode == "heap":
                libc.mallopt(-4, 0)
                libc.mallopt(-1, 1 << 30)
            workspace = StageWorkspace() if mode == "ws" else None
            start = time.perf_counter()
            for block in blocks:
                x = block(x, info.mask, info.start, info.end, plan, True, True,
                          overwrite_input=True, workspace=workspace)
            times[mode].append((time.perf_counter() - start) / count * 1e3)
            del workspace
            if mode == "heap":
                libc.mallopt(-4, 65536)
                libc.mallopt(-1, 128 * 1024)
                libc.malloc_trim(0)
    print(f"{fraction:4.0f}% masked {plan.masked} dilated {plan.dilated}  " + "  ".join(
        f"{k} {statistics.median(v):6.1f} ({min(v):.0f}-{max(v):.0f})" for k, v in times.items()),
        flush=True)
