import sys, torch
from torch.profiler import profile, ProfilerActivity
from m2ae_core.benchmark.cell import make_inputs
from m2ae_core.benchmark.models import build_spec_model, parse_model_spec
from m2ae_core.memory import return_freed_memory_promptly, release_free_heap
from m2ae_core.masked_conv import PrunePlan
return_freed_memory_promptly(); torch.set_num_threads(2)
fractions = [float(f) for f in sys.argv[1].split(",")]
model = build_spec_model(parse_model_spec("paper-pruned"))
stage = model.encoders[3]
cap = {}
stage.register_forward_pre_hook(lambda m, a, k: cap.update(x=a[0].clone(), mask=a[1]), with_kwargs=True)
res = {}
for f in fractions:
    image, mask = make_inputs(1436, 2152, f, "cpu")
    with torch.inference_mode():
        model(image, mask=mask, pruned=True)
        x0 = cap["x"]; info = stage.analyze(x0, cap["mask"]); plan = PrunePlan.from_mask(info.mask > 0.5)
        bl = stage.blocks()[:4]
        def run():
            x = x0.clone(); release_free_heap()
            for b in bl:
                x = b(x, info.mask, info.start, info.end, plan, True, True, overwrite_input=True)
        run()
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            for _ in range(3): run()
    tab = {}
    for e in prof.key_averages(group_by_input_shape=True):
        tab[(e.key + str(e.input_shapes))[:110]] = e.self_cpu_time_total / 12 / 1e3  # ms per block
    res[f] = tab
    print(f"{f}% masked={plan.masked} dilated={plan.dilated} total ms/block {sum(tab.values()):.1f}", flush=True)
keys = sorted(set().union(*[r.keys() for r in res.values()]), key=lambda k: -max(r.get(k, 0) for r in res.values()))
print("op".ljust(40), " ".join(f"{f:>8}" for f in fractions))
for k in keys[:40]:
    print(k[:110].ljust(110), " ".join(f"{res[f].get(k,0):8.2f}" for f in fractions))
