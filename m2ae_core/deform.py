"""Motion-aware depthwise deformable 3x3 convolution (DESIGN §2), in PyTorch ops (the taps at
inference on CPU also as an opt-in compiled loop: :mod:`m2ae_core.fused_taps`).

Tap n of the kernel at pixel z reads the input bilinearly at z + o_n(z), o_n the pixel's
displacement at exposure instant n, zero outside the image, and is weighted by w[c, n].
With zero motion every tap reads z itself.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .chunking import chunk_items
from . import fused_taps
from .layers import cache_chunk, pixel_rows
from .trajectory import trajectory_instants

# Pixels whose bilinear corners are computed at once at inference on a CPU (~7 MB of indices
# and weights: each tap has four corners of an int64 row and a float weight)
CORNER_BLOCK = 16384
CORNER_BYTES_PER_TAP = 4 * (8 + 4)


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


def bilinear_taps(ys: torch.Tensor, xs: torch.Tensor, height: int, width: int,
                  batch_index: torch.Tensor, outside_row: int | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear corners of sampling points, as rows of a channels-last [B*H*W, C] matrix.

    ys/xs [...] float pixel coordinates, batch_index broadcastable to them. Returns the row
    index and weight of the four corners, each [..., 4]. A corner outside the image gets
    weight 0 (zero padding, like grid_sample) and a harmless in-range index; or, given
    ``outside_row``, that row and its bilinear weight (for a table whose row ``outside_row``
    holds the map's value outside the image).
    """
    y0, x0 = ys.floor(), xs.floor()
    fy, fx = ys - y0, xs - x0
    y0, x0 = y0.long(), x0.long()
    rows, weights = [], []
    for dy, dx, wy, wx in ((0, 0, 1 - fy, 1 - fx), (0, 1, 1 - fy, fx),
                           (1, 0, fy, 1 - fx), (1, 1, fy, fx)):
        y, x = y0 + dy, x0 + dx
        inside = (y >= 0) & (y < height) & (x >= 0) & (x < width)
        row = (batch_index * height + y.clamp(0, height - 1)) * width + x.clamp(0, width - 1)
        if outside_row is None:
            rows.append(row)
            weights.append(wy * wx * inside)
        else:
            rows.append(torch.where(inside, row, outside_row))
            weights.append(wy * wx)
    return torch.stack(rows, -1), torch.stack(weights, -1)


def deform_conv_rows(rows: torch.Tensor, shape: tuple[int, int, int], batch_index: torch.Tensor,
                     ys: torch.Tensor, xs: torch.Tensor, start: torch.Tensor, end: torch.Tensor,
                     weight: torch.Tensor, bias: torch.Tensor,
                     border: torch.Tensor | None = None) -> torch.Tensor:
    """Deformable depthwise conv at Q chosen pixels of a channels-last feature matrix.

    rows [B*H*W, C] (pixel (b, y, x) is row (b*H + y)*W + x); shape (B, H, W);
    batch_index/ys/xs [Q] integer positions; start/end [Q,2]. Returns [Q, C].
    Each tap is one ``embedding_bag`` over its four bilinear corners: a gather and a weighted
    sum in one kernel, reading only the Q*36 rows it needs (no copy of the feature map).
    ``border`` [C]: the value the map takes outside the image (default zero).
    """
    half = rows.dtype in (torch.float16, torch.bfloat16)
    if half and torch.is_grad_enabled():
        # Training under autocast: all in fp32, so that the trajectory's gradients through
        # the bilinear weights keep their precision.
        return deform_conv_rows(rows.float(), shape, batch_index, ys, xs, start.float(),
                                end.float(), weight.float(), bias.float(),
                                None if border is None else border.float()).to(rows.dtype)
    compute = coordinate_dtype(rows.dtype)
    out = bias.to(compute).expand(batch_index.numel(), -1).clone()
    # Inference: corners for blocks of pixels (their indices and weights take 432 bytes per
    # pixel, several feature maps' worth over a whole stage), taps over cache-sized chunks
    # of each block (over all pixels at once, each of the nine taps streamed its product and
    # the accumulator through memory: see accumulate_taps).
    block = out.shape[0] if torch.is_grad_enabled() else chunk_items(
        out.device, CORNER_BLOCK, CORNER_BYTES_PER_TAP * weight.shape[1])
    for first in range(0, out.shape[0], block):
        part = slice(first, first + block)
        corner_rows, corner_weights = sample_corners(
            shape, batch_index[part], ys[part], xs[part], start[part].to(compute),
            end[part].to(compute), weight.shape[1])  # [9,q,4]
        accumulate_taps(out[part], rows, corner_rows, corner_weights, weight, border)
    return out.to(rows.dtype)


