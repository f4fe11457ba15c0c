import gc, sys, torch
from m2ae_core.benchmark.cell import make_inputs
from m2ae_core.benchmark.machine import set_threads
from m2ae_core.benchmark.models import build_spec_model, parse_model_spec
from m2ae_core.memory import return_freed_memory_promptly
return_freed_memory_promptly(); set_threads(2)
spec = parse_model_spec(sys.argv[1])
model = build_spec_model(spec)
image, mask = make_inputs(1436, 2152, 10 if spec.uses_mask else None, "cpu")
params = {p.data_ptr() for p in model.parameters()} | {b.data_ptr() for b in model.buffers()}
def live():
    seen = {}
    for o in gc.get_objects():
        if torch.is_tensor(o):
            try:
                s = o.untyped_storage()
            except Exception:
                continue
            seen[s.data_ptr()] = (s.nbytes(), tuple(o.shape), o.dtype, s.data_ptr() in params)
    return seen
with torch.inference_mode():
    out = model(image, mask=mask, pruned=spec.mode != "dense")
    l = live()
tot = sum(v[0] for v in l.values()); ptot = sum(v[0] for v in l.values() if v[3])
print(sys.argv[1], "live MB", tot/1e6, "params MB", ptot/1e6)
for k, v in sorted(l.items(), key=lambda kv: -kv[1][0])[:12]:
    print(v)
print("output fields", [f for f in vars(out)] if hasattr(out, '__dict__') else type(out))
