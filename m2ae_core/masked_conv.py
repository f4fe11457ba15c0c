"""Exact pixel-pruned evaluation of the mask-aware conv (DESIGN §3).

Dense formula: f2 = conv2(conv1(f1)) * m + [f1, f1] * (1 - m), conv1 1x1 C->2C, conv2 3x3
depthwise with zero padding. Pruned: run conv1 only on the 3x3-dilated mask set, then the
depthwise 3x3 only on the mask set by gathering nine neighbours (2C^2 + 18C MACs per pixel).
Everything is ordinary indexing and matmul, so it runs natively on CPU and CUDA.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .layers import cache_chunk, pixel_rows, simple_gate


# Above this share of masked pixels the dense 1x1 + depthwise conv (then a select) is cheaper
# than gathering: measured crossover ~40 % on the paper's stage-4 grid (CPU, 1 thread).
DENSE_MIX_SHARE = 0.4


@dataclass
class PrunePlan:
    """Index bookkeeping for one binary stage mask, shared by every block of the stage."""

    shape: tuple[int, int, int]  # (B, H, W) of the stage grid
    mask_index: torch.Tensor  # flat (b, y, x) index of each masked pixel, [Q]
    item: torch.Tensor  # batch item of each masked pixel, [Q]
    row: torch.Tensor
    col: torch.Tensor
    dilated_index: torch.Tensor  # flat index of the 3x3-dilated mask set, [D]
    lookup: torch.Tensor  # zero-padded grid -> row in the dilated set (D = outside), flat
    centre: torch.Tensor  # each masked pixel's flat index in the padded grid, [Q]
    unmasked_index: torch.Tensor  # flat index of each pixel outside the mask, [B*H*W - Q]

    @property
    def masked(self) -> int:
        return self.mask_index.numel()

    @property
    def dilated(self) -> int:
        return self.dilated_index.numel()

    @property
    def total(self) -> int:
        b, h, w = self.shape
        return b * h * w

    @classmethod
    def from_mask(cls, mask: torch.Tensor) -> "PrunePlan":
        """Build the plan from a bool [B,1,H,W] mask."""
        b, _, h, w = mask.shape
        mask = mask.bool()
        mask_index = mask.flatten().nonzero().squeeze(1)
        dilated_index = dilate3x3(mask).flatten().nonzero().squeeze(1)
        n_dilated = dilated_index.numel()
        lookup = torch.full((b * h * w,), n_dilated, dtype=torch.long, device=mask.device)
        lookup[dilated_index] = torch.arange(n_dilated, device=mask.device)
        lookup = F.pad(lookup.view(b, h, w), (1, 1, 1, 1), value=n_dilated).flatten()
        item, rest = mask_index // (h * w), mask_index % (h * w)
        row, col = rest // w, rest % w
        centre = item * (h + 2) * (w + 2) + (row + 1) * (w + 2) + (col + 1)
        return cls((b, h, w), mask_index, item, row, col, dilated_index, lookup, centre,
                   (~mask).flatten().nonzero().squeeze(1))


def dilate3x3(mask: torch.Tensor) -> torch.Tensor:
    """3x3 binary dilation of a bool [B,1,H,W] mask."""
    return F.max_pool2d(mask.to(torch.float32), 3, stride=1, padding=1) > 0


def masked_conv_dense(f1: torch.Tensor, mask: torch.Tensor, conv1: nn.Conv2d,
                      conv2: nn.Conv2d) -> torch.Tensor:
    """Reference/training path; ``mask`` float or bool [B,1,H,W] (may carry gradients)."""
    m = mask.to(f1.dtype)
    return conv2(conv1(f1)) * m + torch.cat((f1, f1), 1) * (1 - m)


def _masked_conv_rows(pixels: torch.Tensor, plan: PrunePlan, width: int, conv1: nn.Conv2d,
                      conv2: nn.Conv2d) -> torch.Tensor:
    """conv2(conv1(.)) at the masked pixels only: [Q, 2C] from channels-last rows [N, C]."""
    return masked_conv_gathered(pixels.index_select(0, plan.dilated_index), plan, width,
                                conv1, conv2)


def masked_conv_gathered(gathered: torch.Tensor, plan: PrunePlan, width: int, conv1: nn.Conv2d,
                         conv2: nn.Conv2d) -> torch.Tensor:
    """conv2(conv1(.)) at the masked pixels: [Q, 2C] from the rows of the 3x3-dilated mask
    set, [D, C] in ``plan.dilated_index`` order; ``width`` is the stage grid's."""
    c = gathered.shape[1]
    inner = conv1.out_channels
    kernel = conv2.weight.view(inner, 9)
    out = conv2.bias.expand(plan.masked, inner).clone()
    if torch.is_grad_enabled():  # autograd has no out= variants
        pointwise = torch.addmm(conv1.bias, gathered, conv1.weight.view(inner, c).t())
        # One extra zero row stands for conv2's zero padding and for pixels outside the set.
        pointwise = torch.cat((pointwise, pointwise.new_zeros(1, inner)))
        for tap in range(9):
            out.addcmul_(pointwise.index_select(0, _neighbours(plan, width, tap)), kernel[:, tap])
        return out
    # Inference: the same values without a copy of the table or a fresh buffer per tap
    # (each new buffer is fresh memory the OS must fault in and zero).
    pointwise = gathered.new_empty(plan.dilated + 1, inner)
    torch.addmm(conv1.bias, gathered, conv1.weight.view(inner, c).t(), out=pointwise[:-1])
    pointwise[-1] = 0
    neighbours = [_neighbours(plan, width, tap) for tap in range(9)]
    # Cache-sized chunks of pixels: all nine taps of a chunk accumulate while it is hot.
    step = cache_chunk(inner)
    taps = gathered.new_empty(min(step, plan.masked), inner)
    for begin in range(0, plan.masked, step):
        chunk = slice(begin, begin + step)
        part = taps[:min(step, plan.masked - begin)]
        for tap in range(9):
            torch.index_select(pointwise, 0, neighbours[tap][chunk], out=part)
            out[chunk].addcmul_(part, kernel[:, tap])
    return out


