"""Design-study prototype: mask the second half of the M2AS blocks too (benchmark only).

The model masks only the first half of an M2AS block (mask-aware 1x1 + depthwise 3x3). This
prototype treats the second half's two 1x1 convs the same way, as the paper's Table 4
positions 2/3: ``conv4`` (C->2C) runs on the mask and gives ``Rep(n) = [n, n]`` elsewhere,
``conv5`` (C->C) runs on the mask and is the identity elsewhere. The deformable conv between
them is the model's own pruned one (static outside the mask, sampled on it). It exists to
*time* the idea on random weights; no trained model uses it, and it changes nothing in
``m2ae_core``'s model code: :func:`mask_both_halves_` swaps the blocks' ``forward`` on one
model instance.
"""
from __future__ import annotations

import types

import torch

from ..m2as import M2ASBlock, M2ASStage
from ..masked_conv import PrunePlan
from ..layers import linear_rows, pixel_rows, simple_gate


def _masked_linear(rows: torch.Tensor, conv, index: torch.Tensor, rep: int) -> torch.Tensor:
    """``conv`` (1x1) on the rows in ``index``; the others get ``rows`` repeated ``rep`` times."""
    out = rows.repeat(1, rep) if rep > 1 else rows.clone()
    weight = conv.weight.view(conv.out_channels, conv.in_channels)
    out.index_copy_(0, index, linear_rows(rows.index_select(0, index), weight, conv.bias))
    return out


def forward_both_halves(block: M2ASBlock, x: torch.Tensor, mask: torch.Tensor,
                        start: torch.Tensor, end: torch.Tensor, plan: PrunePlan | None = None,
                        gated: bool = True, prune_conv: bool = False,
                        overwrite_input: bool = False, workspace=None) -> torch.Tensor:
    """An M2AS block with both halves masked; pruned when ``plan`` and ``prune_conv`` are given.
    ``overwrite_input`` and ``workspace`` are accepted (the stage passes them) and not used:
    ``x`` is left alone, and the prototype makes its own tables."""
    if plan is None or not prune_conv or not gated:
        return reference_both_halves(block, x, mask, start, end)
    mid = block.masked_spatial_mix(x, mask, plan)
    b, c, h, w = mid.shape
    if plan.masked == plan.total:
        f4 = block.conv4(block.norm2(mid))
        return mid + block.gamma * block.conv5(simple_gate(block.dconv(f4, start, end)))
    normed = block.norm2(mid)
    if plan.masked == 0:
        f5 = block.dconv.static(torch.cat((normed, normed), 1))
        return mid + block.gamma * simple_gate(f5)
    rows = pixel_rows(normed)
    f4 = _masked_linear(rows, block.conv4, plan.mask_index, 2).view(b, h, w, 2 * c)
    gated_rows = pixel_rows(block.gated_deform_pruned(f4.permute(0, 3, 1, 2), plan, start, end))
    out = _masked_linear(gated_rows, block.conv5, plan.mask_index, 1)
    return mid + block.gamma * out.view(b, h, w, c).permute(0, 3, 1, 2)


def reference_both_halves(block: M2ASBlock, x, mask, start, end) -> torch.Tensor:
    """The dense formula of the prototype (every pixel through everything, then selected)."""
    mid = block.masked_spatial_mix(x, mask)
    m = mask.to(x.dtype)
    normed = block.norm2(mid)
    f4 = block.conv4(normed) * m + torch.cat((normed, normed), 1) * (1 - m)
    g = simple_gate(block.dconv(f4, start, end))
    return mid + block.gamma * (block.conv5(g) * m + g * (1 - m))


def mask_both_halves_(model: torch.nn.Module) -> torch.nn.Module:
    """Switch every M2AS block of ``model`` (in place) to the both-halves prototype."""
    for stage in model.modules():
        if isinstance(stage, M2ASStage):
            for block in stage.blocks():
                block.forward = types.MethodType(forward_both_halves, block)
    return model


def both_halves_saving_macs(config, height: int, width: int, stage_pixels: dict) -> int:
    """MACs the prototype saves against the model's pruned path: conv4 and conv5 skip the
    unmasked pixels of every M2AS block (the rest of the count is unchanged)."""
    from ..macs import conv_macs, padded_size

    h, w = padded_size(config, height, width)
    saved = 0
    for stage, counts in stage_pixels.items():
        c = config.width * 2 ** stage
        pixels = (h >> stage) * (w >> stage)
        if counts.masked >= pixels:
            continue
        skipped = pixels - counts.masked
        per_block = conv_macs(skipped, c, 2 * c) + conv_macs(skipped, c, c)
        saved += per_block * config.enc_blocks[stage]
    return saved
