"""Op time by input shape in one profiled forward (session 28).

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 OMP_NUM_THREADS=2 PYTHONPATH=.:scripts \
        python docs/results/s28/mul_shapes.py paper-pruned --fraction 10
"""
import argparse, sys, torch
from forward_setup import add_forward_arguments, prepare_forward
p = argparse.ArgumentParser(); add_forward_arguments(p)
fwd = prepare_forward(p.parse_args(sys.argv[1:]))
with torch.inference_mode():
    fwd()
    with torch.profiler.profile(record_shapes=True) as prof:
        fwd()
t = prof.key_averages(group_by_input_shape=True)
rows = sorted([e for e in t if e.key in ("aten::mul", "aten::mkldnn_convolution", "aten::native_layer_norm")], key=lambda e: -e.self_cpu_time_total)[:14]
for e in rows:
    print(f"{e.key:28s} {e.count:5d} {e.self_cpu_time_total/1e6:7.3f} s  {str(e.input_shapes)[:110]}")
