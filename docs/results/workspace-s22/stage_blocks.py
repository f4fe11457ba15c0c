import sys, time, torch, statistics, resource
from collections import defaultdict
from m2ae_core.benchmark.cell import make_inputs
from m2ae_core.benchmark.machine import set_threads
from m2ae_core.benchmark.models import build_spec_model, parse_model_spec
from m2ae_core.memory import return_freed_memory_promptly
from m2ae_core import masked_conv
return_freed_memory_promptly(); set_threads(2)
import os, ctypes
if os.environ.get("TRIM"):
    libc = ctypes.CDLL(None); libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int); print("trim", libc.mallopt(-1, int(os.environ["TRIM"])))
model = build_spec_model(parse_model_spec("paper-pruned"))
stage = model.encoders[3]
T = defaultdict(list); st = {}
def hook(name, m):
    m.register_forward_pre_hook(lambda mod, a, n=name: st.__setitem__(n, (time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt)))
    def post(mod, a, o, n=name):
        T[n].append(time.perf_counter() - st[n][0]); T["F" + n].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - st[n][1])
    m.register_forward_hook(post)
hook("stage", stage)
for i, b in enumerate(stage.blocks()):
    hook(f"b{i}", b)
orig = masked_conv.PrunePlan.from_mask.__func__
def timed(cls, *a, **k):
    t = time.perf_counter(); r = orig(cls, *a, **k); T["plan"].append(time.perf_counter() - t); return r
masked_conv.PrunePlan.from_mask = classmethod(timed)
fr = [float(f) for f in sys.argv[1].split(",")]
inputs = {f: make_inputs(1436, 2152, f, "cpu") for f in fr}
res = defaultdict(list)
with torch.inference_mode():
    for r in range(4):
        for f in fr:
            image, mask = inputs[f]; T.clear()
            model(image, mask=mask, pruned=True)
            if r:
                blocks = [T[f"b{i}"][0] for i in range(stage.num_blocks)]
                res[(f, "stage")].append(T["stage"][0]); res[(f, "plan")].append(T["plan"][0])
                res[(f, "blocks")].append(sum(blocks)); res[(f, "first")].append(blocks[0])
                res[(f, "rest_median")].append(statistics.median(blocks[1:]))
                res[(f, "faults/block")].append(statistics.median([T[f"Fb{i}"][0] for i in range(1, stage.num_blocks)]) / 1e3)
                res[(f, "faults_stage")].append(T["Fstage"][0] / 1e3)
for f in fr:
    print(f"{f:4.0f}% " + "  ".join(f"{k} {statistics.median(res[(f, k)]) * 1e3:.1f}" for k in ("stage", "plan", "blocks", "first", "rest_median", "faults/block", "faults_stage")) + " ms", flush=True)
