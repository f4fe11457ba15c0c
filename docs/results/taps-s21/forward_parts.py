import sys, time, torch, statistics
from collections import defaultdict
from m2ae_core.benchmark.cell import make_inputs
from m2ae_core.benchmark.machine import set_threads
from m2ae_core.benchmark.models import build_spec_model, parse_model_spec
from m2ae_core.memory import return_freed_memory_promptly
return_freed_memory_promptly(); set_threads(2)
model = build_spec_model(parse_model_spec("paper-pruned"))
T = defaultdict(list); st = {}
for name, m in model.named_modules():
    if name.count(".") == 1 and (name.startswith("encoders") or name.startswith("decoders") or name.startswith("ups") or name.startswith("downs")) or name in ("intro", "ending", "middle_blks"):
        m.register_forward_pre_hook(lambda mod, a, n=name: st.__setitem__(n, time.perf_counter()))
        m.register_forward_hook(lambda mod, a, o, n=name: T[n].append(time.perf_counter() - st[n]))
fr = [float(f) for f in sys.argv[1].split(",")]
inputs = {f: make_inputs(1436, 2152, f, "cpu") for f in fr}
tot = defaultdict(list)
with torch.inference_mode():
    out = None
    for r in range(4):
        for f in fr:
            image, mask = inputs[f]
            T.clear()
            t = time.perf_counter(); out = model(image, mask=mask, pruned=True); t = time.perf_counter() - t
            if r: 
                tot[f].append(t)
                for k, v in T.items(): tot[(f, k)].append(sum(v))
for f in fr:
    print(f"{f}%: total {statistics.median(tot[f]):.2f} " + " ".join(f"{k}={statistics.median(tot[(f,k)]):.2f}" for k in sorted({k for (ff, k) in [x for x in tot if isinstance(x, tuple)] if ff == f})))
