"""Analytic multiply-accumulate counts, the way the paper counts (ptflops style).

Counted: every convolution (k*k*Cin/groups MACs per output element, plus one per output element
for the bias), adaptive average pooling (one per input element), the deformable conv (per tap:
4 bilinear MACs + 1 weight MAC, plus the bias). Not counted, as in ptflops: layer norms,
activations, element-wise products and additions, pixel shuffle, padding and indexing.
"""
from __future__ import annotations

from dataclasses import dataclass

from .config import M2AEConfig

BILINEAR_MACS = 4  # one bilinear sample = 4 weighted reads


def conv_macs(pixels: int, cin: int, cout: int, kernel: int = 1, groups: int = 1,
              bias: bool = True) -> int:
    """MACs of a conv producing ``pixels`` output positions."""
    return pixels * cout * (kernel * kernel * cin // groups + (1 if bias else 0))


def naf_block_macs(channels: int, pixels: int) -> int:
    c, inner = channels, 2 * channels
    return (conv_macs(pixels, c, inner) + conv_macs(pixels, inner, inner, 3, inner)
            + pixels * c + conv_macs(1, c, c)  # simplified channel attention: pool + 1x1
            + conv_macs(pixels, c, c) + conv_macs(pixels, c, inner) + conv_macs(pixels, c, c))


def deform_macs(channels: int, pixels: int) -> int:
    """Deformable depthwise 3x3 evaluated at ``pixels`` positions."""
    return pixels * channels * (9 * (BILINEAR_MACS + 1) + 1)


def m2as_block_macs(channels: int, pixels: int, masked: int | None = None,
                    dilated: int | None = None, gated: bool = True) -> int:
    """One M2AS block; ``masked``/``dilated`` given means the pruned path (DESIGN §3)."""
    c, inner = channels, 2 * channels
    plain = naf_block_macs(c, pixels)
    if masked is None:  # dense masked formula: every pixel through everything
        return plain + deform_macs(inner, pixels)
    mixing = conv_macs(pixels, c, inner) + conv_macs(pixels, inner, inner, 3, inner)
    if 0 < masked < pixels:
        mixing = conv_macs(dilated, c, inner) + conv_macs(masked, inner, inner, 3, inner)
    elif masked == 0:
        mixing = 0
    if gated and masked < pixels:
        # static part: per-channel scale + bias everywhere; trajectory sampling on the mask
        motion = pixels * inner * 2 + deform_macs(inner, masked)
    else:
        motion = deform_macs(inner, pixels)
    return plain - conv_macs(pixels, c, inner) - conv_macs(pixels, inner, inner, 3, inner) \
        + mixing + motion


def stage_head_macs(channels: int, pixels: int, context_units: int = 0,
                    predictor_runs: bool = True, global_max: bool = False,
                    evidence_channels: int = 0, shake_head: bool = False) -> int:
    """Mask predictor (with its context units, global max, evidence projection and shake head) +
    intra-motion analyzer of an M2AS stage. ``predictor_runs`` False: the analyzer alone
    (inference with a given mask)."""
    c = channels
    analyzer = conv_macs(pixels, c, 4, 3)
    if not predictor_runs:
        return analyzer
    context = context_units * (conv_macs(pixels, c, c, 3, c) + conv_macs(pixels, c, c))
    predictor = context + (2 * conv_macs(pixels, c, c) + pixels * (c // 2)  # global mean of half
                 + conv_macs(pixels, c, c // 2) + conv_macs(pixels, c // 2, c // 4)
                 + conv_macs(pixels, c // 4, 2))
    if global_max:
        predictor += pixels * (c // 2) + conv_macs(1, c // 2, c // 2, bias=False)
    if evidence_channels:
        predictor += conv_macs(pixels, evidence_channels, c, bias=False)
    if shake_head:  # two 1x1 layers on the pooled mean and max: once per image
        predictor += conv_macs(1, c, c // 4) + conv_macs(1, c // 4, 1)
    return predictor + analyzer


def evidence_macs(in_channels: int, channels: int, pixels: int) -> int:
    """The :class:`~m2ae_core.m2as.BlurEvidence` stem over ``pixels`` (padded) input pixels."""
    quarter, half = max(channels // 4, 1), max(channels // 2, 1)
    return (conv_macs(pixels, in_channels, quarter, 3) + conv_macs(pixels // 4, quarter, half, 2)
            + conv_macs(pixels // 4, half, half, 3) + conv_macs(pixels // 16, half, channels, 2))


@dataclass
class StagePixels:
    """Pixels of an M2AS stage grid that went through the pruned conv."""

    masked: int
    dilated: int


def padded_size(config: M2AEConfig, height: int, width: int) -> tuple[int, int]:
    m = config.pad_multiple
    return -(-height // m) * m, -(-width // m) * m


def count_macs(config: M2AEConfig, height: int, width: int,
               stage_pixels: dict[int, StagePixels] | None = None,
               mask_given: bool = False) -> int:
    """MACs of one forward pass over a ``height`` x ``width`` image (batch 1).

    ``stage_pixels`` maps an M2AS stage index to its pruned pixel counts (summed over a batch
    they count pixels of all items); stages missing from it are counted dense.
    ``mask_given``: an inference run with a user mask, which skips the mask predictors.
    """
    h, w = padded_size(config, height, width)
    pixels = h * w
    width_c = config.width
    total = conv_macs(pixels, config.in_channels, width_c, 3) \
        + conv_macs(pixels, width_c, config.in_channels, 3)
    evidence = config.mask_evidence if not mask_given else 0
    if evidence:
        total += evidence_macs(config.in_channels, evidence, pixels)
    channels = width_c
    for stage, blocks in enumerate(config.enc_blocks):
        if stage in config.m2as_stages:
            counts = (stage_pixels or {}).get(stage)
            total += stage_head_macs(channels, pixels, config.mask_context,
                                     not mask_given, config.mask_global_max, evidence,
                                     config.mask_shake_head)
            if evidence and stage > 2:  # the stride-4 evidence average-pooled to this grid
                total += (h * w // 16) * evidence
            for _ in range(blocks):
                if counts is None:
                    total += m2as_block_macs(channels, pixels)
                else:
                    total += m2as_block_macs(channels, pixels, counts.masked, counts.dilated,
                                             config.gate_trajectory)
        else:
            total += blocks * naf_block_macs(channels, pixels)
        pixels //= 4
        total += conv_macs(pixels, channels, 2 * channels, 2)
        channels *= 2
    total += config.middle_blocks * naf_block_macs(channels, pixels)
    for blocks in reversed(config.dec_blocks):
        total += conv_macs(pixels, channels, 2 * channels, 1, bias=False)
        pixels *= 4
        channels //= 2
        total += blocks * naf_block_macs(channels, pixels)
    return total
