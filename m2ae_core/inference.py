"""``deblur``: any image in, restored image + mask + trajectory + stats out (DESIGN §1).

Data path: to_tensor -> (per batch item, per tile) network: pad -> mask + trajectory -> pruned
restore -> crop -> blend tiles -> optional sharp-preserving composite -> back to the input kind.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from . import imageio
from .macs import StagePixels, count_macs
from .network import M2AENet
from .global_context import ContextRecorder, fixed_context
from .self_ensemble import views
from .tiling import (DEFAULT_OVERLAP, available_memory, blend_weight, resolve_tile_size,
                     tile_grid, untiled_bytes_per_pixel)

ProgressCallback = Callable[[int, int], None]  # (tiles done, tiles total); may raise to abort
TILE_CONTEXTS = ("image", "tile")


@dataclass
class DeblurResult:
    """Output of :func:`deblur`. Maps are at input resolution; batched inputs add a leading B."""

    image: Any  # same kind as the input (None from ``analyze``)
    mask: np.ndarray  # bool [H,W]: the mask actually used (all True for a plain backbone)
    probability: np.ndarray  # float32 [H,W] blur probability (1.0 everywhere for a plain
    # backbone; the given mask itself where one was given: the predictor does not run then)
    trajectory: np.ndarray | None  # float32 [2,2,H,W]: (start, end) x (dx, dy), input pixels
    stats: dict = field(default_factory=dict)


@dataclass
class _Maps:
    """Per-item accumulators for the blended outputs."""

    image: torch.Tensor
    probability: torch.Tensor
    mask: torch.Tensor
    trajectory: torch.Tensor | None
    weight: torch.Tensor


def _stage_maps(stages, height: int, width: int, has_user_mask: bool, user_mask):
    """Probability, mask used and trajectory of the shallowest M2AS stage at tile resolution."""
    first = stages[0]
    size = (height, width)
    if has_user_mask:  # the predictor did not run: the mask is the probability
        used = user_mask.float()
        probability = used
    else:  # every input pixel covered by a blurred grid pixel was processed
        probability = first.at_input(first.probability, size, "bilinear")
        used = first.at_input(first.mask, size)
    motion = first.trajectory_at(size)
    return probability[0, 0], used[0, 0], motion[0].view(2, 2, height, width)


def _feather(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Soft [H,W] alpha: the mask grown by ``radius`` and then blurred over ``radius`` pixels."""
    m = mask[None, None].float()
    grown = F.max_pool2d(m, 2 * radius + 1, stride=1, padding=radius)
    soft = F.avg_pool2d(grown, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)
    return soft[0, 0]


def _check_model(model) -> None:
    if not isinstance(model, M2AENet):
        raise TypeError(f"deblur expects an M2AENet from load_model()/build_model(), got {type(model).__name__}")


def deblur(model: M2AENet, image, *, mask=None, threshold: float = 0.5, pruned: bool = True,
           preserve_sharp: bool = False, tile: int | None = None,
           tile_context: str = "image", progress: ProgressCallback | None = None,
           shake_test: bool = True, ensemble: int = 1) -> DeblurResult:
    """Remove local motion blur from ``image`` (PIL, numpy HWC/HW, torch NCHW or BHWC).

    mask: optional user mask (any resolution/kind) replacing the predicted one.
    threshold: blur probability above which a pixel is processed.
    pruned: compute the mask-aware convs only on blurred pixels (exact; False = dense path).
    preserve_sharp: keep input pixels outside the (feathered) mask untouched; inside a
        predicted mask, blend toward the input where the blur probability is low.
    tile: None = automatic: whole when the estimated memory fits in half of what the device
        has available (divided among the calls running at once in this process), else the
        largest tiles that do (by pixel count where the available memory is unknown);
        0 = never; N = N x N tiles with overlap. ``stats["tiles"]`` says how many were used.
    tile_context: what the network's global pooling sees when tiling. "image" (default): the
        whole image, as untiled (two passes over the tiles, about twice the time); "tile":
        each tile its own (one pass; tiles may disagree slightly).
    progress: called as progress(done, total) after each tile; raise from it to abort.
    shake_test: let a model with a camera-shake test (``config.shake_edges_below``) mark a
        frame it finds shaken as blurred everywhere; False = its heads alone decide (e.g. a
        moving subject in front of a plain, featureless backdrop). ``stats["camera_shake"]``
        tells what the test found.
    ensemble: restore this many mirrored / rotated copies (1, 2, 4 or 8) and average them,
        each turned back (self-ensemble): blurred regions a little sharper and the
        background less altered (docs/results/self-ensemble/), at that many times the time.
        The maps are the copies' consensus.
    """
    with RUNS_IN_FLIGHT:
        return _run(model, image, mask, threshold, tile, progress, tile_context, restore=True,
                    pruned=pruned, preserve_sharp=preserve_sharp, shake_test=shake_test,
                    ensemble=ensemble)


