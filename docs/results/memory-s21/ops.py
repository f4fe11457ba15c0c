import torch
from torch.utils._python_dispatch import TorchDispatchMode
from m2ae_core.benchmark.cell import make_inputs
from m2ae_core.benchmark.models import build_spec_model, parse_model_spec
class Log(TorchDispatchMode):
    def __init__(s): super().__init__(); s.ops = {}
    def __torch_dispatch__(s, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        s.ops[str(func)] = s.ops.get(str(func), 0) + 1
        return out
res = {}
with torch.inference_mode():
    for name in ["nafnet-w32", "paper-pruned"]:
        spec = parse_model_spec(name); m = build_spec_model(spec)
        img, mask = make_inputs(512, 512, 10 if spec.uses_mask else None, "cpu")
        with Log() as L:
            m(img, mask=mask, pruned=spec.mode != "dense")
        res[name] = L.ops
extra = {k: v for k, v in res["paper-pruned"].items() if k not in res["nafnet-w32"]}
print(sorted(extra.items()))
print("nafnet ops", sorted(res["nafnet-w32"]))
