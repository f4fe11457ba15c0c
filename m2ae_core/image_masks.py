"""User blur masks of any accepted kind -> the model's boolean [B, 1, H, W] mask.
Part of :mod:`m2ae_core.imageio`'s public API."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import ImageInputError
from .image_files import read_image
from .image_tensors import check_finite_np, pil_pixels, torch_layout

__all__ = ["mask_to_tensor"]


def _mask_float_np(arr: np.ndarray) -> np.ndarray:
    """numpy mask values -> float32 in 0..1 by dtype."""
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if arr.dtype.kind == "f":
        check_finite_np(arr)
        return np.clip(arr, 0.0, 1.0).astype(np.float32)
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype.kind == "u" and arr.dtype.itemsize == 2:
        return arr.astype(np.float32) / 65535.0
    if arr.dtype.kind in "iu":
        if arr.size and (arr.min() < 0 or arr.max() > 1):
            raise ImageInputError(
                f"mask of dtype {arr.dtype} must contain only 0 and 1 (use bool, uint8 0..255, "
                "uint16 or float 0..1)"
            )
        return arr.astype(np.float32)
    raise ImageInputError(f"unsupported mask dtype {arr.dtype} (use bool, uint8, uint16 or float 0..1)")


def _mask_float_torch(t: torch.Tensor) -> torch.Tensor:
    t = t.detach()
    if t.dtype == torch.bool:
        return t.to(torch.float32)
    if t.is_floating_point():
        if not bool(torch.isfinite(t).all()):
            raise ImageInputError("mask contains NaN or Inf values (fix the mask, e.g. with nan_to_num)")
        return t.to(torch.float32).clamp(0.0, 1.0)
    if t.dtype == torch.uint8:
        return t.to(torch.float32) / 255.0
    if t.dtype == getattr(torch, "uint16", None):
        return t.to(torch.float32) / 65535.0
    if t.dtype.is_complex:
        raise ImageInputError(f"unsupported mask dtype {t.dtype} (use bool, uint8, uint16 or float 0..1)")
    f = t.to(torch.float32)
    if f.numel() and (float(f.min()) < 0 or float(f.max()) > 1):
        raise ImageInputError(
            f"mask of dtype {t.dtype} must contain only 0 and 1 (use bool, uint8 0..255, uint16 or float 0..1)"
        )
    return f


def _mask_nchw(mask: Any) -> torch.Tensor:
    """Any accepted mask -> float32 [B, C, h, w] in 0..1 (C in 1..4; alpha last for C=2/4)."""
    if isinstance(mask, Image.Image):
        if mask.width == 0 or mask.height == 0:
            raise ImageInputError("mask is empty (zero width or height)")
        arr, scale, _mode, _grey, _alpha = pil_pixels(mask)
        if arr.dtype == np.bool_:
            f = arr.astype(np.float32)
        elif arr.dtype.kind == "f":
            check_finite_np(arr)
            f = np.clip(arr, 0.0, 1.0).astype(np.float32)
        else:
            f = np.clip(arr.astype(np.float32) / np.float32(scale), 0.0, 1.0)
        return torch.from_numpy(np.ascontiguousarray(f.transpose(2, 0, 1)))[None]
    if isinstance(mask, np.ndarray):
        if mask.ndim == 2:
            mask = mask[..., None]
        elif not (mask.ndim == 3 and mask.shape[2] in (1, 2, 3, 4)):
            raise ImageInputError(
                f"numpy masks must be HW or HWC with C in 1..4, got shape {mask.shape}"
            )
        if mask.size == 0:
            raise ImageInputError(f"mask is empty (shape {mask.shape})")
        f = _mask_float_np(mask)
        return torch.from_numpy(np.ascontiguousarray(f.transpose(2, 0, 1)))[None]
    if isinstance(mask, torch.Tensor):
        if mask.numel() == 0:
            raise ImageInputError(f"mask is empty (shape {tuple(mask.shape)})")
        if mask.ndim == 2:
            t = mask[None, None]
        elif mask.ndim == 3:  # ComfyUI MASK [B, H, W]
            t = mask[:, None]
        elif mask.ndim == 4:
            if mask.shape[1] == 1:
                t = mask
            else:
                layout = torch_layout(mask)
                t = mask.permute(0, 3, 1, 2) if layout == "BHWC" else mask
        else:
            raise ImageInputError(
                f"mask tensors must be [H, W], [B, H, W] or [B, 1, H, W], got shape {tuple(mask.shape)}"
            )
        return _mask_float_torch(t)
    raise ImageInputError(
        f"unsupported mask type {type(mask).__name__} (pass a file path, a PIL image, a numpy "
        "array or a torch tensor)"
    )


def _reduce_channels(m: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] -> [B, 1, h, w] following the documented channel rule."""
    c = m.shape[1]
    if c == 1:
        return m
    if c == 3:
        return m.amax(dim=1, keepdim=True)
    colour = m[:, :1] if c == 2 else m[:, :3].amax(dim=1, keepdim=True)
    alpha = m[:, -1:]
    eps = 1e-6
    flat_a = alpha.flatten(1)
    alpha_varies = (flat_a.amax(1) - flat_a.amin(1)) > eps
    opaque = (alpha >= 0.5).flatten(1)
    flat_c = colour.flatten(1)
    cmax = torch.where(opaque, flat_c, torch.full_like(flat_c, -1.0)).amax(1)
    cmin = torch.where(opaque, flat_c, torch.full_like(flat_c, 2.0)).amin(1)
    colour_const = ~opaque.any(1) | ((cmax - cmin) <= eps)
    use_alpha = (alpha_varies & colour_const).view(-1, 1, 1, 1)
    return torch.where(use_alpha, alpha, colour)