def analyze(model: M2AENet, image, *, mask=None, threshold: float = 0.5,
            tile: int | None = None, tile_context: str = "image",
            progress: ProgressCallback | None = None, shake_test: bool = True,
            ensemble: int = 1) -> DeblurResult:
    """Blur mask, probability and trajectory only, without restoring (``.image`` is None).

    Runs the network only up to its first M2AS stage, so it costs a fraction of ``deblur``;
    the maps equal those ``deblur`` reports for the same input and settings.
    """
    with RUNS_IN_FLIGHT:
        return _run(model, image, mask, threshold, tile, progress, tile_context, restore=False,
                    shake_test=shake_test, ensemble=ensemble)


class _RunCounter:
    """How many ``deblur`` / ``analyze`` calls run at once in this process (a web demo's
    worker threads): automatic tiling gives each an equal share of the available memory, since
    one run's estimate cannot see what the others are about to allocate."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def __enter__(self) -> "_RunCounter":
        with self._lock:
            self.count += 1
        return self

    def __exit__(self, *exc_info) -> None:
        with self._lock:
            self.count -= 1


RUNS_IN_FLIGHT = _RunCounter()


def _available_share(device: torch.device) -> int | None:
    available = available_memory(device)
    return None if available is None else available // max(1, RUNS_IN_FLIGHT.count)


def _check_tile_context(tile_context: str) -> None:
    if tile_context not in TILE_CONTEXTS:
        raise ValueError(f"tile_context must be one of {', '.join(TILE_CONTEXTS)}, got {tile_context!r}")


def _record_image_context(model, run_tile, tile_inputs, tiles, h: int, w: int, step):
    """Pass 1 of image-wide context: every pooling site's mean (or max) over the whole image."""
    total = torch.zeros(h, w)
    for t in tiles:
        total[t.slices] += blend_weight(t, h, w, DEFAULT_OVERLAP)
    recorder = ContextRecorder(model, model.config.pad_multiple)
    for t in tiles:
        share = blend_weight(t, h, w, DEFAULT_OVERLAP) / total[t.slices]
        with recorder.tile(share):
            run_tile(*tile_inputs(t))
        step()
    return recorder.pooled()


