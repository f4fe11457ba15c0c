"""Rendering a scene of moving objects into a blurred / sharp pair, its blur mask and its
trajectory, in linear light (the rules are in :mod:`m2ae_core.data.synthetic`'s docstring)."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .scene_parts import _to_float, as_chw, subframe_times
from .synth_types import Motion, RenderDebug, SceneObject, SynthSample


COVERAGE_EPS = 1e-3
MOTION_EPS_PX = 0.5
# A pixel takes an object's trajectory when that object's visible coverage at mid-exposure
# is at least this.
DOMINANT_COVERAGE = 0.5


# --------------------------------------------------------------------------------------
# colour
# --------------------------------------------------------------------------------------
def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    """Exact sRGB decoding (IEC 61966-2-1) of values clamped to [0, 1]."""
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    """Exact sRGB encoding of linear values clamped to [0, 1]."""
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.0031308, x * 12.92, 1.055 * x ** (1.0 / 2.4) - 0.055)


# --------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------
def _normalised_grid(px: torch.Tensor, py: torch.Tensor, h: int, w: int) -> torch.Tensor:
    gx = px * (2.0 / max(w - 1, 1)) - 1.0
    gy = py * (2.0 / max(h - 1, 1)) - 1.0
    return torch.stack((gx, gy), dim=-1).float()


def _object_region(obj: SceneObject, times, height: int, width: int):
    """Bounding box (r0, r1, c0, c1) in the frame of everything the object can touch."""
    h, w = obj.alpha.shape[-2:]
    x0, y0 = obj.top_left
    cx = torch.tensor([x0 - 1.0, x0 + w, x0 - 1.0, x0 + w], dtype=torch.float64)
    cy = torch.tensor([y0 - 1.0, y0 - 1.0, y0 + h, y0 + h], dtype=torch.float64)
    centre = obj.resolved_centre()
    xs, ys = [], []
    for t in times:
        dx, dy = obj.motion.forward_displacement(t, cx, cy, centre)
        xs.append(cx + dx)
        ys.append(cy + dy)
    xs, ys = torch.cat(xs), torch.cat(ys)
    r0, r1 = max(0, math.floor(ys.min())), min(height, math.ceil(ys.max()) + 1)
    c0, c1 = max(0, math.floor(xs.min())), min(width, math.ceil(xs.max()) + 1)
    if r0 >= r1 or c0 >= c1:
        return None
    return r0, r1, c0, c1


def _linear_mean(frames: torch.Tensor) -> torch.Tensor:
    acc = frames[0].double()
    for n in range(1, frames.shape[0]):
        acc += frames[n]
    return (acc / frames.shape[0]).float()


def render_scene(background, objects: Sequence[SceneObject] = (), *,
                 size: tuple[int, int] | None = None, subframes: int = 17,
                 camera: Motion | None = None,
                 return_subframes: bool = False) -> SynthSample:
    """Render one blurred/sharp pair without augmentation.

    ``background`` (sRGB) is cropped to its central ``size`` window (default: all of it);
    the margin around that window is what a moving ``camera`` reveals. With ``camera``
    (global blur) ``objects`` must be empty. Otherwise each object moves by its own
    ``Motion`` over the static background. ``subframes`` must be odd and >= 3.
    """
    if subframes < 3 or subframes % 2 == 0:
        raise ValueError(f"subframes must be odd and >= 3, got {subframes}")
    bg = _to_float(as_chw(background))
    hb, wb = bg.shape[-2:]
    height, width = size if size is not None else (hb, wb)
    oy, ox = (hb - height) // 2, (wb - width) // 2
    if oy < 0 or ox < 0:
        raise ValueError(f"background {hb}x{wb} is smaller than the frame {height}x{width}")
    times = subframe_times(subframes)
    mid = subframes // 2
    lin_bg = srgb_to_linear(bg)
    ys_full = torch.arange(height, dtype=torch.float64)[:, None].expand(height, width)
    xs_full = torch.arange(width, dtype=torch.float64)[None, :].expand(height, width)

    if camera is not None:
        if len(objects):
            raise ValueError("a camera-shake scene takes no separate moving objects")
        frames = torch.empty(subframes, 3, height, width)
        window = lin_bg[:, oy:oy + height, ox:ox + width]
        centre = ((width - 1) / 2.0, (height - 1) / 2.0)
        moving = [n for n, t in enumerate(times) if not camera.is_identity_at(t)]
        for n in range(subframes):
            if n not in moving:
                frames[n] = window
        if moving:
            grids = []
            for n in moving:
                px, py = camera.inverse_map(times[n], xs_full, ys_full, centre)
                grids.append(_normalised_grid(px + ox, py + oy, hb, wb))
            frames[moving] = F.grid_sample(
                lin_bg[None].expand(len(moving), -1, -1, -1), torch.stack(grids),
                mode="bilinear", padding_mode="border", align_corners=True)
        traj = torch.stack([torch.stack(camera.forward_displacement(t, xs_full, ys_full, centre))
                            for t in (-1.0, 1.0)]).float()
        mask = torch.ones(height, width, dtype=torch.bool)
        alphas = torch.zeros(0, subframes, height, width)
        motion_px = torch.zeros(0, height, width)
    else:
        frames = lin_bg[:, oy:oy + height, ox:ox + width].expand(subframes, -1, -1, -1).clone()
        k_count = len(objects)
        alphas = torch.zeros(k_count, subframes, height, width)
        motion_px = torch.zeros(k_count, height, width)
        obj_traj = torch.zeros(k_count, 2, 2, height, width)
        for k, obj in enumerate(objects):
            region = _object_region(obj, times, height, width)
            if region is None:
                continue
            _composite_object(obj, k, region, times, frames, alphas, motion_px, obj_traj)
        # visible coverage, front to back
        vis = alphas.clone()
        clear = torch.ones(subframes, height, width)
        for k in reversed(range(k_count)):
            vis[k] = alphas[k] * clear
            clear = clear * (1.0 - alphas[k])
        if k_count:
            w_max, w_min = vis.amax(dim=1), vis.amin(dim=1)
            covered = w_max > COVERAGE_EPS
            changes = (w_max - w_min) > COVERAGE_EPS
            mask = (covered & (changes | (motion_px >= MOTION_EPS_PX))).any(dim=0)
            w_mid = vis[:, mid]
            best_w, best_k = w_mid.max(dim=0)
            chosen = torch.gather(obj_traj, 0, best_k[None, None, None].expand(1, 2, 2, -1, -1))[0]
            traj = torch.where(best_w >= DOMINANT_COVERAGE, chosen, torch.zeros(()))
        else:
            mask = torch.zeros(height, width, dtype=torch.bool)
            traj = torch.zeros(2, 2, height, width)

    lin_blur = _linear_mean(frames)
    lin_sharp = frames[mid]
    sharp = linear_to_srgb(lin_sharp)
    blur = torch.where(lin_blur == lin_sharp, sharp, linear_to_srgb(lin_blur))
    debug = None
    if return_subframes:
        debug = RenderDebug(subframes=linear_to_srgb(frames), alphas=alphas,
                            motion_px=motion_px, times=times, mid=mid)
    return SynthSample(blur=blur.contiguous(), sharp=sharp.contiguous(), mask=mask,
                       trajectory=traj.contiguous(), is_global=camera is not None,
                       debug=debug)


def _composite_object(obj, k, region, times, frames, alphas, motion_px, obj_traj) -> None:
    r0, r1, c0, c1 = region
    rh, rw = r1 - r0, c1 - c0
    alpha = obj.alpha.float()
    h, w = alpha.shape
    x0, y0 = obj.top_left
    layer = torch.cat([srgb_to_linear(_to_float(as_chw(obj.texture))) * alpha, alpha[None]])
    if tuple(layer.shape[-2:]) != (h, w):
        raise ValueError("object texture and alpha must have the same size")
    centre = obj.resolved_centre()
    ys = torch.arange(r0, r1, dtype=torch.float64)[:, None].expand(rh, rw)
    xs = torch.arange(c0, c1, dtype=torch.float64)[None, :].expand(rh, rw)

    warped = torch.zeros(len(times), 4, rh, rw)
    moving = [n for n, t in enumerate(times) if not obj.motion.is_identity_at(t)]
    # identity frames: paste the box (integer position)
    fy0, fy1 = max(r0, y0), min(r1, y0 + h)
    fx0, fx1 = max(c0, x0), min(c1, x0 + w)
    for n in range(len(times)):
        if n not in moving and fy0 < fy1 and fx0 < fx1:
            warped[n, :, fy0 - r0:fy1 - r0, fx0 - c0:fx1 - c0] = \
                layer[:, fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0]
    if moving:
        grids = []
        for n in moving:
            px, py = obj.motion.inverse_map(times[n], xs, ys, centre)
            grids.append(_normalised_grid(px - x0, py - y0, h, w))
        warped[moving] = F.grid_sample(layer[None].expand(len(moving), -1, -1, -1),
                                       torch.stack(grids), mode="bilinear",
                                       padding_mode="zeros", align_corners=True)
    a = warped[:, 3:4]
    view = frames[:, :, r0:r1, c0:c1]
    view.mul_(1.0 - a).add_(warped[:, :3])
    alphas[k, :, r0:r1, c0:c1] = a[:, 0]
    m = torch.zeros(rh, rw, dtype=torch.float64)
    for t in times:
        dx, dy = obj.motion.forward_displacement(t, xs, ys, centre)
        m = torch.maximum(m, torch.hypot(dx, dy))
    motion_px[k, r0:r1, c0:c1] = m.float()
    for i, t in enumerate((-1.0, 1.0)):
        dx, dy = obj.motion.forward_displacement(t, xs, ys, centre)
        obj_traj[k, i, 0, r0:r1, c0:c1] = dx.float()
        obj_traj[k, i, 1, r0:r1, c0:c1] = dy.float()
