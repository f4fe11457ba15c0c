"""malloc's live heap before and after two forwards of one benchmark model (session 26).

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 OMP_NUM_THREADS=2 python docs/results/taps-s26/live_heap.py MODEL

What a forward leaves allocated for the rest of the process (uordblks + mmapped blocks of
mallinfo2): MKL's matmul buffers showed up here. Output: live_heap.txt.
"""
import sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "scripts"))
import argparse, torch
from forward_setup import add_forward_arguments, prepare_forward
from m2ae_core.memory import malloc_stats
p = argparse.ArgumentParser(); add_forward_arguments(p)
f = prepare_forward(p.parse_args([sys.argv[1]]))
def live(): s = malloc_stats(); return (s.uordblks + s.hblkhd) / 2**20
with torch.inference_mode():
    a = live(); out = f(); del out; b = live(); out = f(); del out; c = live()
print(sys.argv[1], f"live heap MiB before {a:.1f}, after 1st forward {b:.1f} (+{b-a:.1f}), after 2nd {c:.1f}")
