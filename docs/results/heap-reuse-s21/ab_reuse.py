import sys, time, torch, statistics
from m2ae_core.benchmark.cell import make_inputs
from m2ae_core.benchmark.machine import peak_rss_bytes, set_threads
from m2ae_core.benchmark.models import build_spec_model, parse_model_spec
from m2ae_core.memory import return_freed_memory_promptly
from m2ae_core import m2as
return_freed_memory_promptly(); set_threads(2)
spec = parse_model_spec("paper-pruned"); model = build_spec_model(spec)
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
for f in [float(x) for x in sys.argv[1].split(",")]:
    image, mask = make_inputs(1436, 2152, f, "cpu")
    res = {False: [], True: []}
    out = None
    with torch.inference_mode():
        out = model(image, mask=mask, pruned=True)
        for r in range(rounds):
            for reuse in (False, True) if r % 2 == 0 else (True, False):
                m2as.REUSE = reuse
                open("/proc/self/clear_refs", "w").write("5")
                t = time.perf_counter(); out = model(image, mask=mask, pruned=True); t = time.perf_counter() - t
                res[reuse].append((t, peak_rss_bytes() / 2**20))
    for reuse in (False, True):
        print(f"{f:5.1f}% reuse={reuse!s:5}: wall {' '.join(f'{t:.2f}' for t, _ in res[reuse])} (median {statistics.median(t for t, _ in res[reuse]):.2f}) peak MiB {' '.join(f'{p:.0f}' for _, p in res[reuse])}", flush=True)
