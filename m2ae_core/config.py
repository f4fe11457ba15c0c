"""Model configuration: one frozen dataclass and a table of named presets (timm-style)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .errors import ConfigError


@dataclass(frozen=True)
class M2AEConfig:
    """Architecture of an M2AENet (a NAFNet U-Net with M2AS blocks on chosen encoder stages).

    ``m2as_stages`` lists 0-based encoder stage indices whose blocks become M2AS blocks;
    an empty tuple gives the plain NAFNet backbone.
    """

    width: int = 32
    enc_blocks: tuple[int, ...] = (1, 1, 1, 28)
    middle_blocks: int = 1
    dec_blocks: tuple[int, ...] = (1, 1, 1, 1)
    m2as_stages: tuple[int, ...] = (3,)
    in_channels: int = 3
    # Instants on the exposure trajectory sampled by the deformable conv (3x3 kernel: 9 taps).
    trajectory_instants: int = 9
    # Zero the trajectory outside the mask (a sharp pixel has no motion): DESIGN §3 default.
    gate_trajectory: bool = True
    # Residual context units (LN, dilated depthwise 3x3, 1x1, GELU; dilations 1, 2, 4, ...)
    # in front of the mask predictor's per-pixel MLP. 0 = the paper's predictor, which sees
    # only its own pixel's features plus a global mean; measured here to learn almost nothing
    # about blur on a small backbone (docs/training, issue 3).
    mask_context: int = 0
    # Also pool the mask predictor's context by its maximum over the image, not only its
    # mean: a soft, smooth frame with one sharp edge is not camera shake (issue 3, session 9).
    mask_global_max: bool = False
    # Channels of a small stem that reads the image itself for the mask predictors (0: none):
    # the stage features are shaped by restoration (issue 3, session 9).
    mask_evidence: int = 0
    # An image-level "camera shake" logit next to the per-pixel one, each with its own
    # supervision (issue 3, session 11): the per-pixel head learns local blur from local
    # samples only, so it no longer trades local masks for shake coverage. Needs
    # mask_global_max (it reads the pooled mean and max).
    mask_shake_head: bool = False
    # Camera-shake test on the image itself (m2ae_core/shake.py): a frame with fewer sharp
    # edges than this, per mille of its pixels in the direction with fewest, is marked blurred
    # as a whole at inference (0: off). The per-pixel heads then only need to find local blur
    # (issue 3, session 12). Not a weight: stored in the checkpoint's config.
    shake_edges_below: float = 0.0
    name: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "enc_blocks", tuple(int(b) for b in self.enc_blocks))
        object.__setattr__(self, "dec_blocks", tuple(int(b) for b in self.dec_blocks))
        object.__setattr__(self, "m2as_stages", tuple(int(s) for s in self.m2as_stages))
        if self.width < 4 or self.width % 4:
            raise ConfigError(f"width must be a positive multiple of 4, got {self.width}")
        if len(self.enc_blocks) != len(self.dec_blocks) or not self.enc_blocks:
            raise ConfigError("enc_blocks and dec_blocks must be non-empty and of equal length")
        for stage in self.m2as_stages:
            if not 0 <= stage < len(self.enc_blocks) or self.enc_blocks[stage] < 1:
                raise ConfigError(f"m2as stage {stage} is not an encoder stage with blocks")
        if not 0 <= self.mask_context <= 8:
            raise ConfigError(f"mask_context must be 0..8 context units, got {self.mask_context}")
        if self.mask_evidence < 0 or (self.mask_evidence and not self.m2as_stages):
            raise ConfigError("mask_evidence must be 0, or a channel count with M2AS stages")
        if self.m2as_stages and self.mask_evidence and min(self.m2as_stages) < 2:
            raise ConfigError("mask_evidence works at stride 4: M2AS stages must be 2 or deeper")
        if self.mask_shake_head and not (self.m2as_stages and self.mask_global_max):
            raise ConfigError("mask_shake_head needs M2AS stages and mask_global_max")
        try:
            object.__setattr__(self, "shake_edges_below", float(self.shake_edges_below))
        except (TypeError, ValueError):
            raise ConfigError(f"shake_edges_below must be a number, got {self.shake_edges_below!r}") from None
        if self.shake_edges_below < 0 or (self.shake_edges_below and not self.m2as_stages):
            raise ConfigError("shake_edges_below must be 0, or a positive per-mille share with "
                              "M2AS stages (a plain backbone has no mask to mark)")
        if self.shake_edges_below and self.mask_shake_head:
            raise ConfigError("shake_edges_below and mask_shake_head are two answers to the same "
                              "question: choose one")
        if self.trajectory_instants != 9:
            raise ConfigError("trajectory_instants must be 9 (one per tap of the 3x3 kernel)")

    @property
    def pad_multiple(self) -> int:
        """Input sides are padded to a multiple of this (one halving per encoder stage)."""
        return 2 ** len(self.enc_blocks)

    @property
    def has_m2as(self) -> bool:
        return bool(self.m2as_stages)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "M2AEConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config fields {unknown}; known fields: {sorted(known)}")
        return cls(**data)


PRESETS: dict[str, M2AEConfig] = {
    # The paper's model: NAFNet-w32 GoPro layout, M2AS on encoder stage 4 (index 3).
    "paper": M2AEConfig(name="paper"),
    # The plain backbone, the baseline of every comparison; NAFNet-GoPro checkpoints load 1:1.
    "nafnet-w32": M2AEConfig(m2as_stages=(), name="nafnet-w32"),
    # Small enough to train on a 2-core CPU; M2AS on the two lowest-resolution stages.
    "small": M2AEConfig(width=16, enc_blocks=(1, 1, 2, 4), dec_blocks=(1, 1, 1, 1),
                        m2as_stages=(2, 3), name="small"),
    # Equal-budget dense baseline for "small" (the paper's ablation variant 1).
    "nafnet-small": M2AEConfig(width=16, enc_blocks=(1, 1, 2, 4), dec_blocks=(1, 1, 1, 1),
                               m2as_stages=(), name="nafnet-small"),
}


def get_config(preset: str | M2AEConfig = "paper", **overrides) -> M2AEConfig:
    """Return the config of a named preset, with fields replaced by ``overrides``."""
    if isinstance(preset, M2AEConfig):
        base = preset
    else:
        try:
            base = PRESETS[preset]
        except KeyError:
            raise ConfigError(
                f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}") from None
    if not overrides:
        return base
    try:
        return dataclasses.replace(base, name=overrides.pop("name", "custom"), **overrides)
    except TypeError as exc:
        raise ConfigError(f"invalid override: {exc}") from None
