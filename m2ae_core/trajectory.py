"""Per-pixel exposure trajectory: quadratic interpolation between start and end displacement.

Displacements are (dx, dy) in pixels of the grid they live on, measured from the pixel's
position at mid-exposure (paper eq. 4): o(s) = (o_s + o_e)/2 * s^2 + (o_e - o_s)/2 * s,
s in [-1, 1], so o(-1) = o_s, o(1) = o_e and o(0) = 0.
"""
from __future__ import annotations

import torch


def instant_positions(instants: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Normalised exposure times s_n = 2n/(N-1) - 1 for n = 0..N-1."""
    return torch.linspace(-1.0, 1.0, instants, device=device, dtype=dtype)


def trajectory_instants(start: torch.Tensor, end: torch.Tensor, instants: int = 9) -> torch.Tensor:
    """Displacements at ``instants`` times along the quadratic path.

    ``start``/``end`` have shape [..., 2, H, W] (or [Q, 2]); the result inserts an instant axis
    before the (dx, dy) axis: [..., N, 2, H, W] (or [Q, N, 2]).
    """
    pixel_layout = start.dim() >= 3
    s = instant_positions(instants, start.device, start.dtype)
    quad = (start + end) * 0.5
    lin = (end - start) * 0.5
    if pixel_layout:
        shape = [1] * (start.dim() - 3) + [instants, 1, 1, 1]
        s = s.view(shape)
        return quad.unsqueeze(-4) * s * s + lin.unsqueeze(-4) * s
    s = s.view(1, instants, 1)
    return quad.unsqueeze(1) * s * s + lin.unsqueeze(1) * s