def coordinate_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of sampling coordinates, bilinear weights and tap sums for feature rows of
    ``dtype``: fp32 for half precision (bf16 holds integers exactly only up to 256, so
    coordinates would lose pixels). The rows themselves are read in their own precision: a
    fp32 copy of the whole map cost more than the sampling itself."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def accumulate_taps(out: torch.Tensor, rows: torch.Tensor, corner_rows: torch.Tensor,
                    corner_weights: torch.Tensor, weight: torch.Tensor,
                    border: torch.Tensor | None = None) -> None:
    """Add the deformable taps to ``out`` [q, C] (in place, in :func:`coordinate_dtype`): tap
    n of pixel i reads ``rows`` [N, C] at its bilinear corners (``corner_rows`` /
    ``corner_weights`` [taps, q, 4], tap-major, from :func:`sample_corners`) and is weighted by
    ``weight[:, n]`` ([C, taps]); a tap's share outside the image reads ``border`` [C]
    (None: zero padding)."""
    tap_weights = weight.to(out.dtype).t().contiguous()  # [taps, C]: one contiguous row per tap
    # inference on CPU, when switched on (M2AE_FUSED_TAPS): one compiled loop, 4x faster
    if fused_taps.accumulate_taps(out, rows, corner_rows, corner_weights, tap_weights, border):
        return
    border_taps = None if border is None else tap_weights * border.to(out.dtype)
    # embedding_bag needs its per-sample weights in the rows' dtype
    sample_weights = corner_weights.to(rows.dtype)
    # the share of each tap that fell outside the image reads ``border``
    outside = None if border_taps is None else (1.0 - corner_weights.sum(-1)).t()  # [q,taps]
    pixels = corner_rows.shape[1]
    step = pixels if torch.is_grad_enabled() else cache_chunk(out.shape[1], out.device)
    for begin in range(0, pixels, step):
        chunk = slice(begin, min(begin + step, pixels))
        target = out[chunk]
        for tap in range(tap_weights.shape[0]):
            # a tap's corners are one contiguous block (tap-major): pixel-major corners, read
            # with a stride of all the taps, made the nine gathers of a `paper` stage-4 block
            # at 10 % blur 8-22 % slower (session 26, docs/results/taps-s26/taps_layout_ab.txt)
            sampled = F.embedding_bag(corner_rows[tap, chunk], rows, mode="sum",
                                      per_sample_weights=sample_weights[tap, chunk])
            # In place also under autograd: addcmul's backward needs only its inputs.
            target.addcmul_(sampled, tap_weights[tap])
        if outside is not None:
            # per chunk, while it is in cache (one product over all Q cost 2-3x the sampling)
            target.addmm_(outside[chunk], border_taps)


def sample_corners(shape: tuple[int, int, int], batch_index: torch.Tensor, ys: torch.Tensor,
                   xs: torch.Tensor, start: torch.Tensor, end: torch.Tensor, taps: int,
                   outside_row: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear corners (row index, weight; each [taps, Q, 4], tap-major) of every tap of the
    trajectory sampled at Q pixels (batch_index/ys/xs [Q], start/end [Q,2] in the coordinates'
    dtype); ``outside_row`` as in :func:`bilinear_taps`."""
    _, h, w = shape
    offsets = trajectory_instants(start, end, taps).transpose(0, 1)  # [taps,Q,2]
    sample_x = xs.to(offsets.dtype) + offsets[..., 0]
    sample_y = ys.to(offsets.dtype) + offsets[..., 1]
    return bilinear_taps(sample_y, sample_x, h, w, batch_index, outside_row)


def deform_conv_all(x: torch.Tensor, start: torch.Tensor, end: torch.Tensor,
                    weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """:func:`deform_conv_dense`'s value through the row gather of :func:`deform_conv_rows`
    (3-4x faster than ``grid_sample`` on a channels-last CPU map). [B,C,H,W] out."""
    b, c, h, w = x.shape
    grid = torch.arange(b * h * w, device=x.device)
    item, rest = grid // (h * w), grid % (h * w)
    out = deform_conv_rows(pixel_rows(x), (b, h, w), item, rest // w, rest % w,
                           pixel_rows(start), pixel_rows(end), weight, bias)
    return out.view(b, h, w, c).permute(0, 3, 1, 2)


class MotionDeformConv(nn.Module):
    """Parameters of the depthwise deformable conv: ``weight`` [C,9] (tap n <-> instant n)."""

    def __init__(self, channels: int, taps: int = 9) -> None:
        super().__init__()
        bound = 1.0 / taps ** 0.5  # same scale as a default-initialised depthwise 3x3 conv
        self.weight = nn.Parameter(torch.empty(channels, taps).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(channels).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
        return deform_conv_all(x, start, end, self.weight, self.bias)

    def static(self, x: torch.Tensor) -> torch.Tensor:
        """Output where the displacement is zero: every tap reads the pixel itself."""
        scale = self.weight.sum(1).view(1, -1, 1, 1)
        return torch.addcmul(self.bias.view(1, -1, 1, 1), x, scale)

    def static_gated_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """``simple_gate(static(.))`` on channels-last rows [..., 2C] -> [..., C], without
        materialising the 2C-channel static output (one pass fewer over the largest map)."""
        scale, bias = self.weight.sum(1), self.bias
        half = rows.shape[-1] // 2
        first = torch.addcmul(bias[:half], rows[..., :half], scale[:half])
        second = torch.addcmul(bias[half:], rows[..., half:], scale[half:])
        return first * second if torch.is_grad_enabled() else first.mul_(second)
