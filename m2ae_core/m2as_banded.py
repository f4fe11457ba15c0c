"""The pruned M2AS block at inference in bands of rows (the NAF block's: :mod:`.banded`).

Only the input and one C-channel result map are ever whole, and only the input when the
caller hands it over. The gated mix is ``norm1(x)^2`` off the mask and, on it, the mask-aware
conv, computed first on the tiles the mask touches (:mod:`.masked_conv`). Pass 1 pools the mix
band by band for the channel attention; pass 2 recomputes each band of it and finishes the
first half. Pass 3 runs the folded conv4, the gate, conv5 and the residual band by band, in
place. The masked pixels' deformable taps may read other bands' folded conv4 output, later
ones included: every band keeps the rows that taps read in a table (:class:`TapTable`), and a
band is finished only once every row its taps read has been computed (usually one band
later). The blocks of a stage share their tables and the taps' sampling positions through
one :class:`StageWorkspace`. Same values as :meth:`M2ASBlock.forward` on the pruned path
(tests: ``tests/test_banded.py``).

Where it applies: inference, one image, a channels-last map of more than one band, the pruned
path with less than ``M2AS_BAND_SHARE`` of the grid masked (any mask but a full one).
"""
from __future__ import annotations

from collections import deque

import torch

from .banded import band_rows, bands, wants_bands
from .chunking import chunk_items
from .deform import accumulate_taps, coordinate_dtype, sample_corners
from .layers import linear_rows, pixel_rows, simple_gate
from .masked_conv import PrunePlan, masked_gated_depthwise

# Below this share of masked pixels a block runs in bands (1.0: every mask but a full one, which
# takes the whole-map path: dense convolutions, no gathers). Per `paper` stage-4 block at
# 2152x1436 (180x270, 256 channels, fp32, 2 threads; 4 blocks in the network, the banded ones
# sharing a StageWorkspace), whole / banded ms at 50 / 75 / 90 / 99.6 / 100 % masked: 230 / 182,
# 222 / 227, 246 / 230, 258 / 232, 227 / 243; whole forwards at 75 and 99.6 %: 9.28 -> 8.21 and
# 9.83 -> 9.63 s, peak 1483 -> 1339 and 1500 -> 1361 MiB (session 22,
# docs/results/workspace-s22/crossover.txt). Without the workspace (session 19) the banded
# block lost above ~60 %.
M2AS_BAND_SHARE = 1.0


def wants_m2as_bands(x: torch.Tensor, plan: PrunePlan) -> bool:
    return (x.shape[0] == 1 and plan.masked < M2AS_BAND_SHARE * plan.total
            and x.is_contiguous(memory_format=torch.channels_last)
            and wants_bands(x, 2 * x.shape[1]))


class TapReads:
    """Where the masked pixels' deformable taps read: bilinear corners as rows of the table
    (``corner_rows``, with ``corner_weights``), the map rows the table holds (``needed``,
    ascending; the index ``plan.total`` last, standing for the outside of the image, when a
    corner falls there) and, per masked pixel, the last grid row its taps read (``reach``).
    The same for every block of a stage (one plan, one trajectory)."""

    def __init__(self, plan: PrunePlan, start: torch.Tensor, end: torch.Tensor, taps: int,
                 dtype: torch.dtype) -> None:
        w, total = plan.shape[2], plan.total
        compute = coordinate_dtype(dtype)
        # Corners outside the image read a table row that holds the map's value there, so the
        # gathers sum it with the rest. Adding it per chunk afterwards, as a product of the
        # outside shares and the border, ran through MKL's matmul, which kept ~17 MiB of
        # buffers for the rest of the process (session 26). They index -1 here: below every
        # grid row for ``reach``, and the last entry (``total``) of the lookups below.
        corners, self.corner_weights = sample_corners(
            plan.shape, plan.item, plan.row, plan.col,
            start[plan.item, :, plan.row, plan.col].to(compute),
            end[plan.item, :, plan.row, plan.col].to(compute), taps, outside_row=-1)
        self.reach = corners.amax((0, 2)) // w
        touched = torch.zeros(total + 1, dtype=torch.bool, device=corners.device)
        touched[corners.flatten()] = True
        reads_outside = bool(touched[total])
        self.needed = touched.nonzero().squeeze(1)
        del touched
        position = torch.empty(total + 1, dtype=torch.long, device=corners.device)
        position[self.needed] = torch.arange(self.needed.numel(), device=corners.device)
        self.corner_rows = position[corners]
        # the table row of the outside: the last needed one, when any corner falls there
        self.outside_row = self.needed.numel() - 1 if reads_outside else None


