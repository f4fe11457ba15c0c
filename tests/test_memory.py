"""Allocator policy (m2ae_core/memory.py): feature maps are mmapped, so freeing returns them."""
import os
import subprocess
import sys

import pytest

from m2ae_core.memory import return_freed_memory_promptly

# Frees a 30 MiB block (without the policy glibc then raises its mmap threshold to 30 MiB;
# it does so for blocks up to 32 MiB), then holds a 24 MiB block, a feature map above the
# policy's 16 MiB threshold; prints whether that block was mmapped (mallinfo2: bytes in mmapped
# blocks), i.e. whether freeing it will hand it back to the OS at once.
SCENARIO = r"""
import sys, torch
from m2ae_core.memory import malloc_stats, return_freed_memory_promptly
applied = return_freed_memory_promptly() if sys.argv[1] == "on" else False
big = torch.ones(30 << 18); del big
before = malloc_stats().hblkhd
block = torch.ones(6 << 20)
print(applied, malloc_stats().hblkhd - before >= 24 << 20)
"""


def _environment_without(*names: str) -> dict:
    """This process's environment without the allocator settings ``names`` (a user's own
    would change what the scenarios measure)."""
    return {k: v for k, v in os.environ.items() if k not in names}


def _scenario_output(scenario: str, env: dict, *args: str) -> str:
    """What ``scenario`` prints, run in a fresh interpreter with ``env``."""
    return subprocess.run([sys.executable, "-c", scenario, *args], capture_output=True,
                          text=True, env=env, check=True).stdout.strip()


def _run(mode: str, env: dict) -> list[str]:
    return _scenario_output(SCENARIO, env, mode).split()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc/proc behaviour")
def test_feature_maps_are_mmapped_even_after_a_large_free():
    env = _environment_without("MALLOC_MMAP_THRESHOLD_")
    applied, mmapped = _run("on", env)
    if applied != "True":
        pytest.skip("not a glibc system: the policy does not apply")
    assert mmapped == "True"
    assert _run("off", env) == ["False", "False"]  # glibc's default keeps it in the heap