def _run(model, image, mask, threshold, tile, progress, tile_context: str = "image", *,
         restore: bool, pruned: bool = True, preserve_sharp: bool = False,
         shake_test: bool = True, ensemble: int = 1) -> DeblurResult:
    _check_model(model)
    _check_tile_context(tile_context)
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be within 0..1, got {threshold}")
    ensemble_views = views(ensemble)
    started = time.perf_counter()
    batch, meta = imageio.to_tensor(image)
    b, _, h, w = batch.shape
    user_mask = None if mask is None else imageio.mask_to_tensor(mask, h, w, batch=b)
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    tile_size = resolve_tile_size(
        tile, h, w, bytes_per_pixel=untiled_bytes_per_pixel(model.config.width, dtype),
        available=_available_share(device) if tile is None else None)
    # each view's tiles (a quarter turn swaps height and width); the first view is the image
    view_grids = [tile_grid(*v.size(h, w), tile_size or max(h, w)) for v in ensemble_views]
    tiles = view_grids[0]
    has_stages = bool(model.config.m2as_stages)

    was_training = model.training
    model.eval()
    macs = dense_macs = processed = grid_pixels = 0
    outputs, shake_flags = [], []

    def two_pass(n_tiles: int) -> bool:  # image-wide context is recorded in a first pass
        return n_tiles > 1 and tile_context == "image"

    def passes(n_tiles: int) -> int:
        return n_tiles * (2 if two_pass(n_tiles) else 1)

    total_steps = b * sum(passes(len(grid)) for grid in view_grids)
    done = 0

    def step():
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total_steps)

    shaken = None  # the current item's camera-shake decision, made on the whole image

    def restore_tile(x, tile_mask):
        # counted on every call: with image-wide context the first pass costs as much
        nonlocal macs, dense_macs
        out = model(x, mask=tile_mask, threshold=threshold, pruned=pruned, shaken=shaken)
        counts = {s.stage: StagePixels(s.masked_pixels, s.dilated_pixels) for s in out.stages}
        height, width = x.shape[-2:]
        given = tile_mask is not None
        macs += count_macs(model.config, height, width,
                           counts if pruned and has_stages else None, mask_given=given)
        dense_macs += count_macs(model.config, height, width, mask_given=given)
        return out

    def analyze_tile(x, tile_mask):
        return model.analyze(x, mask=tile_mask, threshold=threshold, shaken=shaken)

    def run_view(x_view, mask_view, view_tiles) -> _Maps:
        """Tile-blended sums over one view of one item (layout of the view)."""
        nonlocal processed, grid_pixels
        vh, vw = x_view.shape[-2:]

        def tile_inputs(t):
            rows, cols = t.slices
            # full precision in: a bf16 / fp16 network casts it and adds its residual to it
            x = x_view[:, :, rows, cols].to(device=device)
            return x, None if mask_view is None else mask_view[:, :, rows, cols].to(device)

        pooled = {}
        if two_pass(len(view_tiles)):
            pooled = _record_image_context(model, restore_tile if restore else analyze_tile,
                                           tile_inputs, view_tiles, vh, vw, step)
        maps = _Maps(torch.zeros(3, vh, vw), torch.zeros(vh, vw), torch.zeros(vh, vw),
                     torch.zeros(2, 2, vh, vw) if has_stages else None, torch.zeros(vh, vw))
        for t in view_tiles:
            rows, cols = t.slices
            x, tile_mask = tile_inputs(t)
            weight = blend_weight(t, vh, vw, DEFAULT_OVERLAP) if len(view_tiles) > 1 \
                else torch.ones(t.height, t.width)
            maps.weight[rows, cols] += weight
            with fixed_context(pooled):
                if restore:
                    out = restore_tile(x, tile_mask)
                    maps.image[:, rows, cols] += out.image[0].float().cpu() * weight
                    stages = out.stages
                else:
                    first = analyze_tile(x, tile_mask)
                    stages = [first] if first is not None else []
            if stages:
                prob, used, motion = _stage_maps(stages, t.height, t.width,
                                                 tile_mask is not None, tile_mask)
                maps.probability[rows, cols] += prob.cpu() * weight
                maps.mask[rows, cols] += used.cpu() * weight
                maps.trajectory[:, :, rows, cols] += motion.cpu() * weight
                processed += stages[0].masked_pixels
                grid_pixels += stages[0].mask[0, 0].numel()
            step()
        return maps

    try:
        with torch.inference_mode():
            for item in range(b):
                if user_mask is None and model.config.shake_edges_below:
                    if shake_test:
                        shaken = model.detect_shake(batch[item:item + 1])
                    else:  # an explicit "no" keeps the model from testing each tile itself
                        shaken = torch.zeros(1, dtype=torch.bool)
                    shake_flags.append(bool(shaken[0]))
                summed = None
                for view, grid in zip(ensemble_views, view_grids):  # one shake decision
                    x_view = view.apply(batch[item:item + 1])
                    mask_view = None if user_mask is None else view.apply(user_mask[item:item + 1])
                    maps = run_view(x_view, mask_view, grid)
                    summed = _add_view(summed, _averaged(maps, has_stages), view)
                if len(ensemble_views) > 1:
                    for total in summed:
                        if total is not None:
                            total.div_(len(ensemble_views))
                outputs.append(_finish_item(*summed, batch[item], preserve_sharp,
                                            mask_given=user_mask is not None))
    finally:
        model.train(was_training)

    masks = np.stack([o[1] for o in outputs])
    probs = np.stack([o[2] for o in outputs])
    trajectories = np.stack([o[3] for o in outputs]) if has_stages else None
    if b == 1:
        masks, probs = masks[0], probs[0]
        trajectories = trajectories[0] if trajectories is not None else None
    stats = {
        "fraction_processed": processed / grid_pixels if grid_pixels else 1.0,
        "seconds": time.perf_counter() - started,
        "tiles": len(tiles),
        "tile_context": tile_context if len(tiles) > 1 else "image",
        "ensemble": len(ensemble_views),
        "pixels": h * w,
        "device": str(device),
    }
    if shake_flags:  # the model's camera-shake test ran: was the frame processed whole?
        stats["camera_shake"] = shake_flags[0] if b == 1 else shake_flags
    restored = None
    if restore:
        stats.update(macs=int(macs), dense_macs=int(dense_macs), pruned=bool(pruned and has_stages))
        restored = imageio.from_tensor(torch.stack([o[0] for o in outputs]), meta)
    return DeblurResult(restored, masks, probs, trajectories, stats)


