import os, sys, time, torch, statistics
from m2ae_core.benchmark.cell import make_inputs
from m2ae_core.benchmark.machine import peak_rss_bytes, set_threads
from m2ae_core.benchmark.models import build_spec_model, parse_model_spec
from m2ae_core.memory import return_freed_memory_promptly
from m2ae_core import m2as
return_freed_memory_promptly(); set_threads(2)
name = sys.argv[1]; f = float(sys.argv[2]); rounds = int(sys.argv[3])
spec = parse_model_spec(name); model = build_spec_model(spec)
image, mask = make_inputs(1436, 2152, f if spec.uses_mask else None, "cpu")
variants = sys.argv[4].split(",")
res = {v: [] for v in variants}
def setv(v):
    m2as.REUSE = v in ("m2as", "all")
    if v == "all": os.environ["M2AE_REUSE_ALL"] = "1"
    else: os.environ.pop("M2AE_REUSE_ALL", None)
with torch.inference_mode():
    out = model(image, mask=mask, pruned=spec.mode != "dense")
    for r in range(rounds):
        for v in (variants if r % 2 == 0 else variants[::-1]):
            setv(v)
            open("/proc/self/clear_refs", "w").write("5")
            t = time.perf_counter(); out = model(image, mask=mask, pruned=spec.mode != "dense"); t = time.perf_counter() - t
            res[v].append((t, peak_rss_bytes() / 2**20))
for v in variants:
    print(f"{name} {f:5.1f}% {v:5}: wall {' '.join(f'{t:.2f}' for t, _ in res[v])} (median {statistics.median(t for t, _ in res[v]):.2f}) peak MiB {' '.join(f'{p:.0f}' for _, p in res[v])}", flush=True)
