"""Tiled inference of a big photo: its peak memory, and tiled-vs-untiled agreement.

``measure_tiled`` runs ``deblur(..., tile=T)`` on a photo enlarged to the issue's 4096x3072
(the paper's real-world capture size) and reports the process's peak RSS. ``compare_tiled``
runs the same model untiled and tiled on an image small enough to run untiled and reports
the PSNR between the two outputs (8-bit, as the project's metrics; and in float), for both
tile contexts (image-wide pooling, the default, and per-tile pooling).
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from ..inference import deblur
from .machine import peak_rss_bytes, set_threads
from .models import build_spec_model, parse_model_spec
from .workload import blob_mask

EXAMPLE_PHOTO = Path(__file__).resolve().parents[1] / "examples" / "coffee_9.png"


def load_photo(height: int, width: int, path: str | None = None) -> np.ndarray:
    """uint8 HWC RGB photo resized (bicubic) to ``height`` x ``width``."""
    from PIL import Image

    with Image.open(path or EXAMPLE_PHOTO) as im:
        return np.asarray(im.convert("RGB").resize((width, height), Image.BICUBIC))


def _setup(task: dict):
    set_threads(task.get("threads"))
    spec = parse_model_spec(task.get("model", "paper-pruned"))
    model = build_spec_model(spec, task.get("width"), task.get("seed", 0), task.get("device", "cpu"))
    return spec, model


def measure_tiled(task: dict) -> dict:
    spec, model = _setup(task)
    height, width = task["size"]
    photo = load_photo(height, width, task.get("photo"))
    mask = blob_mask(height, width, task.get("fraction", 10) / 100.0, task.get("seed", 0))
    started = time.perf_counter()
    result = deblur(model, photo, mask=mask, tile=task["tile"], pruned=spec.mode != "dense",
                    tile_context=task.get("tile_context", "image"))
    seconds = time.perf_counter() - started
    out = {"status": "ok", "peak_rss_bytes": peak_rss_bytes(), "wall_s": seconds,
           "tiles": result.stats["tiles"], "tile_context": result.stats["tile_context"],
           "macs": result.stats["macs"],
           "threads": torch.get_num_threads(), "output_shape": list(result.image.shape)}
    if str(task.get("device", "cpu")).startswith("cuda"):
        out["cuda_peak_bytes"] = torch.cuda.max_memory_allocated()
    return out


def float_psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def compare_tiled(task: dict) -> dict:
    from ..metrics import psnr

    spec, model = _setup(task)
    height, width = task["size"]
    photo = load_photo(height, width, task.get("photo")).astype(np.float32) / 255.0
    mask = blob_mask(height, width, task.get("fraction", 10) / 100.0, task.get("seed", 0))
    pruned = spec.mode != "dense"
    untiled = deblur(model, photo, mask=mask, tile=0, pruned=pruned)
    result = {"status": "ok", "untiled_s": untiled.stats["seconds"]}
    # "image" (the default, two passes) is the one the target reads; "tile" shows what the
    # shared context buys
    for context, suffix in (("image", ""), ("tile", "_tile_context")):
        tiled = deblur(model, photo, mask=mask, tile=task["tile"], pruned=pruned,
                       tile_context=context)
        result.update({f"psnr_8bit_db{suffix}": _finite(psnr(tiled.image, untiled.image)),
                       f"psnr_float_db{suffix}": _finite(float_psnr(tiled.image, untiled.image)),
                       f"max_abs_diff{suffix}": float(np.abs(tiled.image - untiled.image).max()),
                       f"tiled_s{suffix}": tiled.stats["seconds"]})
        result["tiles"] = tiled.stats["tiles"]
    return result


def _finite(value: float):
    """JSON has no infinity: identical outputs are reported as the string "inf"."""
    return "inf" if math.isinf(value) else value
