"""Inference on large feature maps in bands of rows: the same values, less memory.

A NAFNet block run whole holds its input, the 2C-channel 1x1 output and the 2C-channel
depthwise output at once: five C-channel maps, at full resolution the network's peak. Almost
all of the block is per-pixel, and its one 3x3 convolution needs a single row of context above
and below, so it can run band by band: only the input and one C-channel result map are ever
whole (plus band-sized temporaries). The block's channel attention pools over the whole image
and is the only step that has to wait for every band.

Only for inference (no autograd graph is kept for bands) and only where a map spans more than
one band; small maps take the ordinary path.
"""
from __future__ import annotations

import torch

from .chunking import chunk_items

# Bytes of one band's widest (2C-channel) temporary on a CPU. Big enough that the extra row of
# 1x1 work above and below each band stays small (a few %), small enough to stay in the CPU's
# last-level cache. Accelerators get bigger bands (.chunking): each band is a few launches.
CPU_BAND_BYTES = 8 << 20
MIN_BAND_ROWS = 8


def band_rows(x: torch.Tensor, channels: int, band_bytes: int | None = None) -> int:
    """Rows per band for a map shaped like ``x`` [B,*,H,W] whose widest temporary has
    ``channels`` channels; ``x.shape[2]`` (one band: the whole map) when it is small."""
    b, _, h, w = x.shape
    if band_bytes is None:
        band_bytes = chunk_items(x.device, CPU_BAND_BYTES, 1)
    row_bytes = max(1, b * w * channels * x.element_size())
    return min(h, max(MIN_BAND_ROWS, band_bytes // row_bytes))


def wants_bands(x: torch.Tensor, channels: int) -> bool:
    """Banded evaluation pays: inference (no autograd) on a map of more than one band."""
    return not torch.is_grad_enabled() and band_rows(x, channels) < x.shape[2]


def bands(height: int, rows: int):
    """(top, bottom) of each band of ``rows`` rows covering ``height`` rows."""
    for top in range(0, height, rows):
        yield top, min(top + rows, height)


def _gate(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """NAFNet's SimpleGate (product of the two channel halves), optionally into ``out``
    (``layers.simple_gate`` without an ``out``: layers imports this module, not vice versa)."""
    a, b = x.chunk(2, dim=1)
    return torch.mul(a, b, out=out) if out is not None else a * b


def naf_block_banded(block, x: torch.Tensor, rows: int | None = None,
                     overwrite_input: bool = False,
                     scratch: torch.Tensor | None = None) -> torch.Tensor:
    """``block(x)`` for a :class:`~m2ae_core.layers.NAFBlock`, band by band (inference).

    Pass 1 writes the gated depthwise output of every band into one C-channel map; the
    channel attention then pools it whole; pass 2 finishes each band (both halves' residuals
    included) in place in that map, which becomes the result, or, with ``overwrite_input``
    (the caller hands ``x`` over), in ``x``. ``scratch``: a map like ``x`` to hold pass 1's
    output instead of a new one (a stage hands every block the same; only with
    ``overwrite_input``, since the result must not be the scratch map).
    """
    if scratch is not None and not overwrite_input:
        raise ValueError("a scratch map needs overwrite_input: the result would be the scratch")
    _, _, h, _ = x.shape
    rows = rows or band_rows(x, block.conv1.out_channels)
    out = torch.empty_like(x) if scratch is None else scratch
    for top, bottom in bands(h, rows):
        # the depthwise 3x3 needs one row of 1x1 output above and below the band; at the
        # image's edges its own zero padding stands in, as in the whole-map evaluation
        above, below = max(top - 1, 0), min(bottom + 1, h)
        wide = block.conv2(block.conv1(block.norm1(x[:, :, above:below])))
        _gate(wide[:, :, top - above:bottom - above], out=out[:, :, top:bottom])
    attention = block.sca(out)
    result = x if overwrite_input else out
    for top, bottom in bands(h, rows):
        # both residuals land in the result's band itself (which may be ``x``'s or ``out``'s
        # own, read just before): no band-sized sum to copy in afterwards
        mid = torch.addcmul(x[:, :, top:bottom], block.beta,
                            block.conv3(out[:, :, top:bottom] * attention),
                            out=result[:, :, top:bottom])
        mid.addcmul_(block.gamma, block.conv5(_gate(block.conv4(block.norm2(mid)))))
    return result


def upsample_add(up, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """``up(x) + skip`` for a per-pixel upsampler (1x1 conv then pixel shuffle). On a large map
    at inference it is written into ``skip`` band by band, so that the full-size upsampled map
    and the sum never exist on their own: ``skip`` is consumed (the decoder holds it for this
    sum only)."""
    rows = band_rows(x, x.shape[1] * 2)
    if torch.is_grad_enabled() or rows >= x.shape[2]:
        return up(x) + skip
    scale = skip.shape[2] // x.shape[2]
    for top, bottom in bands(x.shape[2], rows):
        skip[:, :, top * scale:bottom * scale] += up(x[:, :, top:bottom])
    return skip
