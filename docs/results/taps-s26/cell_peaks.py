"""Peak RSS (VmHWM, never reset) of one process set up like a `m2ae bench` cell, after each of
four forwards at 2152x1436 (session 26).

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 OMP_NUM_THREADS=2 python \
        docs/results/taps-s26/cell_peaks.py MODEL PERCENT [keep|image-only|drop]

keep: the previous forward's output stays alive during the next, as in `m2ae bench`;
image-only: only its image; drop: nothing. Output: cell_peaks.txt.
"""
import sys, torch
from m2ae_core.benchmark.cell import make_inputs
from m2ae_core.benchmark.machine import peak_rss_bytes, set_threads
from m2ae_core.benchmark.models import build_spec_model, parse_model_spec
from m2ae_core.memory import return_freed_memory_promptly
from m2ae_core.procfs import kib_field_bytes
def rss():
    return kib_field_bytes("/proc/self/status", "VmRSS") >> 20
return_freed_memory_promptly(); set_threads(2)
spec = parse_model_spec(sys.argv[1]); frac = float(sys.argv[2])
model = build_spec_model(spec)
print("built", rss(), peak_rss_bytes() >> 20)
image, mask = make_inputs(1436, 2152, frac if spec.uses_mask else None, "cpu")
print("inputs", rss(), peak_rss_bytes() >> 20)
out = None
with torch.inference_mode():
    for i in range(4):
        if len(sys.argv) > 3 and sys.argv[3] == "image-only" and out is not None:
            out = out.image
        elif len(sys.argv) > 3 and sys.argv[3] == "drop":
            out = None
        out = model(image, mask=mask, pruned=spec.mode != "dense")
        print("forward", i, "rss", rss(), "hwm", peak_rss_bytes() >> 20)
