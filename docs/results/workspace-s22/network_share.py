"""Whole forwards of pruned `paper` at 2152x1436 with M2AS_BAND_SHARE 0.6 (session 21) and 0.9999
(bands for every partial mask; session 22 ships 1.0 with a strict comparison, the same rule)
alternated in one process; seconds and per-forward peak RSS."""
import sys, time, statistics, torch
from m2ae_core import m2as_banded
from m2ae_core.benchmark.cell import make_inputs
from m2ae_core.benchmark.machine import peak_rss_bytes, set_threads
from m2ae_core.benchmark.models import build_spec_model, parse_model_spec
from m2ae_core.memory import return_freed_memory_promptly
return_freed_memory_promptly(); set_threads(2)
model = build_spec_model(parse_model_spec("paper-pruned"))
for f in [float(v) for v in sys.argv[1].split(",")]:
    image, mask = make_inputs(1436, 2152, f, "cpu")
    T = {0.6: [], 0.9999: []}; P = {0.6: [], 0.9999: []}
    with torch.inference_mode():
        out = model(image, mask=mask, pruned=True)
        for _ in range(3):
            for share in T:
                m2as_banded.M2AS_BAND_SHARE = share
                with open("/proc/self/clear_refs", "w") as fh: fh.write("5")
                t0 = time.perf_counter(); out = model(image, mask=mask, pruned=True)
                T[share].append(time.perf_counter() - t0); P[share].append(peak_rss_bytes() / 2**20)
    print(f"{f:4.0f}% " + "  ".join(f"share {k}: {statistics.median(v):.2f} s ({' '.join(f'{t:.2f}' for t in v)}) peak {min(P[k]):.0f}-{max(P[k]):.0f}" for k, v in T.items()), flush=True)
