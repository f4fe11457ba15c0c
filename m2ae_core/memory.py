"""Allocator policy for processes that push large images through the network (glibc only).

After a large block is freed, glibc raises its mmap threshold (up to 32 MiB), so later feature
maps below that size come from the heap; freed, they fragment it and stay in the process's
resident memory. Serving every allocation of 16 MiB or more by mmap hands each freed feature
map back to the OS at once: lower, repeatable peak memory for the same computation.

Below the threshold stay the temporaries of inference in bands of rows (:mod:`.banded`, ~8 MiB
each): they are reused from the heap. Served by mmap (the threshold was 1 MiB until session
18), every band's temporaries were fresh memory the kernel had to fault in and zero, and a
banded block was slower than the whole-map one (1954 vs 1606 ms for a full-resolution `paper`
block at 2152x1436, fp32, 2 threads); from the heap it takes 614 ms (whole: 1086 ms;
``scripts/band_speed.py``, docs/results/bands/). The heap's holes that such temporaries leave
between longer-lived blocks are handed back by :func:`release_free_heap` between the
network's stages.

Within a stage those temporaries must also *stay* in the heap from one band to the next.
With the mmap threshold fixed, glibc no longer adapts its trim threshold either: it stays at
128 KiB, so a band's temporaries freed at the top of the heap went back to the OS and the
next band faulted them in again. How often depended on the process's heap layout: in one
forward at 2152x1436 the heap shrank 120-870 times inside the stages, a different count in
each process (``scripts/heap_churn.py``), one source of this VM's spread between processes.
The policy keeps up to ``DEFAULT_TRIM_THRESHOLD`` free at the top: 32 MiB still left
NAFNet-w32's stage 4 shrinking 11 times, 48 MiB none. The stages' trim
(:func:`release_free_heap`) still returns it. 2152x1436, 10 % mask, three alternated runs of
``m2ae bench`` on the 2-core Intel VM of session 25, 128 KiB -> 32 / 64 MiB: NAFNet-w32
9.38-10.2 -> 8.91-9.34 / 8.86-9.11 s, the pruned model 8.68-9.29 -> 8.79-8.86 / 8.72-8.81 s
(docs/results/trim-s25/; the issue's rows of that session ran at 48 MiB).

Every new tensor above the threshold is still fresh memory, faulted in 4 KiB pages: about
30 % of a CPU forward here. glibc's tunable ``glibc.malloc.hugetlb=1`` asks for
transparent huge pages on those mappings (2 MiB faults): measured on this 2-core CPU at
1280x720, one thread, the pruned ``paper`` forward went from 13.8 s to 8.9 s at the same peak
memory (1042 -> 1045 MiB). Tunables are read when the process starts, so
:func:`with_huge_pages` builds the environment for a process we start, and
:func:`restart_with_huge_pages` re-executes the CLI once with it.

Both settings are process-wide, so only entry points that own their process (the CLI, the
demo, the benchmark's measuring processes) apply them, never the library on import.
"""
from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers
DEFAULT_THRESHOLD = 16 << 20
DEFAULT_TRIM_THRESHOLD = 48 << 20
ENV_OVERRIDE = "MALLOC_MMAP_THRESHOLD_"  # glibc's own tunables; a user's choice wins
TRIM_ENV_OVERRIDE = "MALLOC_TRIM_THRESHOLD_"
TUNABLES = "GLIBC_TUNABLES"
HUGE_PAGES = "glibc.malloc.hugetlb=1"
RESTARTED = "M2AE_ALLOCATOR_RESTARTED"  # set in the restarted process: never restart twice


def return_freed_memory_promptly(threshold: int = DEFAULT_THRESHOLD,
                                 trim_threshold: int = DEFAULT_TRIM_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes and its trim threshold at
    ``trim_threshold`` (unless the user set ``MALLOC_TRIM_THRESHOLD_``); False where it does
    not apply (not Linux, not glibc, or the user set ``MALLOC_MMAP_THRESHOLD_``)."""
    if not sys.platform.startswith("linux") or ENV_OVERRIDE in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    global _POLICY_APPLIED
    _POLICY_APPLIED = mallopt(M_MMAP_THRESHOLD, int(threshold)) == 1
    if _POLICY_APPLIED and TRIM_ENV_OVERRIDE not in os.environ:
        mallopt(M_TRIM_THRESHOLD, int(trim_threshold))
    return _POLICY_APPLIED


_POLICY_APPLIED = False  # set once this process opted in: only then does release_free_heap act


def release_free_heap() -> None:
    """Hand the heap's free pages back to the OS (glibc ``malloc_trim``), in a process that
    applied :func:`return_freed_memory_promptly`; elsewhere nothing. The network calls it
    after a stage whose temporaries were heap-sized: freed in between longer-lived blocks,
    they would stay resident, and the following stages' peak would sit on top of them."""
    if _POLICY_APPLIED:
        ctypes.CDLL(None).malloc_trim(0)


class MallocStats(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (bytes): ``arena`` = the heap's size, ``uordblks`` = its
    live allocations, ``fordblks`` = its free bytes, ``hblkhd`` = bytes in mmapped blocks."""
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def malloc_stats() -> MallocStats | None:
    """What malloc holds now (glibc >= 2.33 ``mallinfo2``); None elsewhere. For the memory
    probes and tests, which watch what the policy does."""
    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return None
    mallinfo2.restype = MallocStats
    return mallinfo2()


def _glibc() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    import platform

    return platform.libc_ver()[0] == "glibc"


def with_huge_pages(env: dict | None = None) -> dict:
    """A copy of ``env`` (default: this process's) whose glibc tunables ask for transparent
    huge pages on malloc's mappings; a ``glibc.malloc.hugetlb`` the user set is kept."""
    env = dict(os.environ if env is None else env)
    current = env.get(TUNABLES, "")
    if _glibc() and "glibc.malloc.hugetlb" not in current:
        env[TUNABLES] = f"{current}:{HUGE_PAGES}" if current else HUGE_PAGES
    return env


def restart_with_huge_pages(module: str, args: list[str]) -> None:
    """Replace this process by ``python -m module args`` with :func:`with_huge_pages`'s
    environment, unless it already has it (or is such a restart, or this is not glibc).
    Returns only when it does not restart."""
    env = with_huge_pages()
    if env == dict(os.environ) or os.environ.get(RESTARTED):
        return
    env[RESTARTED] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", module, *args], env)
