"""Self time per aten op of 4 stage-4 blocks of pruned `paper` at 2152x1436, run on the stage's
captured input under torch.profiler (3 repeats after a warm-up), ms per block by blur share.

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 OMP_NUM_THREADS=2 python op_profile.py 0,50 [--shapes] [--workspace]

``--shapes``: one row per op and input shapes. ``--workspace``: the blocks share one
StageWorkspace, as M2ASStage runs them since session 22 (without: each makes its own tables).
Outputs: op_profile_shapes_before.txt (0,50 --shapes), op_profile_workspace.txt (0,1,5 --workspace).
"""
import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from m2ae_core.benchmark.cell import make_inputs
from m2ae_core.benchmark.models import build_spec_model, parse_model_spec
from m2ae_core.m2as_banded import StageWorkspace
from m2ae_core.masked_conv import PrunePlan
from m2ae_core.memory import release_free_heap, return_freed_memory_promptly

parser = argparse.ArgumentParser()
parser.add_argument("fractions")
parser.add_argument("--shapes", action="store_true")
parser.add_argument("--workspace", action="store_true")
args = parser.parse_args()
return_freed_memory_promptly()
torch.set_num_threads(2)
fractions = [float(f) for f in args.fractions.split(",")]
model = build_spec_model(parse_model_spec("paper-pruned"))
stage = model.encoders[3]
captured = {}
stage.register_forward_pre_hook(lambda m, a, k: captured.update(x=a[0].clone(), mask=a[1]),
                                with_kwargs=True)
results = {}
for fraction in fractions:
    image, mask = make_inputs(1436, 2152, fraction, "cpu")
    with torch.inference_mode():
        model(image, mask=mask, pruned=True)
        x0 = captured["x"]
        info = stage.analyze(x0, captured["mask"])
        plan = PrunePlan.from_mask(info.mask > 0.5)
        blocks = stage.blocks()[:4]

        def run():
            x = x0.clone()
            release_free_heap()
            workspace = StageWorkspace() if args.workspace else None
            for block in blocks:
                x = block(x, info.mask, info.start, info.end, plan, True, True,
                          overwrite_input=True, workspace=workspace)

        run()
        with profile(activities=[ProfilerActivity.CPU], record_shapes=args.shapes) as prof:
            for _ in range(3):
                run()
    table = {}
    for event in prof.key_averages(group_by_input_shape=args.shapes):
        name = (event.key + str(event.input_shapes))[:110] if args.shapes else event.key
        table[name] = event.self_cpu_time_total / (3 * len(blocks)) / 1e3  # ms per block
    results[fraction] = table
    print(f"{fraction}% masked={plan.masked} dilated={plan.dilated} "
          f"total ms/block {sum(table.values()):.1f}", flush=True)
width = 110 if args.shapes else 40
names = sorted(set().union(*results.values()),
               key=lambda k: -max(r.get(k, 0) for r in results.values()))
print("op".ljust(width), " ".join(f"{f:>8}" for f in fractions))
for name in names[:40]:
    print(name[:width].ljust(width), " ".join(f"{results[f].get(name, 0):8.2f}" for f in fractions))
