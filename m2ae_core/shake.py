"""Camera-shake test from the image itself: does any part of the frame hold sharp edges in
every direction?

A moving object leaves the static background sharp; camera shake blurs every edge whose
gradient points along the motion. So the test counts *sharp edge pixels* per direction (four:
0, 45, 90, 135 degrees) and keeps the direction with fewest. An edge pixel is sharp when its
largest one-pixel step is most of the rise over four pixels across it: a step edge gives
~1, an edge smeared over L >= 4 pixels ~1/4. Frames where that count falls below a threshold
(per mille of the pixels) count as shaken.

Why not the learned heads: sessions 9-11 (issue 3) found that a decision pooled from the
small network's features cannot tell a shaken frame from a smooth one with a moving object;
this count can, on the synthetic sets (docs/training-experiments.md, "Camera shake from sharp
edges").
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# A pixel is an edge in a direction when the rise over four pixels across it exceeds this
# (sRGB luma, 0..1): above sensor noise and JPEG ringing of the synthetic sets (sigma <= 0.012).
EDGE_RISE = 0.08
# ... and a sharp one when its largest one-pixel step is at least this share of that rise.
SHARP_SHARE = 0.8
# (dy, dx) unit steps of the four directions: 0, 90, 45 and 135 degrees
_DIRECTIONS = ((0, 1), (1, 0), (1, 1), (1, -1))
_MARGIN = 2
# Larger images are counted at this longer side. A photo of many megapixels is soft per
# pixel (optics, demosaicing, JPEG): at its own scale 6 of the 24 sharp source photos in
# ../shared/data/photos count fewer than 0.5 per mille sharp edges, at 1024 px one (a retina
# scan, smooth at any scale). A camera shake of 20+ px at 4000 px still spans 5+ px here.
WORKING_SIDE = 1024


def _luma(image: torch.Tensor) -> torch.Tensor:
    """[B,3,H,W] or [B,1,H,W] in 0..1 -> [B,H,W] (Rec. 601 weights)."""
    if image.shape[1] == 1:
        return image[:, 0].float()
    r, g, b = image.float().unbind(1)[:3]
    return 0.299 * r + 0.587 * g + 0.114 * b


def _shifted(y: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """The interior of ``y`` (``_MARGIN`` pixels cut from each side) moved by (dy, dx)."""
    h, w = y.shape[-2:]
    m = _MARGIN
    return y[:, m + dy:h - m + dy, m + dx:w - m + dx]


def sharp_edge_counts(image: torch.Tensor, edge_rise: float = EDGE_RISE,
                      sharp_share: float = SHARP_SHARE) -> torch.Tensor:
    """Sharp edge pixels per image and direction (0, 90, 45, 135 degrees): int [B,4], counted
    over the interior (``_MARGIN`` pixels from each side) of a batch [B,C,H,W] in 0..1."""
    if image.dim() != 4:
        raise ValueError(f"expected an image batch [B,C,H,W], got shape {tuple(image.shape)}")
    y = _luma(image)
    if min(y.shape[-2:]) <= 2 * _MARGIN:
        return torch.zeros(y.shape[0], len(_DIRECTIONS), dtype=torch.long)
    centre = _shifted(y, 0, 0)
    counts = []
    for dy, dx in _DIRECTIONS:
        ahead, behind = _shifted(y, dy, dx), _shifted(y, -dy, -dx)
        step = torch.maximum((ahead - centre).abs(), (centre - behind).abs())
        rise = (_shifted(y, 2 * dy, 2 * dx) - _shifted(y, -2 * dy, -2 * dx)).abs()
        sharp = (rise > edge_rise) & (step >= sharp_share * rise)
        counts.append(sharp.flatten(1).sum(1))
    return torch.stack(counts, 1)


def sharp_edge_share(image: torch.Tensor, **kwargs) -> torch.Tensor:
    """Per image of a batch [B,C,H,W] (0..1): the share of its pixels, in per mille, that are
    sharp edges in the direction that has fewest of them. Float [B]."""
    h, w = image.shape[-2:]
    fewest = sharp_edge_counts(image, **kwargs).min(1).values
    return fewest.float() * 1000.0 / (h * w)


def at_working_scale(image: torch.Tensor, side: int = WORKING_SIDE) -> torch.Tensor:
    """``image`` with its longer side brought down to ``side`` (area average; never up)."""
    h, w = image.shape[-2:]
    scale = side / max(h, w)
    if scale >= 1:
        return image
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return F.interpolate(image.float(), size=size, mode="area")


def looks_shaken(image: torch.Tensor, below: float, working_side: int = WORKING_SIDE
                 ) -> torch.Tensor:
    """Bool [B]: frames with fewer sharp edges than ``below`` per mille (0: never), counted
    at the working scale."""
    if below <= 0:
        return torch.zeros(image.shape[0], dtype=torch.bool)
    return sharp_edge_share(at_working_scale(image, working_side)) < below