class TapTable:
    """The folded conv4 rows that the masked pixels' deformable taps read (:class:`TapReads`),
    filled band by band, and ``border``, the folded map's value outside the image."""

    def __init__(self, reads: TapReads, border: torch.Tensor, dtype: torch.dtype,
                 workspace: "StageWorkspace") -> None:
        self.reads = reads
        shape = (reads.needed.numel(), border.numel())
        device = reads.needed.device
        self.table = workspace.take("table", shape, dtype, device)
        if reads.outside_row is not None:
            self.table[reads.outside_row] = border

    def keep(self, folded: torch.Tensor, first_row: int, end_row: int) -> None:
        """Copy the needed rows among map rows [first_row, end_row) (``folded``)."""
        needed = self.reads.needed
        begin, stop = _range_of(needed, first_row, end_row)
        if stop > begin:
            torch.index_select(folded, 0, needed[begin:stop] - first_row,
                               out=self.table[begin:stop])

    def gated_taps(self, fold, first: int, last: int) -> torch.Tensor:
        """Gated deformable taps [n, C] of masked pixels [first, last) (``mask_index`` ranks):
        every row they read must be in the table."""
        reads = self.reads
        sampled = fold.kept_bias.to(reads.corner_weights.dtype).expand(last - first, -1).clone()
        accumulate_taps(sampled, self.table, reads.corner_rows[:, first:last],
                        reads.corner_weights[:, first:last], fold.taps)
        return simple_gate(sampled.to(self.table.dtype))


def _range_of(sorted_index: torch.Tensor, begin: int, end: int) -> tuple[int, int]:
    """Positions [i, j) of the entries of an ascending index within [begin, end)."""
    bounds = torch.tensor([begin, end], device=sorted_index.device)
    i, j = torch.searchsorted(sorted_index, bounds).tolist()
    return i, j


class StageWorkspace:
    """What the banded blocks of one stage share at inference instead of making anew each
    (they share one plan and one trajectory, so sizes and sampling positions repeat): buffers
    for their largest temporaries (the mask-aware conv's table, its output at the masked
    pixels, the :class:`TapTable`) and the taps' :class:`TapReads`. Fresh, each table of
    16 MiB or more would be a new mapping (:mod:`.memory`), which costs more to fault in than
    to fill. Each named buffer has one taker at a time: a take invalidates what the previous
    take of that name returned."""

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}
        # (plan, start, end), (taps, dtype) and what they gave
        self._reads: tuple[tuple, tuple, TapReads] | None = None

    def take(self, name: str, shape: tuple[int, int], dtype: torch.dtype,
             device) -> torch.Tensor:
        """An uninitialised [rows, cols] tensor in buffer ``name`` (grown when too small)."""
        size = shape[0] * shape[1]
        buffer = self._buffers.get(name)
        if (buffer is None or buffer.numel() < size or buffer.dtype != dtype
                or buffer.device != torch.device(device)):
            self._buffers.pop(name, None)  # the old buffer goes before the new one is made
            self._buffers[name] = buffer = torch.empty(size, dtype=dtype, device=device)
        return buffer[:size].view(shape)

    def tap_reads(self, plan: PrunePlan, start: torch.Tensor, end: torch.Tensor, taps: int,
                  dtype: torch.dtype) -> TapReads:
        """:class:`TapReads` for these arguments, built by the first block that asks."""
        objects, values = (plan, start, end), (taps, dtype)
        if (self._reads is None or self._reads[1] != values
                or any(a is not b for a, b in zip(self._reads[0], objects))):
            self._reads = (objects, values, TapReads(plan, start, end, taps, dtype))
        return self._reads[2]


# Dilated-set rows through norm1 and conv1 at once, into the workspace's table: the gathered
# rows, their norm and the conv output stay in the heap, in cache.
TABLE_CHUNK_ROWS = 4096


