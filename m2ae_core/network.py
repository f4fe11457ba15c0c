"""M2AENet: a NAFNet U-Net whose chosen encoder stages are M2AS stages (DESIGN §2)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .banded import upsample_add
from .config import M2AEConfig, get_config
from .layers import Conv1x1, NAFBlock, NAFStage
from .memory import release_free_heap
from .m2as import BlurEvidence, M2ASStage, StageOutput
from .shake import looks_shaken


@dataclass
class NetworkOutput:
    image: torch.Tensor | None  # restored [B,3,H,W], same size as the input (None: stages_only)
    stages: list[StageOutput] = field(default_factory=list)  # one per M2AS stage, shallow first


def pad_to_multiple(x: torch.Tensor, multiple: int, value: float = 0.0) -> torch.Tensor:
    """Zero-pad right and bottom so both sides are multiples of ``multiple``."""
    h, w = x.shape[-2:]
    return F.pad(x, (0, (-w) % multiple, 0, (-h) % multiple), value=value)


def any_in_blocks(mask: torch.Tensor, size: int) -> torch.Tensor:
    """bool [B,C,H,W] (sides multiples of ``size``) -> [B,C,H/size,W/size]: whether any pixel
    of each ``size`` x ``size`` block is set."""
    b, c, h, w = mask.shape
    return mask.reshape(b, c, h // size, size, w // size, size).any(5).any(3)


class M2AENet(nn.Module):
    def __init__(self, config: M2AEConfig) -> None:
        super().__init__()
        self.config = config
        width = config.width
        self.intro = nn.Conv2d(config.in_channels, width, 3, padding=1)
        self.ending = nn.Conv2d(width, config.in_channels, 3, padding=1)
        self.encoders = nn.ModuleList()
        self.downs = nn.ModuleList()
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        channels = width
        for stage, blocks in enumerate(config.enc_blocks):
            if stage in config.m2as_stages:
                self.encoders.append(M2ASStage(channels, blocks, stage, config.gate_trajectory,
                                               config.mask_context, config.mask_global_max,
                                               config.mask_evidence, config.mask_shake_head))
            else:
                self.encoders.append(NAFStage(*[NAFBlock(channels) for _ in range(blocks)]))
            self.downs.append(nn.Conv2d(channels, 2 * channels, 2, stride=2))
            channels *= 2
        self.mask_evidence = (BlurEvidence(config.mask_evidence, config.in_channels)
                              if config.mask_evidence else None)
        self.middle_blks = NAFStage(*[NAFBlock(channels) for _ in range(config.middle_blocks)])
        for blocks in reversed(config.dec_blocks):
            self.ups.append(nn.Sequential(Conv1x1(channels, 2 * channels, bias=False),
                                          nn.PixelShuffle(2)))
            channels //= 2
            self.decoders.append(NAFStage(*[NAFBlock(channels) for _ in range(blocks)]))

    def _stage_masks(self, mask: torch.Tensor | None):
        """User mask padded like the image, max-pooled to each M2AS stage's grid (a grid
        pixel is masked where any of its input pixels is)."""
        if mask is None:
            return {}
        # in bool: a float copy of a full-size mask and its padded copy (2 x 12 MB at
        # 2152x1436) stayed resident in the heap under the whole forward's peak
        binary = mask > 0.5 if mask.is_floating_point() else mask.bool()
        padded = pad_to_multiple(binary, self.config.pad_multiple)
        return {s: any_in_blocks(padded, 2 ** s) for s in self.config.m2as_stages}

    def _evidence(self, padded: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor | None:
        """Blur evidence for the mask predictors; not computed when a given mask replaces
        their prediction at inference."""
        if self.mask_evidence is None or (mask is not None and not self.training):
            return None
        return self.mask_evidence(padded)

    def detect_shake(self, image: torch.Tensor) -> torch.Tensor | None:
        """Bool [B]: frames the camera-shake test (``config.shake_edges_below``) finds shaken
        as a whole; None when the model has no such test. Tiled inference calls it once on the
        whole image: a tile of sky alone would look shaken."""
        if not self.config.shake_edges_below:
            return None
        return looks_shaken(image, self.config.shake_edges_below)

    def _shaken(self, image: torch.Tensor, mask: torch.Tensor | None,
                shaken: torch.Tensor | None) -> torch.Tensor | None:
        """The shake decision a forward uses: none under a given mask."""
        if mask is not None:
            return None
        return shaken if shaken is not None else self.detect_shake(image)

    def _intro(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        padded = pad_to_multiple(image.to(self.intro.weight.dtype), self.config.pad_multiple)
        # Channels-last: pixel-wise ops (layer norm, gathers of pixel rows) read contiguous
        # channel vectors; 2x faster on CPU than NCHW for the same convolutions.
        padded = padded.contiguous(memory_format=torch.channels_last)
        return padded, self.intro(padded)

    def analyze(self, image: torch.Tensor, mask: torch.Tensor | None = None,
                threshold: float = 0.5, shaken: torch.Tensor | None = None
                ) -> StageOutput | None:
        """Blur mask and trajectory of the shallowest M2AS stage, without restoring the image:
        runs only the network up to that stage's input (None for a plain backbone).
        ``shaken``: as in :meth:`forward`."""
        if not self.config.m2as_stages:
            return None
        shaken = self._shaken(image, mask, shaken)
        stage_masks = self._stage_masks(mask)
        padded, x = self._intro(image)
        evidence = self._evidence(padded, mask)
        for encoder, down in zip(self.encoders, self.downs):
            if isinstance(encoder, M2ASStage):
                return encoder.analyze(x, stage_masks.get(encoder.stage), threshold, evidence,
                                       shaken)
            x = down(encoder(x))
        raise AssertionError("unreachable: config lists an M2AS stage")

    def forward(self, image: torch.Tensor, mask: torch.Tensor | None = None,
                threshold: float = 0.5, pruned: bool | None = None,
                stages_only: bool = False, shaken: torch.Tensor | None = None) -> NetworkOutput:
        """Restore ``image`` [B,3,H,W] (0..1).

        ``mask`` (bool [B,1,H,W] at input resolution) replaces the predicted blur mask.
        ``pruned`` defaults to True in eval mode: the mask-aware conv runs on blurred pixels only.
        ``stages_only``: stop after the last M2AS stage (``image`` is None); what training the
        mask heads alone needs, at the cost of the encoder only.
        ``shaken`` (bool [B]): the camera-shake decision for each frame, when the caller made
        it on a larger image (tiling); by default the model's own test on ``image``, if it has
        one. Frames found shaken are processed whole (in training too, so that the
        restoration learns on the masks inference uses). Ignored under ``mask``.
        """
        if pruned is None:
            pruned = not self.training
        h, w = image.shape[-2:]
        shaken = self._shaken(image, mask, shaken)
        stage_masks = self._stage_masks(mask)
        padded, x = self._intro(image)
        evidence = self._evidence(padded, mask)
        # The residual is added to the caller's image at the end: the padded copy is not kept
        # through the forward (one image-sized map less at every stage's peak: 35 MiB at
        # 2152x1436 in fp32; the 13 MP Dragonfly photo's peak fell by 145 MiB).
        del padded
        skips, stages = [], []
        for encoder, down in zip(self.encoders, self.downs):
            if isinstance(encoder, M2ASStage):
                # x (the downsampled map) is not read again: the stage may overwrite it
                x, info = encoder(x, stage_masks.get(encoder.stage), threshold, pruned, evidence,
                                  shaken, overwrite_input=True)
                stages.append(info)
                if stages_only and len(stages) == len(self.config.m2as_stages):
                    return NetworkOutput(None, stages)
            else:
                x = encoder(x, overwrite_input=True)  # the stage's input is not read again
            # Every stage's heap-sized temporaries (bands, index tables), freed: handed back
            # before the next stage. Glibc returns only the top of the heap by itself; when a
            # long-lived allocation sits above them they stay resident (pruned `paper` at
            # 2152x1436: 25-30 MiB after its first stage; peak 1257-1277 -> 1243-1255 MiB).
            release_free_heap()
            skips.append(x)
            x = down(x)
        x = self.middle_blks(x, overwrite_input=True)
        for decoder, up in zip(self.decoders, self.ups):
            # pop: each skip is freed once added, instead of all living until the last decoder
            # (at full resolution that held ~0.9 of a full-size feature map for nothing)
            release_free_heap()
            x = upsample_add(up, x, skips.pop())
            # a statement of its own: `decoder(upsample_add(up, x, ...))` would keep the
            # lower-resolution input alive while the decoder runs (NAFNet-w32 at 2152x1436:
            # 1406 -> 1265 MiB peak)
            x = decoder(x, overwrite_input=True)
        # Cropped first, then the residual: the input passes through exactly where the residual
        # is zero. A reduced-precision network (bf16 / fp16) adds it in the caller's full
        # precision, so 16-bit photos keep their precision (bf16 alone holds 8 bits).
        x = self.ending(x)[..., :h, :w]
        x = x.to(image.dtype) + image
        release_free_heap()  # the next forward starts without this one's heap holes
        return NetworkOutput(x, stages)


def build_model(preset: str | M2AEConfig = "paper", **overrides) -> M2AENet:
    """Build an untrained model from a preset name (see ``PRESETS``) or a config."""
    return M2AENet(get_config(preset, **overrides))