# Frees an 8 MiB block (a band's temporary: below the mmap threshold, so from the heap) at the
# heap's top; prints whether the heap kept it for the next band (mallinfo2's arena: the heap's
# size) rather than handing it back to the OS.
TOP_SCENARIO = r"""
import ctypes
from m2ae_core.memory import malloc_stats, return_freed_memory_promptly
assert return_freed_memory_promptly()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
before = malloc_stats().arena
band = libc.malloc(8 << 20)
ctypes.memset(band, 1, 8 << 20)
libc.free(band)
print(malloc_stats().arena - before >= 8 << 20)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc behaviour")
def test_the_heap_keeps_a_bands_temporaries_for_the_next_band():
    env = _environment_without("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
    if not memory._glibc():
        pytest.skip("not a glibc system: the policy does not apply")

    def kept(extra_env):
        return _scenario_output(TOP_SCENARIO, {**env, **extra_env})

    assert kept({}) == "True"
    # glibc's own default (128 KiB), which a user can still ask for, hands it back at once
    assert kept({"MALLOC_TRIM_THRESHOLD_": "131072"}) == "False"


def test_a_users_malloc_setting_wins(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "4194304")
    assert return_freed_memory_promptly() is False


# --------------------------------------------------------------------------- huge pages

from m2ae_core import memory  # noqa: E402

HUGE_SCENARIO = r"""
import torch
from m2ae_core.memory import return_freed_memory_promptly
return_freed_memory_promptly()
block = torch.ones(64 << 20 >> 2)  # 64 MiB, mmapped under the policy, touched by ones()
rollup = open("/proc/self/smaps_rollup").read()
print(next(int(l.split()[1]) for l in rollup.splitlines() if l.startswith("AnonHugePages")))
"""


def _thp_mode() -> str:
    try:
        text = open("/sys/kernel/mm/transparent_hugepage/enabled").read()
    except OSError:
        return "absent"
    return text.split("[")[1].split("]")[0]


def test_with_huge_pages_adds_the_tunable_and_keeps_the_users(monkeypatch):
    monkeypatch.setattr(memory, "_glibc", lambda: True)
    assert memory.with_huge_pages({})["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"
    env = memory.with_huge_pages({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "X": "1"})
    assert env == {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1", "X": "1"}
    mine = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}
    assert memory.with_huge_pages(mine) == mine
    monkeypatch.setattr(memory, "_glibc", lambda: False)
    assert memory.with_huge_pages({}) == {}


def test_restart_happens_once_and_only_when_it_changes_something(monkeypatch):
    calls = []
    monkeypatch.setattr(memory.os, "execve", lambda *a: calls.append(a))
    monkeypatch.setattr(memory, "_glibc", lambda: True)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.delenv(memory.RESTARTED, raising=False)
    memory.restart_with_huge_pages("m2ae_core.cli", ["deblur", "a.png"])
    (exe, argv, env), = calls
    assert argv == [sys.executable, "-m", "m2ae_core.cli", "deblur", "a.png"]
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1" and env[memory.RESTARTED] == "1"
    monkeypatch.setenv(memory.RESTARTED, "1")
    memory.restart_with_huge_pages("m2ae_core.cli", [])
    monkeypatch.delenv(memory.RESTARTED)
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
    memory.restart_with_huge_pages("m2ae_core.cli", [])
    assert len(calls) == 1


def test_cli_called_from_python_never_replaces_the_process(monkeypatch, tmp_path):
    from m2ae_core.cli import main

    def forbidden(*args):
        raise AssertionError("main(argv) must not exec")

    monkeypatch.setattr(memory.os, "execve", forbidden)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    assert main(["deblur", str(tmp_path / "absent.png"), "-o", str(tmp_path / "o.png")]) == 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc/proc behaviour")
def test_the_tunable_gives_feature_maps_huge_pages():
    if _thp_mode() not in ("madvise", "always") or not memory._glibc():
        pytest.skip(f"transparent huge pages unavailable here ({_thp_mode()})")
    env = _environment_without("GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_")
    huge = int(_scenario_output(HUGE_SCENARIO, memory.with_huge_pages(env)))
    assert huge >= 32 << 10  # kB: most of the 64 MiB block
    if _thp_mode() == "madvise":  # without the tunable nobody asks for them
        plain = int(_scenario_output(HUGE_SCENARIO, env))
        assert plain < huge


def test_the_command_restarts_before_it_imports_torch(tmp_path):
    """`m2ae deblur` restarts itself with huge pages; torch must load only in the restarted
    process (the first one paying the ~1.4 s import too made every command that much slower)."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import sys\n"
        "from m2ae_core import memory\n"
        "def record(exe, argv, env):\n"
        "    print('torch loaded before restart:', 'torch' in sys.modules, argv[3:])\n"
        "    raise SystemExit(0)\n"
        "memory.os.execve = record\n"
        "memory._glibc = lambda: True\n"
        "from m2ae_core.cli import main\n"
        "sys.argv = ['m2ae', 'deblur', 'in.png', '-o', 'out.png']\n"
        "main()\n", encoding="utf-8")
    env = _environment_without("GLIBC_TUNABLES", memory.RESTARTED)
    done = subprocess.run([sys.executable, str(probe)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.stdout.strip() == \
        "torch loaded before restart: False ['deblur', 'in.png', '-o', 'out.png']", done.stderr


def test_the_lazy_package_still_offers_its_names_and_submodules():
    """`import m2ae_core` no longer imports torch; everything it used to offer still loads."""
    code = (
        "import sys, m2ae_core\n"
        "assert 'torch' not in sys.modules\n"
        "from m2ae_core import load_model, deblur, analyze, build_model, PRESETS, M2AEError\n"
        "assert callable(m2ae_core.imageio.read_image) and m2ae_core.tiling.MIN_TILE\n"
        "assert set(m2ae_core.__all__) <= set(dir(m2ae_core))\n"
        "try:\n"
        "    m2ae_core.no_such_name\n"
        "except AttributeError as exc:\n"
        "    print('ok', exc)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok module 'm2ae_core' has no attribute 'no_such_name'"


# Heap-sized temporaries (8 MiB, under the policy's threshold, written so they are resident)
# freed between small blocks that stay alive: the holes stay resident until
# release_free_heap() hands them back. malloc directly, so that nothing else (torch's own
# allocations) decides where the blocks land. Prints the resident MiB it gave back.
TRIM_SCENARIO = r"""
import ctypes, sys
from m2ae_core import memory
if sys.argv[1] == "on":
    memory.return_freed_memory_promptly()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
def rss_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
temporaries, keep = [], []
for _ in range(12):
    block = libc.malloc(8 << 20)
    ctypes.memset(block, 1, 8 << 20)
    temporaries.append(block)
    keep.append(libc.malloc(256 << 10))  # a long-lived block above it (no free chunk fits it)
for block in temporaries:
    libc.free(block)
before = rss_mib()
memory.release_free_heap()
print(round(before - rss_mib()))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc/proc behaviour")
def test_release_free_heap_returns_holes_only_under_the_policy():
    env = _environment_without("MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")
    if not memory._glibc():
        pytest.skip("not a glibc system: the policy does not apply")

    def released(mode):
        return int(_scenario_output(TRIM_SCENARIO, env, mode))

    assert released("on") >= 80  # nearly all of the 96 MiB of holes
    assert released("off") == 0  # a process that did not opt in is left alone
