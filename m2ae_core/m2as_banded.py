"""The pruned M2AS block at inference in bands of rows (the NAF block's: :mod:`.banded`).

Only the input and one C-channel result map are ever whole. Pass 1 writes the gated mix band by
band: ``norm1(x)^2`` off the mask, and on it the mask-aware conv, computed first on the tiles
the mask touches (:mod:`.masked_conv`). The channel attention pools it; pass 2 finishes the
first half in place. Pass 3 runs the folded conv4, the gate, conv5 and the residual band by
band, in place. The masked pixels' deformable taps may read other bands' folded conv4
output, later ones included: every band keeps the rows that taps read in a table
(:class:`TapTable`), and a band is finished only once every row its taps read has been
computed (usually one band later). Same values as :meth:`M2ASBlock.forward` on the pruned
path (tests: ``tests/test_banded.py``).

Where it applies: inference, one image, a channels-last map of more than one band, the pruned
path with at most ``M2AS_BAND_SHARE`` of the grid masked.
"""
from __future__ import annotations

from collections import deque

import torch
import torch.nn.functional as F

from .banded import band_rows, bands, wants_bands
from .deform import accumulate_taps, coordinate_dtype, sample_corners
from .layers import pixel_rows, simple_gate
from .masked_conv import PrunePlan, masked_gated_depthwise, pointwise_table

# Up to this share of masked pixels the banded block is at least as fast as the whole-map one
# (above it the whole-map path runs the mix densely). Per `paper` stage-4 block at 2152x1436
# (180x270, 256 channels, fp32, 2 threads), whole / banded, ms (two runs each):
# 10 % 193-205 / 185-188, 50 % 278 / 262-270, 75 % 316-328 / 310-330, 90 % 338-344 / 353-390,
# 100 % 345-347 / 360-362 (NAF block: 238-258).
M2AS_BAND_SHARE = 0.75


def wants_m2as_bands(x: torch.Tensor, plan: PrunePlan) -> bool:
    return (x.shape[0] == 1 and plan.masked <= M2AS_BAND_SHARE * plan.total
            and x.is_contiguous(memory_format=torch.channels_last)
            and wants_bands(x, 2 * x.shape[1]))


class TapTable:
    """The folded conv4 rows that the masked pixels' deformable taps read, filled band by band.

    ``corner_rows`` index the table (not the map); ``reach`` is, per masked pixel, the last
    grid row its taps read."""

    def __init__(self, plan: PrunePlan, start: torch.Tensor, end: torch.Tensor, fold,
                 channels: int, dtype: torch.dtype) -> None:
        _, h, w = plan.shape
        compute = coordinate_dtype(dtype)
        corners, self.corner_weights = sample_corners(
            plan.shape, plan.item, plan.row, plan.col,
            start[plan.item, :, plan.row, plan.col].to(compute),
            end[plan.item, :, plan.row, plan.col].to(compute), fold.taps.shape[1])
        self.reach = corners.flatten(1).amax(1) // w
        touched = torch.zeros(plan.total, dtype=torch.bool, device=corners.device)
        touched[corners.flatten()] = True
        self.needed = touched.nonzero().squeeze(1)  # map rows in the table, ascending
        del touched
        position = torch.empty(plan.total, dtype=torch.long, device=corners.device)
        position[self.needed] = torch.arange(self.needed.numel(), device=corners.device)
        self.corner_rows = position[corners]
        self.table = torch.empty(self.needed.numel(), channels, dtype=dtype,
                                 device=corners.device)

    def keep(self, folded: torch.Tensor, first_row: int, end_row: int) -> None:
        """Copy the needed rows among map rows [first_row, end_row) (``folded``)."""
        begin, stop = _range_of(self.needed, first_row, end_row)
        if stop > begin:
            torch.index_select(folded, 0, self.needed[begin:stop] - first_row,
                               out=self.table[begin:stop])

    def gated_taps(self, fold, first: int, last: int) -> torch.Tensor:
        """Gated deformable taps [n, C] of masked pixels [first, last) (``mask_index`` ranks):
        every row they read must be in the table."""
        sampled = fold.kept_bias.to(self.corner_weights.dtype).expand(last - first, -1).clone()
        accumulate_taps(sampled, self.table, self.corner_rows[first:last],
                        self.corner_weights[first:last], fold.taps, fold.border)
        return simple_gate(sampled.to(self.table.dtype))


