"""Where and how a measurement ran: machine description, peak memory, timers."""
from __future__ import annotations

import os
import platform
import resource
import statistics
import sys
import time

from ..procfs import cpuinfo_field, kib_field_bytes


def cpu_model() -> str:
    return (cpuinfo_field("model name") or platform.processor() or platform.machine()
            or "unknown")


def machine_info(device: str, threads: int | None) -> dict:
    """CPU model, cores, threads, torch version, device (and on the CPU whether the compiled
    tap kernel runs): the header of every report."""
    import torch

    info = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": threads if threads is not None else torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
    }
    if device == "cpu":
        from .. import fused_taps

        # built here, before the cells, when it is not yet: no cell times a build
        info["fused_taps"] = fused_taps.status()
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda"] = torch.version.cuda
    return info


def peak_rss_bytes() -> int:
    """Peak resident memory of this process.

    On Linux this is ``VmHWM`` of /proc/self/status: the peak of this process's own address
    space. ``getrusage(RUSAGE_SELF).ru_maxrss`` is not used there because Linux carries the
    parent's peak over ``fork``/``exec``: a child of a 1 GB parent reports at least 1 GB.
    """
    peak = kib_field_bytes("/proc/self/status", "VmHWM")
    if peak is not None:
        return peak
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return usage if sys.platform == "darwin" else usage * 1024


class Timer:
    """Seconds of one call: perf_counter on CPU, CUDA events (synchronised) on a GPU."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")

    def __call__(self, fn):
        if not self.cuda:
            start = time.perf_counter()
            result = fn()
            return time.perf_counter() - start, result
        import torch

        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        begin.record()
        result = fn()
        end.record()
        torch.cuda.synchronize()
        return begin.elapsed_time(end) / 1000.0, result


def exact_float32(device: str) -> None:
    """Run float32 as float32 on CUDA too. cuDNN's convolutions default to TF32 there: the
    dense paths would round differently from the pruned matmuls (the equality check failed
    at 1.3e-4 on an H200) and NAFNet would be timed at a lower precision than the model."""
    if str(device).startswith("cuda"):
        import torch

        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False


def set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def median_ms(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` in milliseconds over ``repeats`` calls after one warm-up
    (CPU; for the hot-spot scripts, not the benchmark's cells)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)
