"""Allocator policy for processes that push large images through the network (glibc only).

After a large block is freed, glibc raises its mmap threshold (up to 32 MiB), so later feature
maps below that size come from the heap; freed, they fragment it and stay in the process's
resident memory. Serving every allocation of 1 MiB or more by mmap hands each freed feature
map back to the OS at once: lower, repeatable peak memory for the same computation. It is a
process-wide setting, so only entry points that own their process (the CLI, the demo, the
benchmark's measuring processes) apply it, never the library on import.
"""
from __future__ import annotations

import ctypes
import os
import sys

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
DEFAULT_THRESHOLD = 1 << 20
ENV_OVERRIDE = "MALLOC_MMAP_THRESHOLD_"  # glibc's own tunable; a user's choice wins


def return_freed_memory_promptly(threshold: int = DEFAULT_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes; False where it does not apply
    (not Linux, not glibc, or the user set ``MALLOC_MMAP_THRESHOLD_``)."""
    if not sys.platform.startswith("linux") or ENV_OVERRIDE in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return mallopt(M_MMAP_THRESHOLD, int(threshold)) == 1
