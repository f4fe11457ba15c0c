"""An opt-in compiled CPU kernel for the deformable taps at inference, built on first use.

:func:`m2ae_core.deform.accumulate_taps` reads, for each masked pixel, nine taps of four
bilinear corners each. In PyTorch ops that is nine ``embedding_bag`` gathers and nine
multiply-adds per chunk of pixels; the same sums written as one C++ loop over pixels (all taps
and corners of a pixel while its accumulator stays in cache) take a quarter of the time on a
`paper` stage-4 block at 2152x1436 (session 27, ``docs/results/s27/``). Same values up to
float rounding.

**Off by default**: DESIGN.md §2 asks for the deformable conv in pure PyTorch ops, with no
compiled extension, so the library's default path stays that. ``M2AE_FUSED_TAPS``: ``off``
(default), ``auto`` (use it where it can be built; the PyTorch ops otherwise, with one
warning), ``on`` (fail loudly when it cannot be built).

The kernel is built with ``torch.utils.cpp_extension`` (a C++ compiler with OpenMP, and the
``ninja`` package: ``pip install "m2ae[kernel]"``) into ``$M2AE_KERNEL_CACHE`` (default
``~/.cache/m2ae/kernels``), once per source, torch version and CPU, and loaded from there
afterwards without importing the build tools.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.machinery
import importlib.util
import os
import platform
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import torch

from .procfs import cpuinfo_field

ENV_SWITCH = "M2AE_FUSED_TAPS"
ENV_CACHE = "M2AE_KERNEL_CACHE"
COMPILE_FLAGS = ("-O3", "-march=native", "-fopenmp")

_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <atomic>

// out[q] += sum over taps t of tap_weights[t] * (sum over corners k of
//   corner_weights[t, q, k] * rows[corner_rows[t, q, k]]
//   + (1 - sum_k corner_weights[t, q, k]) * border),   the border term only when given.
// float32, channels contiguous; corners [taps, q, 4] with any stride between taps.
void accumulate_taps(torch::Tensor out, torch::Tensor rows, torch::Tensor corner_rows,
                     torch::Tensor corner_weights, torch::Tensor tap_weights,
                     c10::optional<torch::Tensor> border) {
  TORCH_CHECK(out.scalar_type() == at::kFloat && rows.scalar_type() == at::kFloat &&
              corner_weights.scalar_type() == at::kFloat &&
              tap_weights.scalar_type() == at::kFloat &&
              corner_rows.scalar_type() == at::kLong, "fused taps: float32 / int64 only");
  const int64_t pixels = out.size(0), channels = out.size(1), taps = corner_rows.size(0);
  const int64_t table_rows = rows.size(0);
  TORCH_CHECK(rows.size(1) == channels && tap_weights.size(0) == taps &&
              tap_weights.size(1) == channels && corner_rows.size(1) == pixels &&
              corner_weights.sizes() == corner_rows.sizes() && corner_rows.size(2) == 4,
              "fused taps: shapes do not match");
  TORCH_CHECK(out.stride(1) == 1 && rows.stride(1) == 1 && tap_weights.is_contiguous() &&
              corner_rows.stride(1) == 4 && corner_rows.stride(2) == 1 &&
              corner_weights.stride(1) == 4 && corner_weights.stride(2) == 1,
              "fused taps: unsupported memory layout");
  const float* border_values = nullptr;
  if (border.has_value()) {
    TORCH_CHECK(border->scalar_type() == at::kFloat && border->is_contiguous() &&
                border->numel() == channels, "fused taps: border must be float32 [C]");
    border_values = border->data_ptr<float>();
  }
  float* out_data = out.data_ptr<float>();
  const float* row_data = rows.data_ptr<float>();
  const int64_t* index_data = corner_rows.data_ptr<int64_t>();
  const float* weight_data = corner_weights.data_ptr<float>();
  const float* tap_data = tap_weights.data_ptr<float>();
  const int64_t out_stride = out.stride(0), row_stride = rows.stride(0);
  const int64_t index_tap_stride = corner_rows.stride(0);
  const int64_t weight_tap_stride = corner_weights.stride(0);
  std::atomic<bool> out_of_range{false};
  at::parallel_for(0, pixels, 16, [&](int64_t begin, int64_t end) {
    for (int64_t q = begin; q < end; ++q) {
      float* acc = out_data + q * out_stride;
      for (int64_t t = 0; t < taps; ++t) {
        const int64_t* index = index_data + t * index_tap_stride + q * 4;
        const float* w = weight_data + t * weight_tap_stride + q * 4;
        bool valid = true;
        for (int k = 0; k < 4; ++k) valid = valid && index[k] >= 0 && index[k] < table_rows;
        if (!valid) { out_of_range = true; continue; }
        const float* r0 = row_data + index[0] * row_stride;
        const float* r1 = row_data + index[1] * row_stride;
        const float* r2 = row_data + index[2] * row_stride;
        const float* r3 = row_data + index[3] * row_stride;
        const float w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3];
        const float* tap = tap_data + t * channels;
        if (border_values == nullptr) {
          #pragma omp simd
          for (int64_t c = 0; c < channels; ++c)
            acc[c] += tap[c] * (w0 * r0[c] + w1 * r1[c] + w2 * r2[c] + w3 * r3[c]);
        } else {
          const float outside = 1.0f - (w0 + w1 + w2 + w3);
          #pragma omp simd
          for (int64_t c = 0; c < channels; ++c)
            acc[c] += tap[c] * (w0 * r0[c] + w1 * r1[c] + w2 * r2[c] + w3 * r3[c]
                                + outside * border_values[c]);
        }
      }
    }
  });
  TORCH_CHECK(!out_of_range, "fused taps: a corner row lies outside the table");
}
"""


