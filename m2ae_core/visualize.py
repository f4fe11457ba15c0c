"""Colour-wheel picture of per-pixel motion: hue = direction, saturation = speed."""
from __future__ import annotations

import numpy as np


def motion_to_rgb(displacement: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """[2,H,W] (dx, dy) -> uint8 [H,W,3]; white = no motion, vivid colour = fast motion.

    ``max_magnitude`` fixes the scale (default: the largest motion in the picture, at least 1 px).
    """
    dx, dy = displacement[0].astype(np.float64), displacement[1].astype(np.float64)
    magnitude = np.hypot(dx, dy)
    scale = max_magnitude if max_magnitude else max(1.0, float(magnitude.max(initial=0.0)))
    saturation = np.clip(magnitude / scale, 0.0, 1.0)
    hue = (np.arctan2(-dy, -dx) / np.pi + 1.0) * 3.0  # 0..6 around the wheel
    sector = np.floor(hue).astype(int) % 6
    frac = hue - np.floor(hue)
    # HSV -> RGB with value 1: the three channel shapes of each sector
    falling, rising = 1.0 - frac, frac
    one, zero = np.ones_like(frac), np.zeros_like(frac)
    table = [(one, rising, zero), (falling, one, zero), (zero, one, rising),
             (zero, falling, one), (rising, zero, one), (one, zero, falling)]
    rgb = np.zeros(dx.shape + (3,))
    for index, channels in enumerate(table):
        where = sector == index
        for ch in range(3):
            rgb[..., ch][where] = channels[ch][where]
    rgb = 1.0 - saturation[..., None] * (1.0 - rgb)
    return np.round(rgb * 255).astype(np.uint8)


def trajectory_to_rgb(trajectory: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """[2,2,H,W] (start, end) displacement -> colour wheel of the exposure path (end - start)."""
    return motion_to_rgb(trajectory[1] - trajectory[0], max_magnitude)


def mask_overlay(image_rgb: np.ndarray, mask: np.ndarray, colour=(255, 40, 40),
                 opacity: float = 0.45) -> np.ndarray:
    """uint8 [H,W,3] image with the mask tinted, for previews."""
    out = image_rgb.astype(np.float32).copy()
    tint = np.asarray(colour, np.float32)
    out[mask] = out[mask] * (1 - opacity) + tint * opacity
    return np.round(out).astype(np.uint8)
