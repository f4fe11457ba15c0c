"""The pruned M2AS block at inference in bands of rows (the NAF block's: :mod:`.banded`).

Only the input and one C-channel result map are ever whole. What is not per pixel is taken
out of the bands first:
- the mask-aware conv on the masked pixels, from the normalised rows of the dilated mask set;
- the deformable taps of the masked pixels, which may read any band: from a table of the
  folded conv4 output at exactly the rows they read (the trajectory's bilinear corners).
Then pass 1 writes ``norm1(x)^2`` band by band (the gated mix off the mask) and the masked
pixels' gated conv; the channel attention pools it; pass 2 finishes the first half in place;
the tap table is read from the finished first half; pass 3 runs the folded conv4, the gate,
conv5 and the residual band by band, in place. Same values as :meth:`M2ASBlock.forward` on
the pruned path (tests: ``tests/test_banded.py``).

Where it applies: inference, one image, a channels-last map of more than one band, the
pruned path with at most ``M2AS_BAND_SHARE`` of the grid masked.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .banded import band_rows, bands, wants_bands
from .deform import accumulate_taps, coordinate_dtype, sample_corners
from .layers import pixel_rows, simple_gate
from .masked_conv import PrunePlan, masked_gated_depthwise, pointwise_table


# Up to this share of masked pixels the banded block is as fast as the whole-map one (the
# tap table repeats conv4 on the rows the taps read: ~1.5-2x the masked pixels). Per
# stage-4 block of `paper` at 2152x1436 (180x270, 256 channels, 2 threads), whole / banded:
# fp32 10 % 206 / 206 ms, 20 % 241 / 245, 25 % 252 / 270; bf16 25 % 161 / 157 ms.
M2AS_BAND_SHARE = 0.2


def wants_m2as_bands(x: torch.Tensor, plan: PrunePlan) -> bool:
    return (x.shape[0] == 1 and plan.masked <= M2AS_BAND_SHARE * plan.total
            and x.is_contiguous(memory_format=torch.channels_last)
            and wants_bands(x, 2 * x.shape[1]))


def _masked_taps(block, mid_rows: torch.Tensor, plan: PrunePlan, fold, start, end,
                 width: int) -> torch.Tensor:
    """Gated deformable taps of the masked pixels [Q, C], read from a table of the folded
    conv4 output at the rows their bilinear corners touch."""
    h = plan.shape[1]
    compute = coordinate_dtype(mid_rows.dtype)
    corner_rows, corner_weights = sample_corners(
        (1, h, width), plan.item, plan.row, plan.col,
        start[plan.item, :, plan.row, plan.col].to(compute),
        end[plan.item, :, plan.row, plan.col].to(compute), fold.taps.shape[1])
    touched = torch.zeros(mid_rows.shape[0], dtype=torch.bool, device=mid_rows.device)
    touched[corner_rows.flatten()] = True
    needed = touched.nonzero().squeeze(1)
    position = torch.zeros(mid_rows.shape[0], dtype=torch.long, device=mid_rows.device)
    position[needed] = torch.arange(needed.numel(), device=mid_rows.device)
    table = F.linear(block.norm2.rows(mid_rows.index_select(0, needed)), fold.weight, fold.bias)
    sampled = fold.kept_bias.to(compute).expand(plan.masked, -1).clone()
    accumulate_taps(sampled, table, position[corner_rows], corner_weights, fold.taps,
                    fold.border)
    return simple_gate(sampled.to(mid_rows.dtype))


def m2as_block_banded(block, x: torch.Tensor, plan: PrunePlan, start: torch.Tensor,
                      end: torch.Tensor, rows: int | None = None) -> torch.Tensor:
    """``block(x, mask, start, end, plan, gated=True, prune_conv=True)``, band by band."""
    _, c, h, w = x.shape
    rows = rows or band_rows(x, 2 * c)
    x_rows = pixel_rows(x)
    out = torch.empty_like(x)
    out_rows = pixel_rows(out)
    masked_mix = None
    if plan.masked:
        table = pointwise_table(block.norm1.rows(x_rows.index_select(0, plan.dilated_index)),
                                block.conv1)
        masked_mix = masked_gated_depthwise(table, plan, block.conv2).to(out.dtype)
        del table
    for top, bottom in bands(h, rows):
        normed = block.norm1(x[:, :, top:bottom])
        torch.mul(normed, normed, out=out[:, :, top:bottom])  # the gate of [f1, f1]
    if masked_mix is not None:
        out_rows.index_copy_(0, plan.mask_index, masked_mix)
    attention = block.sca(out)
    for top, bottom in bands(h, rows):
        band = out[:, :, top:bottom]
        band.copy_(torch.addcmul(x[:, :, top:bottom], block.beta,
                                 block.conv3(band * attention)))
    fold = block.folded_conv4()
    taps = (_masked_taps(block, out_rows, plan, fold, start, end, w) if plan.masked
            else None)
    for top, bottom in bands(h, rows):
        band = out[:, :, top:bottom]
        folded = F.linear(pixel_rows(block.norm2(band)), fold.weight, fold.bias)
        gated = fold.gate_(folded)
        if taps is not None:
            first, last = torch.searchsorted(plan.mask_index,
                                             torch.tensor([top * w, bottom * w],
                                                          device=x.device)).tolist()
            if last > first:
                gated.index_copy_(0, plan.mask_index[first:last] - top * w, taps[first:last])
        update = block.conv5(gated.view(1, bottom - top, w, c).permute(0, 3, 1, 2))
        band.copy_(torch.addcmul(band, block.gamma, update))
    return out
