"""The bundled default model on a real photo: `deblur` with and without the M2AS stages'
workspace, alternated in one process (fp32, 2 threads); seconds per call, median (all).

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 OMP_NUM_THREADS=2 python default_ab.py PHOTO [size|full] [rounds]
"""
import statistics
import sys
import time

import numpy as np
import torch
from PIL import Image

from m2ae_core import deblur, load_model, m2as
from m2ae_core.memory import return_freed_memory_promptly

return_freed_memory_promptly()
torch.set_num_threads(2)
photo = Image.open(sys.argv[1]).convert("RGB")
size = sys.argv[2] if len(sys.argv) > 2 else "1024"
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
if size != "full":
    side = int(size)
    left, top = (photo.width - side) // 2, (photo.height - side) // 2
    photo = photo.crop((left, top, left + side, top + side))
image = np.asarray(photo, dtype=np.float32) / 255.0
model = load_model(None)
with_workspace = m2as.StageWorkspace
times = {"without": [], "with": []}
outputs = {}
deblur(model, image)
for _ in range(rounds):
    for mode in times:
        m2as.StageWorkspace = with_workspace if mode == "with" else (lambda: None)
        start = time.perf_counter()
        outputs[mode] = deblur(model, image).image
        times[mode].append(time.perf_counter() - start)
m2as.StageWorkspace = with_workspace
difference = float(np.abs(np.asarray(outputs["with"]) - np.asarray(outputs["without"])).max())
print(f"{photo.width}x{photo.height}: " + "  ".join(
    f"{k} {statistics.median(v):.2f} s ({' '.join(f'{t:.2f}' for t in v)})" for k, v in times.items())
    + f"  max abs difference {difference:.1e}", flush=True)
