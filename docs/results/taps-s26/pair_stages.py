"""Two benchmark models in one process, forwards alternated, seconds per top-level module.

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 OMP_NUM_THREADS=2 python docs/results/taps-s26/pair_stages.py nafnet-w32,paper-pruned ROUNDS

A warm-up forward each, then ROUNDS forwards each in turn; every line is one forward (modules
under 50 ms left out), then the medians. One process: both models meet the same machine
state, which `m2ae bench`'s separate processes do not. For explaining; the issue's numbers
come from `m2ae bench`. Outputs: pair_stages_*.txt.
"""
import sys, time, statistics, argparse
sys.path.insert(0, "/work/main/scripts")
import torch
from forward_setup import add_forward_arguments, prepare_forward

def hook_all(model):
    seconds = {}
    for name, module in model.named_children():
        if isinstance(module, torch.nn.ModuleList):
            subs = [(f"{name}.{i}", m) for i, m in enumerate(module)]
        else:
            subs = [(name, module)]
        for sub, m in subs:
            m.register_forward_pre_hook(lambda _m, _a, n=sub: seconds.__setitem__(n, seconds.get(n, 0) - time.perf_counter()))
            m.register_forward_hook(lambda _m, _a, _o, n=sub: seconds.__setitem__(n, seconds[n] + time.perf_counter()))
    return seconds

models = sys.argv[1].split(",")
rounds = int(sys.argv[2])
fwds = []
for spec in models:
    p = argparse.ArgumentParser(); add_forward_arguments(p)
    a = p.parse_args([spec])
    f = prepare_forward(a)
    fwds.append((f, hook_all(f.model)))
results = {f.label: [] for f, _ in fwds}
with torch.inference_mode():
    for r in range(rounds + 1):
        for f, secs in fwds:
            secs.clear()
            t = time.perf_counter(); f(); total = time.perf_counter() - t
            if r:
                d = dict(secs); d["total"] = total; d["rest"] = total - sum(secs.values())
                results[f.label].append(d)
                print(f"{f.label}: {total:.2f} s  " + " ".join(f"{k} {v:.3f}" for k, v in d.items() if v > 0.05 or k=="rest"), flush=True)
print("medians")
keys = list(results[fwds[0][0].label][0].keys())
for label, rs in results.items():
    print(label, " ".join(f"{k} {statistics.median(x[k] for x in rs):.3f}" for k in rs[0]))
