"""The deformable taps of a `paper` stage-4 block at 2152x1436, compiled kernel vs PyTorch ops.

Session 27. Run: GLIBC_TUNABLES=glibc.malloc.hugetlb=1 OMP_NUM_THREADS=2 PYTHONPATH=. \
    python docs/results/s27/kernel_vs_ops.py
The 180x270 stage grid, 512 channels (2C), the masked pixels of the benchmark's blob mask,
random trajectories (start and end of standard deviation 3 px), corners outside the image on
a border row. Both paths take turns; median ms of 10 calls after two, and their largest
difference.
"""
import os
import statistics
import time

import torch

from m2ae_core import fused_taps
from m2ae_core.benchmark.workload import blob_mask
from m2ae_core.deform import accumulate_taps, sample_corners
from m2ae_core.memory import return_freed_memory_promptly

os.environ.setdefault(fused_taps.ENV_SWITCH, "auto")  # the kernel is opt-in
return_freed_memory_promptly()
torch.set_num_threads(2)
torch.manual_seed(0)
h, w, c = 180, 270, 512
print(f"fused tap kernel: {fused_taps.status()}")
for percent in (5, 10, 25, 50):
    rows = torch.randn(h * w + 1, c)
    index = blob_mask(h, w, percent / 100, seed=1).view(-1).nonzero().squeeze(1)
    pixels = index.numel()
    start, end = torch.randn(pixels, 2) * 3, torch.randn(pixels, 2) * 3
    weight, bias = torch.randn(c, 9), torch.randn(c)
    corner_rows, corner_weights = sample_corners(
        (1, h, w), torch.zeros(pixels, dtype=torch.long), index // w, index % w, start, end, 9,
        outside_row=h * w)

    def run(kernel_on):
        out = bias.expand(pixels, -1).clone()
        saved = fused_taps.kernel
        if not kernel_on:
            fused_taps.kernel = lambda: None
        try:
            begin = time.perf_counter()
            accumulate_taps(out, rows, corner_rows, corner_weights, weight)
            return time.perf_counter() - begin, out
        finally:
            fused_taps.kernel = saved

    times = {True: [], False: []}
    with torch.inference_mode():
        for repeat in range(12):
            for kernel_on in (True, False):
                seconds, out = run(kernel_on)
                if repeat >= 2:
                    times[kernel_on].append(seconds)
        difference = (run(True)[1] - run(False)[1]).abs().max().item()
    kernel_ms, ops_ms = (statistics.median(times[k]) * 1e3 for k in (True, False))
    print(f"{percent:>2} % ({pixels} masked pixels): kernel {kernel_ms:.2f} ms "
          f"({kernel_ms / pixels * 1e3:.2f} us/px), PyTorch ops {ops_ms:.2f} ms "
          f"({ops_ms / pixels * 1e3:.2f} us/px), {ops_ms / kernel_ms:.1f}x; "
          f"max |difference| {difference:.1e}", flush=True)
