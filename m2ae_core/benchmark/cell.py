"""One grid cell, measured inside its own child process (see :mod:`.child`).

A cell is (model, size, blur fraction): one warm-up forward, the median of ``repeats`` timed
forwards, the process's peak memory right after them, the MACs of the actual run, and, for a
pruned cell without a dense twin in the grid, the equality check against the dense path
(run after the memory was read, so it does not count).
"""
from __future__ import annotations

import statistics

import torch

from ..macs import StagePixels, count_macs
from .machine import Timer, exact_float32, peak_rss_bytes, set_threads
from .models import build_spec_model, parse_model_spec
from .workload import blob_mask, test_image

CHECK_TOLERANCE = 1e-4  # max |pruned - dense| in fp32 (DESIGN §3)
# bf16 / fp16: the two paths round differently (different kernels, orders of summation)
HALF_CHECK_TOLERANCE = 2e-2


def make_inputs(height: int, width: int, fraction_percent: float | None, device: str,
                seed: int = 0):
    image = test_image(height, width, seed).to(device)
    mask = None
    if fraction_percent is not None:
        mask = blob_mask(height, width, fraction_percent / 100.0, seed).to(device)
    return image, mask


def stage_counts(output) -> dict[int, StagePixels]:
    return {s.stage: StagePixels(s.masked_pixels, s.dilated_pixels) for s in output.stages}


def cell_macs(spec, config, height: int, width: int, output) -> tuple[int, int]:
    """(MACs of this run, MACs of the dense path) from the run's own stage pixel counts."""
    given = spec.uses_mask  # the grid passes a user mask: the mask predictors do not run
    dense = count_macs(config, height, width, mask_given=given)
    if spec.mode != "pruned":
        return dense, dense
    counts = stage_counts(output)
    macs = count_macs(config, height, width, counts, mask_given=given)
    if spec.both_halves:
        from .halves import both_halves_saving_macs

        macs -= both_halves_saving_macs(config, height, width, counts)
    return macs, dense


def measure_cell(task: dict) -> dict:
    set_threads(task.get("threads"))
    device = task.get("device", "cpu")
    exact_float32(device)
    spec = parse_model_spec(task["model"])
    height, width = task["size"]
    fraction = task.get("fraction") if spec.uses_mask else None
    model = build_spec_model(spec, task.get("width"), task.get("seed", 0), device,
                             task.get("dtype", "fp32"))
    image, mask = make_inputs(height, width, fraction, device, task.get("seed", 0))
    pruned = spec.mode != "dense"
    timer = Timer(device)

    def forward():
        return model(image, mask=mask, pruned=pruned)

    with torch.inference_mode():
        warmup, output = timer(forward)
        times = []
        for _ in range(max(1, int(task.get("repeats", 3)))):
            seconds, output = timer(forward)
            times.append(seconds)
    result = {
        "status": "ok",
        "wall_s": statistics.median(times),
        "times_s": times,
        "warmup_s": warmup,
        "peak_rss_bytes": peak_rss_bytes(),
        "threads": torch.get_num_threads(),
        "params": sum(p.numel() for p in model.parameters()),
        "preset": model.config.name,
    }
    if device.startswith("cuda"):
        result["cuda_peak_bytes"] = torch.cuda.max_memory_allocated(torch.device(device))
    result["macs"], result["dense_macs"] = cell_macs(spec, model.config, height, width, output)
    if mask is not None:
        result["mask_fraction"] = float(mask.float().mean())
        result["stage_fraction"] = {str(s.stage): s.masked_pixels / s.mask[:, 0].numel()
                                    for s in output.stages}
    if task.get("save_output"):
        torch.save(output.image.float().cpu(), task["save_output"])
    if task.get("check") == "in-cell" and spec.mode == "pruned":
        with torch.inference_mode():
            dense = model(image, mask=mask, pruned=False)
        result["check"] = check_result((output.image - dense.image).abs().max(), "in-cell",
                                       next(model.parameters()).dtype)
    return result


def check_result(max_abs_diff, against: str, dtype=torch.float32) -> dict:
    value = float(max_abs_diff)
    tolerance = CHECK_TOLERANCE if dtype in (torch.float32, torch.float64) \
        else HALF_CHECK_TOLERANCE
    return {"max_abs_diff": value, "against": against, "tolerance": tolerance,
            "ok": value <= tolerance}
