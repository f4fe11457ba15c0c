"""Per-op and per-part time breakdown of one cell with ``torch.profiler``.

Parts of the network are labelled with ``record_function`` by wrapping the forward of
modules of *this model instance* and the functions the M2AS block calls (the model's code is
not changed). Two tables come back: aten ops by self time, and labelled parts by inclusive
time (parts nest: an encoder stage contains its blocks' parts).
"""
from __future__ import annotations

import functools
import time

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from .. import m2as
from .cell import make_inputs
from .machine import exact_float32, set_threads
from .models import build_spec_model, parse_model_spec

TOP_OPS = 25
BLOCK_PARTS = ("norm1", "sca", "conv3", "norm2", "conv4", "conv5")
# conv4 and the deformable conv in one, where the static affine is folded into conv4
FOLDED_LABEL = "m2as block: conv4 + deform (folded)"
PATCHED_FUNCTIONS = {"masked_gated_conv_pruned": "mixing (conv1+conv2)",
                     "masked_conv_dense": "mixing (conv1+conv2)",
                     "simple_gate": "simple_gate (both halves)"}


_ACTIVE: set[str] = set()  # labels open right now: a part nested in itself is counted once


def _label(fn, label: str):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if label in _ACTIVE:
            return fn(*args, **kwargs)
        _ACTIVE.add(label)
        try:
            with record_function(label):
                return fn(*args, **kwargs)
        finally:
            _ACTIVE.discard(label)
    return wrapper


def label_parts_(model) -> list[str]:
    """Wrap the forwards of the model's parts in record_function labels; returns the labels."""
    labels = []

    def wrap(module, label):
        module.forward = _label(module.forward, label)
        labels.append(label)

    wrap(model.intro, "intro conv")
    wrap(model.ending, "ending conv")
    for index, (encoder, down) in enumerate(zip(model.encoders, model.downs)):
        kind = "M2AS" if isinstance(encoder, m2as.M2ASStage) else "NAF"
        wrap(encoder, f"encoder stage {index + 1} ({kind})")
        wrap(down, f"down {index + 1}")
        if isinstance(encoder, m2as.M2ASStage):
            wrap(encoder.mask_predictor, "m2as: mask predictor")
            wrap(encoder.motion_analyzer, "m2as: motion analyzer")
            for block in encoder.blocks():
                for part in BLOCK_PARTS:
                    wrap(getattr(block, part), f"m2as block: {part}")
                block.gated_deform_pruned = _label(block.gated_deform_pruned,
                                                   "m2as block: deform")
                block.dconv.forward = _label(block.dconv.forward, "m2as block: deform")
                block.folded_deform_pruned = _label(block.folded_deform_pruned,
                                                    FOLDED_LABEL)
    wrap(model.middle_blks, "middle")
    for index, (up, decoder) in enumerate(zip(model.ups, model.decoders)):
        level = len(model.decoders) - index
        wrap(up, f"up {level}")
        wrap(decoder, f"decoder stage {level}")
    return sorted(set(labels) | {"m2as block: deform", FOLDED_LABEL} | {
        f"m2as block: {v}" for v in PATCHED_FUNCTIONS.values()})


def _patch_functions():
    originals = {name: getattr(m2as, name) for name in PATCHED_FUNCTIONS}
    for name, label in PATCHED_FUNCTIONS.items():
        setattr(m2as, name, _label(originals[name], f"m2as block: {label}"))
    return originals


def profile_cell(task: dict) -> dict:
    set_threads(task.get("threads"))
    device = task.get("device", "cpu")
    exact_float32(device)
    spec = parse_model_spec(task["model"])
    height, width = task["size"]
    model = build_spec_model(spec, task.get("width"), task.get("seed", 0), device,
                             task.get("dtype", "fp32"))
    image, mask = make_inputs(height, width, task.get("fraction") if spec.uses_mask else None,
                              device, task.get("seed", 0))
    pruned = spec.mode != "dense"
    labels = label_parts_(model)
    originals = _patch_functions()
    cuda = device.startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    try:
        with torch.inference_mode():
            model(image, mask=mask, pruned=pruned)  # warm-up
            with profile(activities=activities) as prof:
                if cuda:
                    torch.cuda.synchronize()
                started = time.perf_counter()
                model(image, mask=mask, pruned=pruned)
                if cuda:
                    torch.cuda.synchronize()
                total = time.perf_counter() - started
    finally:
        for name, fn in originals.items():
            setattr(m2as, name, fn)
    return {"status": "ok", "forward_s": total, "device": device,
            "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
            **breakdown(prof.key_averages(), set(labels), total, cuda)}


def breakdown(averages, labels: set[str], total_s: float, cuda: bool) -> dict:
    """The two tables from ``prof.key_averages()``: aten ops (self time) and parts."""
    def device_us(event, self_time: bool) -> float:
        for attr in (("self_device_time_total", "self_cuda_time_total") if self_time
                     else ("device_time_total", "cuda_time_total")):
            if hasattr(event, attr):
                return float(getattr(event, attr))
        return 0.0

    ops, parts = [], {}
    for event in averages:
        if event.key in labels:
            # On CUDA a label comes twice, as a CPU range and as its GPU annotation: one part
            # with the kernels' time ("seconds") and the host's ("host_seconds": launches,
            # index building and waits included). The gap is what the GPU sat idle.
            part = parts.setdefault(event.key, {"part": event.key, "calls": 0, "seconds": 0.0})
            part["calls"] = max(part["calls"], event.count)
            part["seconds"] = max(part["seconds"], (device_us(event, False) if cuda
                                                    else event.cpu_time_total) / 1e6)
            if cuda:
                part["host_seconds"] = max(part.get("host_seconds", 0.0),
                                           event.cpu_time_total / 1e6)
        elif not event.key.startswith("m2as") and event.key != "ProfilerStep*":
            seconds = (device_us(event, True) if cuda else event.self_cpu_time_total) / 1e6
            ops.append({"op": event.key, "calls": event.count, "seconds": seconds,
                        "share": seconds / total_s if total_s else 0.0})
    ops.sort(key=lambda row: -row["seconds"])
    for part in parts.values():
        part["share"] = part["seconds"] / total_s if total_s else 0.0
    return {"ops": ops[:TOP_OPS], "parts": sorted(parts.values(), key=lambda row: row["part"])}
