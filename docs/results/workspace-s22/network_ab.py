"""Pruned `paper` at 2152x1436: whole forwards with and without the M2AS stage's workspace
(without: until 79ff558 the old whole-set path, since then a workspace per block),
alternated in one process; seconds (median, each forward) and per-forward peak RSS (VmHWM
reset before each forward; the previous output stays alive, as in `m2ae bench`).

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 OMP_NUM_THREADS=2 python network_ab.py 10,25,50 [rounds]
"""
import statistics
import sys
import time

import torch

from m2ae_core import m2as
from m2ae_core.benchmark.cell import make_inputs
from m2ae_core.benchmark.machine import peak_rss_bytes, set_threads
from m2ae_core.benchmark.models import build_spec_model, parse_model_spec
from m2ae_core.memory import return_freed_memory_promptly

return_freed_memory_promptly()
set_threads(2)
fractions = [float(f) for f in sys.argv[1].split(",")]
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
with_workspace = m2as.StageWorkspace
model = build_spec_model(parse_model_spec("paper-pruned"))
for fraction in fractions:
    image, mask = make_inputs(1436, 2152, fraction, "cpu")
    times = {"without": [], "with": []}
    peaks = {"without": [], "with": []}
    with torch.inference_mode():
        output = model(image, mask=mask, pruned=True)
        for _ in range(rounds):
            for mode in times:
                m2as.StageWorkspace = with_workspace if mode == "with" else (lambda: None)
                with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
                    fh.write("5")
                start = time.perf_counter()
                output = model(image, mask=mask, pruned=True)
                times[mode].append(time.perf_counter() - start)
                peaks[mode].append(peak_rss_bytes() / 2 ** 20)
    m2as.StageWorkspace = with_workspace
    print(f"{fraction:4.0f}%  " + "  ".join(
        f"{k} {statistics.median(times[k]):.2f} s ({' '.join(f'{t:.2f}' for t in times[k])}), "
        f"peak {min(peaks[k]):.0f}-{max(peaks[k]):.0f} MiB" for k in times), flush=True)