def _range_of(sorted_index: torch.Tensor, begin: int, end: int) -> tuple[int, int]:
    """Positions [i, j) of the entries of an ascending index within [begin, end)."""
    bounds = torch.tensor([begin, end], device=sorted_index.device)
    i, j = torch.searchsorted(sorted_index, bounds).tolist()
    return i, j


def _first_pass(block, x: torch.Tensor, out: torch.Tensor, plan: PrunePlan, rows: int) -> None:
    """Gated mix into ``out``: ``norm1(x)^2`` off the mask, the mask-aware conv on it."""
    _, _, h, _ = x.shape
    masked_mix = None
    if plan.masked:
        dilated = pixel_rows(x).index_select(0, plan.dilated_index)
        table = pointwise_table(block.norm1.rows(dilated), block.conv1)
        del dilated
        masked_mix = masked_gated_depthwise(table, plan, block.conv2).to(out.dtype)
        del table
    for top, bottom in bands(h, rows):
        normed = block.norm1(x[:, :, top:bottom])
        torch.mul(normed, normed, out=out[:, :, top:bottom])  # the gate of [f1, f1]
    if masked_mix is not None:
        pixel_rows(out).index_copy_(0, plan.mask_index, masked_mix)


def m2as_block_banded(block, x: torch.Tensor, plan: PrunePlan, start: torch.Tensor,
                      end: torch.Tensor, rows: int | None = None,
                      overwrite_input: bool = False) -> torch.Tensor:
    """``block(x, mask, start, end, plan, gated=True, prune_conv=True)``, band by band.

    ``overwrite_input``: the caller hands ``x`` over (it holds no other reference that it
    reads later): the first half's output is written into ``x`` itself, so that the pass-1
    map is freed before pass 3, whose tap table and waiting bands are the block's peak.
    """
    _, c, h, w = x.shape
    rows = rows or band_rows(x, 2 * c)
    mix = torch.empty_like(x)
    _first_pass(block, x, mix, plan, rows)
    attention = block.sca(mix)
    out = x if overwrite_input else mix
    for top, bottom in bands(h, rows):
        band = mix[:, :, top:bottom]
        out[:, :, top:bottom] = torch.addcmul(x[:, :, top:bottom], block.beta,
                                              block.conv3(band * attention))
    del mix, band, x  # overwriting: the pass-1 map goes (``out`` is ``x``)
    fold = block.folded_conv4()
    taps = TapTable(plan, start, end, fold, 2 * c, out.dtype) if plan.masked else None
    pending = deque()  # folded bands waiting for rows their taps read

    def finish(top: int, bottom: int, gated: torch.Tensor, first: int, last: int) -> None:
        if last > first:
            gated.index_copy_(0, plan.mask_index[first:last] - top * w,
                              taps.gated_taps(fold, first, last))
        band = out[:, :, top:bottom]
        update = block.conv5(gated.view(1, bottom - top, w, c).permute(0, 3, 1, 2))
        band.copy_(torch.addcmul(band, block.gamma, update))

    for top, bottom in bands(h, rows):
        folded = F.linear(pixel_rows(block.norm2(out[:, :, top:bottom])), fold.weight, fold.bias)
        first, last = _range_of(plan.mask_index, top * w, bottom * w)
        reach = -1
        if taps is not None:
            taps.keep(folded, top * w, bottom * w)
            if last > first:
                reach = int(taps.reach[first:last].max())
        pending.append((top, bottom, fold.gate_(folded), first, last, reach))
        while pending and pending[0][-1] < bottom:
            finish(*pending.popleft()[:-1])
    while pending:
        finish(*pending.popleft()[:-1])
    return out