def _pointwise_table_into(table: torch.Tensor, block, rows: torch.Tensor,
                          index: torch.Tensor) -> torch.Tensor:
    """:func:`~m2ae_core.masked_conv.pointwise_table` of ``norm1(rows[index])``, chunk by chunk,
    into ``table``."""
    weight = block.conv1.weight.view(block.conv1.out_channels, -1)
    # per row: the gathered, normed and output rows, each at most a table row wide
    step = chunk_items(rows.device, TABLE_CHUNK_ROWS, 3 * table.shape[1] * table.element_size())
    for first in range(0, index.numel(), step):
        part = index[first:first + step]
        normed = block.norm1.rows(rows.index_select(0, part))
        table[first:first + part.numel()] = linear_rows(normed, weight, block.conv1.bias)
    table[-1] = 0
    return table


def _masked_mix(block, x: torch.Tensor, plan: PrunePlan,
                workspace: StageWorkspace) -> torch.Tensor | None:
    """The gated mask-aware conv at the masked pixels [Q, C] (None: no masked pixel)."""
    if not plan.masked:
        return None
    table = workspace.take("table", (plan.table_index.numel(), block.conv1.out_channels),
                           x.dtype, x.device)
    table = _pointwise_table_into(table, block, pixel_rows(x), plan.table_index)
    out = workspace.take("mix", (plan.masked, x.shape[1]), x.dtype, x.device)
    return masked_gated_depthwise(table, plan, block.conv2, out=out)


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
                      overwrite_input: bool = False,
                      workspace: StageWorkspace | None = None) -> torch.Tensor:
    """``block(x, mask, start, end, plan, gated=True, prune_conv=True)``, band by band.

    ``overwrite_input``: the caller hands ``x`` over (it holds no other reference that it
    reads later) and the result is written into it: the block then holds one whole map.
    ``workspace``: where the block's tables go (a stage hands every block the same; without
    one the block makes its own).
    """
    _, c, h, w = x.shape
    workspace = workspace if workspace is not None else StageWorkspace()
    rows = rows or band_rows(x, 2 * c)
    masked_mix = _masked_mix(block, x, plan, workspace)
    attention, mix = _channel_attention(block, x, plan, masked_mix, rows)
    out = x if overwrite_input else torch.empty_like(x)
    for top, bottom in bands(h, rows):
        band = (mix[:, :, top:bottom] if mix is not None
                else _mix_band(block, x, plan, masked_mix, top, bottom))
        # into its place (``out`` may be ``x`` itself): no band-sized copy
        torch.addcmul(x[:, :, top:bottom], block.beta, block.conv3(band * attention),
                      out=out[:, :, top:bottom])
    del mix, band, masked_mix, x
    fold = block.folded_conv4()
    taps = None
    if plan.masked:
        taps_per_pixel = fold.taps.shape[1]
        reads = workspace.tap_reads(plan, start, end, taps_per_pixel, out.dtype)
        taps = TapTable(reads, fold.border, out.dtype, workspace)
    # folded bands waiting for rows their taps read: (last grid row they read, band)
    pending = deque()

    def finish(top: int, bottom: int, gated: torch.Tensor, first: int, last: int) -> None:
        if last > first:
            gated.index_copy_(0, plan.mask_index[first:last] - top * w,
                              taps.gated_taps(fold, first, last))
        band = out[:, :, top:bottom]
        update = block.conv5(gated.view(1, bottom - top, w, c).permute(0, 3, 1, 2))
        band.addcmul_(block.gamma, update)

    for top, bottom in bands(h, rows):
        folded = linear_rows(pixel_rows(block.norm2(out[:, :, top:bottom])), fold.weight,
                             fold.bias)
        first, last = _range_of(plan.mask_index, top * w, bottom * w)
        reach = -1  # no taps: ready at once
        if taps is not None:
            taps.keep(folded, top * w, bottom * w)
            if last > first:
                reach = int(taps.reads.reach[first:last].max())
        pending.append((reach, (top, bottom, fold.gate_(folded), first, last)))
        while pending and pending[0][0] < bottom:  # every row it reads is computed
            finish(*pending.popleft()[1])
    for _, band_args in pending:
        finish(*band_args)
    return out