def _neighbours(plan: PrunePlan, width: int, tap: int) -> torch.Tensor:
    """Row in the dilated set (or the zero row) of each masked pixel's neighbour ``tap``."""
    dy, dx = tap // 3 - 1, tap % 3 - 1
    return plan.lookup.index_select(0, plan.centre + dy * (width + 2) + dx)


def masked_gated_conv_pruned(f1: torch.Tensor, plan: PrunePlan, conv1: nn.Conv2d,
                             conv2: nn.Conv2d) -> torch.Tensor:
    """``simple_gate(masked_conv_dense(...))`` [B,C,H,W] for a binary mask, computing the conv
    only on masked pixels and without a 2C-channel buffer: outside the mask the gate of
    ``[f1, f1]`` is simply ``f1 * f1``."""
    b, c, h, w = f1.shape
    if plan.masked == plan.total:
        return simple_gate(conv2(conv1(f1)))
    pixels = pixel_rows(f1)
    if plan.masked > DENSE_MIX_SHARE * plan.total:
        result = pixel_rows(simple_gate(conv2(conv1(f1))))
        # Overwrite only the unmasked rows: a select over the whole map cost 3.7-7x more
        # (45-80 % masked, 1280x720's stage-4 grid, one thread).
        unmasked = plan.unmasked_index
        result.index_copy_(0, unmasked,
                          pixels.index_select(0, unmasked).square_().to(result.dtype))
    else:
        result = pixels.square()
        if plan.masked:
            result.index_copy_(0, plan.mask_index,
                               simple_gate(_masked_conv_rows(pixels, plan, w, conv1, conv2))
                               .to(result.dtype))
    return result.view(b, h, w, c).permute(0, 3, 1, 2)
