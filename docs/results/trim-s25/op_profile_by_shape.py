# Session 25 probe (run from the repo root): op self time per block by input shape, one M2AS block of stage 4 at PCT % masked, 8 profiled forwards.
#   [TRIM=bytes] GLIBC_TUNABLES=glibc.malloc.hugetlb=1 OMP_NUM_THREADS=2 python op_profile_by_shape.py PCT x
# Output was read on screen, not kept: aten::resize_ took 46.3 / 18.5 / 49.8 / 18.6 ms per block at 0 % with glibc's 128 KiB trim threshold.
import sys, torch
sys.path.insert(0, "scripts")
from banded_block_time import channels_last_input
from m2ae_core.benchmark.workload import activate_all_branches_, blob_mask
from m2ae_core.m2as import M2ASBlock
from m2ae_core.m2as_banded import StageWorkspace
from m2ae_core.masked_conv import PrunePlan
from m2ae_core.memory import return_freed_memory_promptly
from torch.profiler import profile
return_freed_memory_promptly(); import ctypes, os
if os.environ.get('TRIM'): print('trim', ctypes.CDLL(None).mallopt(-1, int(os.environ['TRIM'])))
torch.set_num_threads(2); torch.manual_seed(0)
h, w, c = 180, 270, 256
block = M2ASBlock(c).eval(); activate_all_branches_(block)
x = channels_last_input(h, w, c)
pct = int(sys.argv[1])
mask = torch.zeros(1, 1, h, w, dtype=torch.bool)
if pct: mask = blob_mask(h, w, pct / 100, seed=1).view(1, 1, h, w).bool()
start, end = torch.randn(1, 2, h, w) * 2 * mask, torch.randn(1, 2, h, w) * 2 * mask
plan, ws = PrunePlan.from_mask(mask), StageWorkspace()
with torch.inference_mode():
    for _ in range(3):
        x = block(x, mask, start, end, plan, True, True, overwrite_input=True, workspace=ws); x.mul_(0.5)
    with profile(record_shapes=True) as p:
        for _ in range(8):
            x = block(x, mask, start, end, plan, True, True, overwrite_input=True, workspace=ws); x.mul_(0.5)

for e in sorted(p.key_averages(group_by_input_shape=True), key=lambda e: -e.self_cpu_time_total)[:8]: print(f"{e.key[:26]:26s} {e.self_cpu_time_total/8e3:8.2f} ms/block {e.count//8:4d} calls/block {str(e.input_shapes)[:70]}")
