"""Seconds, page faults, system CPU and heap size of chosen stages, two models in one
process, forwards alternated (session 26).

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 OMP_NUM_THREADS=2 python docs/results/taps-s26/faults_by_stage.py nafnet-w32,paper-pruned

Output: faults_by_stage.txt.
"""
import sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "scripts"))
import argparse, time, resource, torch
from forward_setup import add_forward_arguments, prepare_forward
from m2ae_core.memory import malloc_stats
def ru(): r = resource.getrusage(resource.RUSAGE_SELF); return r.ru_minflt, r.ru_stime, r.ru_utime
fwds = []
for spec in sys.argv[1].split(","):
    p = argparse.ArgumentParser(); add_forward_arguments(p)
    f = prepare_forward(p.parse_args([spec]))
    stats = {}
    for name in ("intro", "encoders.0", "encoders.3", "middle_blks", "decoders.3"):
        mod = f.model.get_submodule(name)
        mod.register_forward_pre_hook(lambda m, a, n=name, s=stats: s.__setitem__(n, (time.perf_counter(), ru(), malloc_stats().arena)))
        def post(m, a, o, n=name, s=stats):
            t0, (f0, s0, u0), a0 = s[n]; f1, s1, u1 = ru()
            s[n] = (time.perf_counter() - t0, f1 - f0, s1 - s0, u1 - u0, a0 >> 20, malloc_stats().arena >> 20)
        mod.register_forward_hook(post)
    fwds.append((f, stats))
with torch.inference_mode():
    for r in range(4):
        for f, stats in fwds:
            f()
            if r: print(f.label.ljust(20), "  ".join(f"{n}: {v[0]:.3f}s flt {v[1]} sys {v[2]:.2f} arena {v[4]}->{v[5]}M" for n, v in stats.items()), flush=True)