def mask_to_tensor(mask: Any, height: int, width: int, batch: int = 1) -> torch.Tensor:
    """Turn a user mask into a bool tensor [batch, 1, height, width] (True = blurred).

    ``mask`` may be a file path (read with :func:`read_image`), a PIL image
    (L, 1, RGB, RGBA, LA, P, I;16, F, ...), a numpy array (bool, uint8,
    uint16, float; HW or HWC) or a torch tensor ([H, W], [B, H, W] as a
    ComfyUI MASK, [B, 1, H, W], or an NCHW/BHWC image tensor), at any
    resolution.

    Values are normalised to 0..1 by dtype (uint8 / 255, uint16 / 65535,
    float clamped; other integer types must be 0/1).  Channels: RGB -> max
    over the channels.  With alpha (LA, RGBA): if the alpha varies and the
    colour (max over colour channels) is constant over the pixels with
    alpha >= 0.5 -- a brush of one colour painted on a transparent layer --
    the alpha is the mask; otherwise the colour is, as for RGB.  The choice is
    made per batch item.  The mask is then resized to (height, width) if needed --
    nearest neighbour when enlarging (shapes keep their corners), antialiased
    bilinear when shrinking -- and thresholded at >= 0.5.  A single mask is broadcast over ``batch``; a
    batch of masks must have exactly ``batch`` items.  The result is on the
    mask tensor's device (CPU otherwise).
    """
    for label, value in (("height", height), ("width", width), ("batch", batch)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ImageInputError(f"mask_to_tensor: {label} must be a positive integer, got {value!r}")
    if isinstance(mask, (str, os.PathLike)):
        mask = read_image(mask)
    m = _reduce_channels(_mask_nchw(mask))
    if m.shape[2:] != (height, width):
        if m.shape[2] <= height and m.shape[3] <= width:
            # enlarging: nearest keeps a painted shape's corners (bilinear + threshold cuts them)
            m = F.interpolate(m, size=(int(height), int(width)), mode="nearest-exact")
        else:
            m = F.interpolate(m, size=(int(height), int(width)), mode="bilinear",
                              align_corners=False, antialias=True)
    out = m >= 0.5
    if out.shape[0] == batch:
        return out.contiguous()
    if out.shape[0] == 1:
        return out.expand(int(batch), -1, -1, -1).contiguous()
    raise ImageInputError(
        f"mask batch has {out.shape[0]} masks but the image batch has {batch} images "
        "(pass one mask, or one mask per image)"
    )
