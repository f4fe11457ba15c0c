"""The pruned M2AS block at inference in bands of rows (the NAF block's: :mod:`.banded`).

Only the input and one C-channel result map are ever whole, and only the input when the
caller hands it over. The gated mix is ``norm1(x)^2`` off the mask and, on it, the mask-aware
conv, computed first on the tiles the mask touches (:mod:`.masked_conv`). Pass 1 pools the mix
band by band for the channel attention; pass 2 recomputes each band of it and finishes the
first half. Pass 3 runs the folded conv4, the gate, conv5 and the residual band by band, in
place. The masked pixels' deformable taps may read other bands' folded conv4 output, later
ones included: every band keeps the rows that taps read in a table (:class:`TapTable`), and a
band is finished only once every row its taps read has been computed (usually one band
later). Same values as :meth:`M2ASBlock.forward` on the pruned path (tests:
``tests/test_banded.py``).

Where it applies: inference, one image, a channels-last map of more than one band, the pruned
path with at most ``M2AS_BAND_SHARE`` of the grid masked.
"""
from __future__ import annotations

from collections import deque

import torch

from .banded import band_rows, bands, wants_bands
from .deform import accumulate_taps, coordinate_dtype, sample_corners
from .layers import linear_rows, pixel_rows, simple_gate
from .masked_conv import PrunePlan, masked_gated_depthwise, pointwise_table

# Up to this share of masked pixels the banded block is at least as fast as the whole-map one
# (above it the whole-map path runs the mix densely). Per `paper` stage-4 block at 2152x1436
# (180x270, 256 channels, fp32, 2 threads), whole / banded, ms (two runs each;
# scripts/m2as_crossovers.py, docs/results/block-s19/): 10 % 193-200 / 176, 25 % 216-219 /
# 216-218, 50 % 266-293 / 270-271, 75 % 324-327 / 322-325, 90 % 336-346 / 356-357
# (NAF block: 227-241).
M2AS_BAND_SHARE = 0.6


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
        w = plan.shape[2]
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


def _masked_mix(block, x: torch.Tensor, plan: PrunePlan) -> torch.Tensor | None:
    """The gated mask-aware conv at the masked pixels [Q, C] (None: no masked pixel)."""
    if not plan.masked:
        return None
    dilated = pixel_rows(x).index_select(0, plan.table_index)
    table = pointwise_table(block.norm1.rows(dilated), block.conv1)
    del dilated
    return masked_gated_depthwise(table, plan, block.conv2).to(x.dtype)


def _mix_band(block, x: torch.Tensor, plan: PrunePlan, masked_mix: torch.Tensor | None,
              top: int, bottom: int) -> torch.Tensor:
    """Rows [top, bottom) of the gated mix: ``norm1(x)^2`` (the gate of [f1, f1]) off the
    mask, ``masked_mix`` on it."""
    band = block.norm1(x[:, :, top:bottom]).square_()
    if masked_mix is not None:
        w = x.shape[3]
        first, last = _range_of(plan.mask_index, top * w, bottom * w)
        if last > first:
            pixel_rows(band).index_copy_(0, plan.mask_index[first:last] - top * w,
                                         masked_mix[first:last])
    return band


def _channel_attention(block, x: torch.Tensor, plan: PrunePlan, masked_mix, rows: int
                       ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The attention of the gated mix, and the mix itself when it had to be kept whole (the
    tiling recorder observes the whole map); otherwise it is pooled band by band and each
    band recomputed in pass 2 (one norm per band, cheaper than a whole map in memory)."""
    pool = block.sca[0]
    if pool.observer is not None:
        mix = torch.empty_like(x)
        for top, bottom in bands(x.shape[2], rows):
            mix[:, :, top:bottom] = _mix_band(block, x, plan, masked_mix, top, bottom)
        return block.sca(mix), mix
    if pool.fixed is not None:  # the whole image's mean, given (tiled inference)
        return block.sca(x), None
    total = torch.zeros(x.shape[0], x.shape[1], 1, 1, dtype=torch.float32, device=x.device)
    for top, bottom in bands(x.shape[2], rows):
        total += _mix_band(block, x, plan, masked_mix, top, bottom).sum(
            (2, 3), keepdim=True, dtype=torch.float32)
    mean = (total / (x.shape[2] * x.shape[3])).to(x.dtype)
    return block.sca[1](mean), None


def m2as_block_banded(block, x: torch.Tensor, plan: PrunePlan, start: torch.Tensor,
                      end: torch.Tensor, rows: int | None = None,
                      overwrite_input: bool = False) -> torch.Tensor:
    """``block(x, mask, start, end, plan, gated=True, prune_conv=True)``, band by band.

    ``overwrite_input``: the caller hands ``x`` over (it holds no other reference that it
    reads later) and the result is written into it: the block then holds one whole map.
    """
    _, c, h, w = x.shape
    rows = rows or band_rows(x, 2 * c)
    masked_mix = _masked_mix(block, x, plan)
    attention, mix = _channel_attention(block, x, plan, masked_mix, rows)
    out = x if overwrite_input else torch.empty_like(x)
    for top, bottom in bands(h, rows):
        band = (mix[:, :, top:bottom] if mix is not None
                else _mix_band(block, x, plan, masked_mix, top, bottom))
        out[:, :, top:bottom] = torch.addcmul(x[:, :, top:bottom], block.beta,
                                              block.conv3(band * attention))
    del mix, band, masked_mix, x
    fold = block.folded_conv4()
    taps = TapTable(plan, start, end, fold, 2 * c, out.dtype) if plan.masked else None
    # folded bands waiting for rows their taps read: (last grid row they read, band)
    pending = deque()

    def finish(top: int, bottom: int, gated: torch.Tensor, first: int, last: int) -> None:
        if last > first:
            gated.index_copy_(0, plan.mask_index[first:last] - top * w,
                              taps.gated_taps(fold, first, last))
        band = out[:, :, top:bottom]
        update = block.conv5(gated.view(1, bottom - top, w, c).permute(0, 3, 1, 2))
        band.copy_(torch.addcmul(band, block.gamma, update))

    for top, bottom in bands(h, rows):
        folded = linear_rows(pixel_rows(block.norm2(out[:, :, top:bottom])), fold.weight,
                             fold.bias)
        first, last = _range_of(plan.mask_index, top * w, bottom * w)
        reach = -1  # no taps: ready at once
        if taps is not None:
            taps.keep(folded, top * w, bottom * w)
            if last > first:
                reach = int(taps.reach[first:last].max())
        pending.append((reach, (top, bottom, fold.gate_(folded), first, last)))
        while pending and pending[0][0] < bottom:  # every row it reads is computed
            finish(*pending.popleft()[1])
    for _, band_args in pending:
        finish(*band_args)
    return out
