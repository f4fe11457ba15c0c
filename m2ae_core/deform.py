"""Motion-aware depthwise deformable 3x3 convolution (DESIGN §2), pure PyTorch.

Tap n of the kernel at pixel z reads the input bilinearly at z + o_n(z), o_n the pixel's
displacement at exposure instant n, zero outside the image, and is weighted by w[c, n].
With zero motion every tap reads z itself.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .trajectory import trajectory_instants


def _normalise(coord: torch.Tensor, size: int) -> torch.Tensor:
    """Pixel coordinate -> grid_sample's [-1, 1] range (align_corners=False)."""
    return (2.0 * coord + 1.0) / size - 1.0


def deform_conv_dense(x: torch.Tensor, start: torch.Tensor, end: torch.Tensor,
                      weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Deformable depthwise conv at every pixel.

    x [B,C,H,W]; start/end [B,2,H,W] displacements; weight [C,9]; bias [C].
    All nine taps are sampled by one ``grid_sample`` call.
    """
    if x.dtype in (torch.float16, torch.bfloat16):  # half-precision coordinates lose pixels
        return deform_conv_dense(x.float(), start.float(), end.float(), weight.float(),
                                 bias.float()).to(x.dtype)
    b, c, h, w = x.shape
    taps = weight.shape[1]
    offsets = trajectory_instants(start, end, taps)  # [B,9,2,H,W]
    ys = torch.arange(h, device=x.device, dtype=x.dtype).view(1, 1, h, 1)
    xs = torch.arange(w, device=x.device, dtype=x.dtype).view(1, 1, 1, w)
    gx = _normalise(xs + offsets[:, :, 0], w)  # [B,9,H,W]
    gy = _normalise(ys + offsets[:, :, 1], h)
    grid = torch.stack((gx, gy), dim=-1).reshape(b, taps * h, w, 2)
    sampled = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    sampled = sampled.view(b, c, taps, h, w)
    return (sampled * weight.view(1, c, taps, 1, 1)).sum(2) + bias.view(1, c, 1, 1)


def deform_conv_at(x: torch.Tensor, batch_index: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor,
                   start: torch.Tensor, end: torch.Tensor, weight: torch.Tensor,
                   bias: torch.Tensor) -> torch.Tensor:
    """Deformable depthwise conv at Q chosen pixels only.

    x [B,C,H,W]; batch_index/ys/xs [Q] integer pixel positions; start/end [Q,2] displacements.
    Returns [Q,C]. Samples 9*Q points, one ``grid_sample`` call per batch item present.
    """
    if x.dtype in (torch.float16, torch.bfloat16):  # half-precision coordinates lose pixels
        return deform_conv_at(x.float(), batch_index, ys, xs, start.float(), end.float(),
                              weight.float(), bias.float()).to(x.dtype)
    b, c, h, w = x.shape
    taps = weight.shape[1]
    offsets = trajectory_instants(start, end, taps)  # [Q,9,2]
    gx = _normalise(xs.to(x.dtype).unsqueeze(1) + offsets[..., 0], w)
    gy = _normalise(ys.to(x.dtype).unsqueeze(1) + offsets[..., 1], h)
    grid = torch.stack((gx, gy), dim=-1)  # [Q,9,2]
    out = x.new_empty(batch_index.numel(), c)
    for item in range(b):
        rows = (batch_index == item).nonzero().squeeze(1)
        if rows.numel() == 0:
            continue
        item_grid = grid.index_select(0, rows).transpose(0, 1).unsqueeze(0)  # [1,9,Qi,2]
        sampled = F.grid_sample(x[item:item + 1], item_grid, mode="bilinear",
                                padding_mode="zeros", align_corners=False)  # [1,C,9,Qi]
        out[rows] = torch.einsum("cnq,cn->qc", sampled[0], weight) + bias
    return out


class MotionDeformConv(nn.Module):
    """Parameters of the depthwise deformable conv: ``weight`` [C,9] (tap n <-> instant n)."""

    def __init__(self, channels: int, taps: int = 9) -> None:
        super().__init__()
        bound = 1.0 / taps ** 0.5  # same scale as a default-initialised depthwise 3x3 conv
        self.weight = nn.Parameter(torch.empty(channels, taps).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(channels).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
        return deform_conv_dense(x, start, end, self.weight, self.bias)

    def static(self, x: torch.Tensor) -> torch.Tensor:
        """Output where the displacement is zero: every tap reads the pixel itself."""
        scale = self.weight.sum(1).view(1, -1, 1, 1)
        return x * scale + self.bias.view(1, -1, 1, 1)
