"""How large the chunks of the chunked inference loops are on each kind of device.

On a CPU, the per-pixel loops (deformable taps, tile groups, table rows, bands) walk their
work in chunks whose temporaries stay in cache; the constant beside each loop was measured
there. On an accelerator every chunk costs a round of kernel launches and the cache argument
does not hold: chunks there are bounded only by the memory their temporaries take. Session
23 measured what CPU-sized chunks cost on an H200: the dense paper model at 2152x1436 took
1.33 s instead of 0.27 s (docs/results/gpu-s23/).
"""
from __future__ import annotations

import torch

# Temporaries of one chunk on an accelerator: a whole 512-channel stage-4 map of a 2152x1436
# photo in one chunk (99 MB), two of a 4096x3072 one; small against a GPU's memory.
ACCELERATOR_CHUNK_BYTES = 256 << 20


def chunk_items(device: torch.device, cpu_items: int, item_bytes: int) -> int:
    """Items per chunk of a loop whose items take ``item_bytes`` of temporaries each:
    ``cpu_items`` on a CPU; on an accelerator as many as fit in ``ACCELERATOR_CHUNK_BYTES``,
    never fewer than on a CPU."""
    if device.type == "cpu":
        return cpu_items
    return max(cpu_items, ACCELERATOR_CHUNK_BYTES // max(1, item_bytes))
