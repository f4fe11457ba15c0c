"""Allocator policy (m2ae_core/memory.py): feature maps are mmapped, so freeing returns them."""
import os
import subprocess
import sys

import pytest

from m2ae_core.memory import return_freed_memory_promptly

# Frees a 16 MiB block (without the policy glibc then raises its mmap threshold above
# 4 MiB), then holds a 4 MiB block; prints whether that block was mmapped (mallinfo2: bytes
# in mmapped blocks), i.e. whether freeing it will hand it back to the OS at once.
SCENARIO = r"""
import ctypes, sys, torch
from m2ae_core.memory import return_freed_memory_promptly
applied = return_freed_memory_promptly() if sys.argv[1] == "on" else False
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                 "uordblks", "fordblks", "keepcost")]
mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = MallInfo2
big = torch.ones(4 << 20); del big
before = mallinfo2().hblkhd
block = torch.ones(1 << 20)
print(applied, mallinfo2().hblkhd - before >= 4 << 20)
"""


def _run(mode: str, env: dict) -> list[str]:
    return subprocess.run([sys.executable, "-c", SCENARIO, mode], capture_output=True,
                          text=True, env=env, check=True).stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc/proc behaviour")
def test_feature_maps_are_mmapped_even_after_a_large_free():
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    applied, mmapped = _run("on", env)
    if applied != "True":
        pytest.skip("not a glibc system: the policy does not apply")
    assert mmapped == "True"
    assert _run("off", env) == ["False", "False"]  # glibc's default keeps it in the heap


def test_a_users_malloc_setting_wins(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "4194304")
    assert return_freed_memory_promptly() is False
