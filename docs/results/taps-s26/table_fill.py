"""Filling the mask-aware conv's table (7109 rows, 256 -> 512): oneDNN's 1x1 convolution and a
copy, by chunks of 4096 rows or whole, against torch.addmm writing into the table (session 26).

    OMP_NUM_THREADS=2 python docs/results/taps-s26/table_fill.py

Output: table_fill.txt.
"""
import time, statistics, torch
from m2ae_core.layers import linear_rows
from m2ae_core.memory import return_freed_memory_promptly
return_freed_memory_promptly(); torch.set_num_threads(2); torch.manual_seed(0)
def t(fn, n=15):
    fn(); xs = []
    for _ in range(n):
        s = time.perf_counter(); fn(); xs.append(time.perf_counter() - s)
    return statistics.median(xs) * 1e3
x = torch.randn(7109, 256); W = torch.randn(512, 256); b = torch.randn(512)
table = torch.empty(7109, 512)
def a():
    for f in range(0, 7109, 4096):
        table[f:f + 4096] = linear_rows(x[f:f + 4096], W, b)
def a1():
    table.copy_(linear_rows(x, W, b))
def c():
    for f in range(0, 7109, 4096):
        torch.addmm(b, x[f:f + 4096], W.t(), out=table[f:f + 4096])
def c1():
    torch.addmm(b, x, W.t(), out=table)
with torch.inference_mode():
    for r in range(3):
        print(f"onednn+copy chunks {t(a):.2f}  onednn+copy whole {t(a1):.2f}  addmm out chunks {t(c):.2f}  addmm whole {t(c1):.2f}")
