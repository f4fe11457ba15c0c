"""Exact pixel-pruned evaluation of the mask-aware conv (DESIGN §3).

Dense formula: f2 = conv2(conv1(f1)) * m + [f1, f1] * (1 - m), conv1 1x1 C->2C, conv2 3x3
depthwise with zero padding. Pruned: run conv1 only on the 3x3-dilated mask set (a table of
its rows), then the depthwise 3x3 only on the square tiles the mask touches: each tile and its
one-pixel halo are gathered from that table (a zero row standing for the image's padding and
for pixels outside the set, which no masked pixel reads) and go through the ordinary
depthwise conv, and the masked pixels are picked from its output.
Everything is ordinary indexing, matmul and conv, so it runs natively on CPU and CUDA.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .chunking import chunk_items
from .layers import linear_rows, pixel_rows, simple_gate


# Above this share of masked pixels the dense 1x1 + depthwise conv (then a select) is cheaper
# than the pruned path. Per `paper` stage-4 block at 2152x1436 (2 threads), conv1 + 3x3 +
# gate pruned (tiles) vs dense, ms: 50 % 51.8 vs 83.7, 75 % 79.6 vs 83.7, 90 % 89.5 vs 82.0
# (scripts/m2as_crossovers.py, docs/results/block-s19/; with the nine-neighbour gather of
# session 18 the crossover was ~40 %).
DENSE_MIX_SHARE = 0.75

# Side of the tiles of the pruned depthwise 3x3. Smaller tiles cover the mask more tightly,
# larger ones gather fewer halo pixels and make fewer calls. Per `paper` stage-4 block at
# 2152x1436 (180x270, 512 channels in the 3x3, 2 threads), the 3x3 and gate on the masked pixels
# of the benchmark's blob masks (pooled to the stage grid), ms at 5 / 10 / 25 %: tiles of 4: 2.7
# / 5.0-5.1 / 11.6-11.8, of 6: 2.6 / 4.9-5.1 / 11.5-12.3, of 8: 3.1 / 5.7-5.8 / 12.1-13.6, of
# 12: 3.9-4.1 / 6.3-6.6 / 13.2-13.9 (session 26, Intel Xeon,
# docs/results/taps-s26/tile_sides.txt). Session 19 had found 8 to 16 alike on an AMD EPYC (with
# conv1, 10 %: 11.2 / 10.4 / 10.6 ms for 8 / 12 / 16); gathering each masked pixel's nine
# neighbours instead (until session 18) cost ~1.5x. `PrunePlan.from_mask(mask, tile=...)` sets
# the side.
MIX_TILE = 6
# Bytes of gathered tiles (with halo, 2C channels) convolved at once: cache-sized.
TILE_CHUNK_BYTES = 4 << 20


@dataclass
class TileLayout:
    """The square tiles (``side`` x ``side``) of a stage grid that contain masked pixels."""

    side: int
    table_rows: torch.Tensor  # [K, (side+2)^2]: row of the dilated set's table under each
    #                           pixel of a tile and its halo (D, the zero row: none)
    order: torch.Tensor  # [Q]: masked pixels (their rank in ``mask_index``) sorted by tile
    position: torch.Tensor  # [Q], in ``order``: place in its tile's output, tile-local
    starts: list[int]  # [K+1]: where each tile's pixels begin in ``order``

    @property
    def count(self) -> int:
        return self.table_rows.shape[0]

    @classmethod
    def build(cls, mask: torch.Tensor, lookup: torch.Tensor, zero_row: int, item: torch.Tensor,
              row: torch.Tensor, col: torch.Tensor, side: int = MIX_TILE) -> "TileLayout":
        """``mask`` bool [B,1,H,W]; ``lookup`` the zero-padded grid -> table row, flat
        [B*(H+2)*(W+2)], ``zero_row`` outside the set; item/row/col of each masked pixel."""
        b, _, h, w = mask.shape
        tall, wide = -(-h // side) * side, -(-w // side) * side
        padded = F.pad(lookup.view(b, h + 2, w + 2), (0, wide - w, 0, tall - h), value=zero_row)
        touched = F.max_pool2d(F.pad(mask.to(torch.float32), (0, wide - w, 0, tall - h)),
                               side, side)[:, 0] > 0  # [B, tall/side, wide/side]
        tile_item, tile_y, tile_x = touched.nonzero().unbind(1)
        # a tile's top-left halo pixel in the padded grid (whose pixel (y, x) is (y+1, x+1))
        corner = (tile_item * (tall + 2) + tile_y * side) * (wide + 2) + tile_x * side
        span = torch.arange(side + 2, device=mask.device)
        offsets = (span[:, None] * (wide + 2) + span[None, :]).flatten()
        table_rows = padded.flatten()[corner[:, None] + offsets[None, :]]
        tile_of = torch.full(touched.shape, -1, dtype=torch.long, device=mask.device)
        tile_of[touched] = torch.arange(tile_item.numel(), device=mask.device)
        tile = tile_of[item, row // side, col // side]
        order = torch.argsort(tile, stable=True)
        local = (row % side) * side + col % side
        counts = torch.bincount(tile, minlength=tile_item.numel())
        starts = [0] + torch.cumsum(counts, 0).tolist()
        return cls(side, table_rows, order, (tile * side * side + local)[order], starts)


@dataclass
class PrunePlan:
    """Index bookkeeping for one binary stage mask, shared by every block of the stage."""

    shape: tuple[int, int, int]  # (B, H, W) of the stage grid
    mask_index: torch.Tensor  # flat (b, y, x) index of each masked pixel, [Q]
    item: torch.Tensor  # batch item of each masked pixel, [Q]
    row: torch.Tensor
    col: torch.Tensor
    dilated_index: torch.Tensor  # flat index of the 3x3-dilated mask set, [D]
    table_index: torch.Tensor  # the same and one spare (repeated) index, [D+1]: what
    #                            pointwise_table's rows are gathered by
    tiles: TileLayout  # where the pruned depthwise 3x3 runs
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
    def from_mask(cls, mask: torch.Tensor, tile: int = MIX_TILE) -> "PrunePlan":
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
        tiles = TileLayout.build(mask, lookup, n_dilated, item, row, col, tile)
        table_index = torch.cat((dilated_index, dilated_index[:1]))
        return cls((b, h, w), mask_index, item, row, col, dilated_index, table_index, tiles,
                   (~mask).flatten().nonzero().squeeze(1))


def dilate3x3(mask: torch.Tensor) -> torch.Tensor:
    """3x3 binary dilation of a bool [B,1,H,W] mask."""
    return F.max_pool2d(mask.to(torch.float32), 3, stride=1, padding=1) > 0


def masked_conv_dense(f1: torch.Tensor, mask: torch.Tensor, conv1: nn.Conv2d,
                      conv2: nn.Conv2d) -> torch.Tensor:
    """Reference/training path; ``mask`` float or bool [B,1,H,W] (may carry gradients)."""
    m = mask.to(f1.dtype)
    return conv2(conv1(f1)) * m + torch.cat((f1, f1), 1) * (1 - m)


def pointwise_table(gathered: torch.Tensor, conv1: nn.Conv2d) -> torch.Tensor:
    """conv1 on the rows of the 3x3-dilated mask set and one spare row ([D+1, C] in
    ``plan.table_index`` order) -> [D+1, 2C] whose last row is zero (conv2's zero padding, and
    pixels outside the set). The spare row lets the table come out of one 1x1 convolution,
    without a copy to append the zero row."""
    inner, c = conv1.out_channels, gathered.shape[1]
    weight = conv1.weight.view(inner, c)
    if torch.is_grad_enabled():  # autograd: no in-place write into the output
        table = F.linear(gathered[:-1], weight, conv1.bias)
        return torch.cat((table, table.new_zeros(1, inner)))
    table = linear_rows(gathered, weight, conv1.bias)
    table[-1] = 0
    return table


def masked_gated_depthwise(table: torch.Tensor, plan: PrunePlan, conv2: nn.Conv2d,
                           out: torch.Tensor | None = None) -> torch.Tensor:
    """``simple_gate(conv2(.))`` at the masked pixels [Q, C] (``mask_index`` order), from the
    :func:`pointwise_table` of the dilated set: tile by tile, in cache-sized groups, into
    ``out`` when given ([Q, C], the table's dtype)."""
    tiles, inner = plan.tiles, table.shape[1]
    side = tiles.side
    if out is None:
        out = table.new_empty(plan.masked, inner // 2)
    tile_bytes = (side + 2) ** 2 * inner * table.element_size()
    group = chunk_items(table.device, max(1, TILE_CHUNK_BYTES // tile_bytes), tile_bytes)
    for first in range(0, tiles.count, group):
        last = min(first + group, tiles.count)
        begin, end = tiles.starts[first], tiles.starts[last]
        if begin == end:
            continue
        gathered = table.index_select(0, tiles.table_rows[first:last].flatten())
        gathered = gathered.view(last - first, side + 2, side + 2, inner).permute(0, 3, 1, 2)
        conv = F.conv2d(gathered, conv2.weight, conv2.bias, groups=conv2.groups)
        rows = conv.permute(0, 2, 3, 1).reshape(-1, inner)  # a view for channels-last output
        picked = rows.index_select(0, tiles.position[begin:end] - first * side * side)
        out.index_copy_(0, tiles.order[begin:end], simple_gate(picked))
    return out


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
            table = pointwise_table(pixels.index_select(0, plan.table_index), conv1)
            result.index_copy_(0, plan.mask_index,
                               masked_gated_depthwise(table, plan, conv2).to(result.dtype))
    return result.view(b, h, w, c).permute(0, 3, 1, 2)