def _switch() -> str:
    value = os.environ.get(ENV_SWITCH, "off").strip().lower()
    if value == "auto":
        return "auto"
    if value in ("", "0", "off", "false", "no"):
        return "off"
    if value in ("1", "on", "true", "yes"):
        return "on"
    raise ValueError(f"{ENV_SWITCH}={value!r}: use auto, on or off")


def _cpu_flags() -> str:
    """The CPU's instruction-set flags: a kernel built with -march=native is tied to them
    (a cache directory shared between different machines must not mix kernels)."""
    return cpuinfo_field("flags") or platform.processor() or platform.machine()


def module_name() -> str:
    """Source, flags, torch, Python and CPU decide the build: any change, a new name."""
    key = "\n".join((_SOURCE, " ".join(COMPILE_FLAGS), torch.__version__, sys.version,
                     _cpu_flags()))
    return "m2ae_fused_taps_" + hashlib.sha256(key.encode()).hexdigest()[:16]


def cache_directory() -> Path:
    explicit = os.environ.get(ENV_CACHE)
    if explicit:
        return Path(explicit).expanduser()
    home = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(home).expanduser() / "m2ae" / "kernels"


def _built_file(name: str) -> Path:
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    return cache_directory() / (name + suffix)


def _import_built(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _build(name: str) -> Path:
    """Compile into a private temporary directory, then move the library into the cache:
    an interrupted or concurrent build never leaves a half-written or locked kernel behind."""
    from torch.utils import cpp_extension  # build tools: imported only to build

    target = _built_file(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="m2ae-kernel-", dir=target.parent) as scratch:
        cpp_extension.load_inline(name, cpp_sources=_SOURCE, functions=["accumulate_taps"],
                                  extra_cflags=list(COMPILE_FLAGS), build_directory=scratch,
                                  verbose=False)
        built = next(Path(scratch).glob(name + "*" + target.suffix))
        temporary = target.with_name(target.name + f".{os.getpid()}.part")
        shutil.copyfile(built, temporary)
        os.replace(temporary, target)
    return target


_failures: list[str] = []  # why the kernel could not be built or loaded, for status()


@functools.lru_cache(maxsize=1)
def kernel():
    """The compiled module (``accumulate_taps``), or None where it is switched off or cannot
    be built (``on``: raise instead). Built at most once per process."""
    switch = _switch()
    if switch == "off":
        return None
    name = module_name()
    path = _built_file(name)
    try:
        if not path.is_file():
            print(f"m2ae: building the fused deformable-tap kernel into {path.parent} "
                  "(once per machine, ~30 s)", file=sys.stderr, flush=True)
            path = _build(name)
        return _import_built(path, name)
    except Exception as exc:  # no compiler, no ninja, no OpenMP, a read-only cache ...
        _failures.append(f"{type(exc).__name__}: {exc}".splitlines()[0][:200])
        message = (f"the fused deformable-tap kernel could not be built or loaded ({exc}). "
                   f"M2AE uses PyTorch ops instead (same results, slower on masked pixels). "
                   f"Unset {ENV_SWITCH} to skip the attempt")
        if switch == "on":
            raise RuntimeError(message) from exc
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        return None


def status() -> str:
    """One line for reports: whether the kernel runs here, and why not."""
    switch = _switch()
    if switch == "off":
        return f"off (the default; {ENV_SWITCH}=auto or on turns it on)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = kernel()
    if module is not None:
        return f"on ({_built_file(module_name())})"
    return "unavailable" + (f" ({_failures[-1]})" if _failures else "")


def applies(out: torch.Tensor, rows: torch.Tensor, corner_weights: torch.Tensor) -> bool:
    """Whether a call of the taps can take the kernel: float32 on the CPU, no autograd."""
    return (out.device.type == "cpu" and rows.device.type == "cpu"
            and out.dtype == rows.dtype == corner_weights.dtype == torch.float32
            and not torch.is_grad_enabled()
            and out.stride(-1) == 1 and rows.stride(-1) == 1)


def accumulate_taps(out: torch.Tensor, rows: torch.Tensor, corner_rows: torch.Tensor,
                    corner_weights: torch.Tensor, tap_weights: torch.Tensor,
                    border: torch.Tensor | None) -> bool:
    """The kernel's ``out += taps`` (arguments as :func:`m2ae_core.deform.accumulate_taps`,
    ``tap_weights`` [taps, C] float32); False, with ``out`` untouched, where it cannot run."""
    if not applies(out, rows, corner_weights):
        return False
    module = kernel()
    if module is None:
        return False
    # [taps, q, 4] slices of [taps, Q, 4] keep each pixel's corners together: used as they are
    if corner_rows.stride(-1) != 1 or corner_rows.stride(-2) != 4:
        corner_rows = corner_rows.contiguous()
    if corner_weights.stride(-1) != 1 or corner_weights.stride(-2) != 4:
        corner_weights = corner_weights.contiguous()
    module.accumulate_taps(out, rows, corner_rows, corner_weights, tap_weights.contiguous(),
                           None if border is None else border.float().contiguous())
    return True
