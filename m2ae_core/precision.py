"""The floating-point type the network runs in: dtype names, and what ``"auto"`` picks.

``"auto"`` is bfloat16 on a CPU that computes it natively (x86 with AVX512-BF16 or AMX) and
float32 everywhere else. Measured on such a CPU (2-core AMD EPYC, torch 2.13, bundled model):
1.8x faster on a 1024x1024 photo, 1.3x on a whole 13 MP one at 40 % less peak memory, and
the frozen benchmark moves by -0.004 dB (local wPSNR). The network adds its residual to the
full-precision input (:meth:`m2ae_core.network.M2AENet.forward`), so pixels it leaves alone
keep every bit, 16-bit photos included. Without native support bf16 is converted in software
(not measured), and float16 was 6.8x slower than float32 on that CPU, so ``"auto"`` picks
float32 there; on GPUs it stays float32 too (reduced precision there is unmeasured).
"""
from __future__ import annotations

import functools

import torch

from .errors import ConfigError
from .procfs import cpuinfo_field

AUTO = "auto"

DTYPE_NAMES: dict[str, torch.dtype] = {
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32, "32": torch.float32,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16, "16": torch.float16,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp64": torch.float64, "float64": torch.float64, "double": torch.float64,
}

# /proc/cpuinfo flags of x86 CPUs that compute bf16 dot products in hardware
_NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@functools.lru_cache(maxsize=None)
def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when the CPU's flags list AVX512-BF16 or AMX-BF16 (Linux; False where
    ``cpuinfo`` cannot be read, e.g. macOS and Windows)."""
    flags = cpuinfo_field("flags", cpuinfo)
    return flags is not None and not _NATIVE_BF16_FLAGS.isdisjoint(flags.split())


def auto_dtype(device: torch.device) -> torch.dtype:
    """What ``"auto"`` means on ``device`` (see the module docstring)."""
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


def resolve_dtype(dtype, device: torch.device) -> torch.dtype:
    """``None`` -> float32; ``"auto"`` -> :func:`auto_dtype`; a name from
    :data:`DTYPE_NAMES` or a floating torch dtype -> that dtype."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise ConfigError(f"dtype must be a floating point type, got {dtype}")
        return dtype
    if isinstance(dtype, str):
        key = dtype.strip().lower().removeprefix("torch.")
        if key == AUTO:
            return auto_dtype(device)
        if key in DTYPE_NAMES:
            return DTYPE_NAMES[key]
    raise ConfigError(f"unknown dtype {dtype!r}; use 'auto', one of {sorted(DTYPE_NAMES)} "
                      "or a torch dtype")