def _sharp_preserving_alpha(mask: torch.Tensor, probability: torch.Tensor,
                            mask_given: bool) -> torch.Tensor:
    """How much of the restored image each pixel takes (0 = the input, untouched).

    Zero outside the feathered mask. Inside, a predicted mask is weighted by its blur
    probability: the network alters sharp content too, so a pixel it is unsure about keeps
    part of the input (frozen benchmark: sharp-pixel PSNR +0.8 dB, blurred-pixel PSNR
    -0.05 dB against the feathered mask alone). A given mask is trusted as it is.
    """
    alpha = _feather(mask, radius=4)
    return alpha if mask_given else alpha * probability


def _averaged(maps: _Maps, has_stages: bool) -> list:
    """[image, probability, mask share, trajectory] of one view: the tiles' blend, divided
    out in place (a big image's maps are large)."""
    weight = maps.weight.clamp_min_(1e-8)
    image = maps.image.div_(weight).clamp_(0, 1)  # each view's restoration is an image itself
    if not has_stages:
        return [image, torch.ones_like(weight), torch.ones_like(weight), None]
    return [image, maps.probability.div_(weight), maps.mask.div_(weight),
            maps.trajectory.div_(weight)]


def _add_view(total: list | None, view_maps: list, view) -> list:
    """``total`` plus a view's maps turned back to the original layout, summed in place one
    map at a time (a big image's maps are large)."""
    turners = (view.undo, view.undo, view.undo, view.undo_vectors)  # trajectory: vectors too
    if total is None:
        return [None if m is None else turn(m) for turn, m in zip(turners, view_maps)]
    for existing, turn, part in zip(total, turners, view_maps):
        if part is not None:
            existing.add_(turn(part))
    return total


def _finish_item(image, probability, mask_share, trajectory, original: torch.Tensor,
                 preserve_sharp: bool, *, mask_given: bool):
    """Final image and maps of one item. ``mask_share``: each pixel's share of tiles and
    views that processed it; a majority marks it as used."""
    mask = mask_share >= 0.5
    if preserve_sharp:
        alpha = _sharp_preserving_alpha(mask, probability, mask_given)
        image = alpha * image + (1 - alpha) * original.float()
    return (image, mask.numpy(), probability.numpy().astype(np.float32),
            None if trajectory is None else trajectory.numpy().astype(np.float32))

