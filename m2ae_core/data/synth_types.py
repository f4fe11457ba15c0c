"""The synthetic generator's parameters (:class:`SynthParams`), motions, scene objects and the
sample it returns (the model of blur is described in :mod:`m2ae_core.data.synthetic`)."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch

from ..errors import ConfigError


def _pair(value, kind=float) -> tuple:
    lo, hi = value
    return (kind(lo), kind(hi))


@dataclass(frozen=True)
class SynthParams:
    """Distribution of synthetic samples. Lengths are in output pixels.

    ``motion_length`` is the path length of a local object's centre over the whole
    exposure; ``curvature`` bounds ``|a| / |b|`` of its quadratic path before rescaling to
    that length; ``rotation_deg`` / ``scale_change`` bound the total rotation (degrees) and
    log-scale change of an object over the exposure (linear in time). ``object_size`` is an
    object's diameter as a fraction of ``min(H, W)``. ``crop_zoom`` is photo pixels per
    output pixel of a crop (clipped so that the crop fits the photo; small photos are
    upscaled). ``global_every > 0`` makes index ``i`` global iff
    ``i % global_every == global_every - 1`` (exact proportions for a benchmark); otherwise
    a sample is global with probability ``global_prob``. Noise sigma is in sRGB units
    (0..1); noise and JPEG touch the blurred image only. ``defocus_prob`` is the share of
    local samples whose static background is put out of focus (a disc of
    ``defocus_radius`` px, over the whole frame with probability ``defocus_whole_prob``,
    otherwise over one side of a soft focal ramp).
    """

    size: tuple[int, int] = (256, 256)
    objects: tuple[int, int] = (1, 3)
    object_size: tuple[float, float] = (0.2, 0.55)
    feather: tuple[float, float] = (0.6, 2.0)
    motion_length: tuple[float, float] = (4.0, 40.0)
    curvature: float = 0.6
    rotation_deg: float = 6.0
    scale_change: float = 0.06
    subframes: int = 17
    global_prob: float = 0.5
    global_every: int = 0
    global_motion_length: tuple[float, float] = (4.0, 32.0)
    global_rotation_deg: float = 1.0
    crop_zoom: tuple[float, float] = (0.6, 1.5)
    noise_prob: float = 0.7
    noise_sigma: tuple[float, float] = (0.002, 0.012)
    jpeg_prob: float = 0.5
    jpeg_quality: tuple[int, int] = (75, 95)
    defocus_prob: float = 0.0
    defocus_radius: tuple[float, float] = (1.5, 6.0)
    defocus_whole_prob: float = 0.5

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        try:
            set_("size", _pair(self.size, int))
            set_("objects", _pair(self.objects, int))
            set_("jpeg_quality", _pair(self.jpeg_quality, int))
            for name in ("object_size", "feather", "motion_length", "global_motion_length",
                         "crop_zoom", "noise_sigma", "defocus_radius"):
                set_(name, _pair(getattr(self, name)))
            for name in ("curvature", "rotation_deg", "scale_change", "global_prob",
                         "global_rotation_deg", "noise_prob", "jpeg_prob", "defocus_prob",
                         "defocus_whole_prob"):
                set_(name, float(getattr(self, name)))
            set_("subframes", int(self.subframes))
            set_("global_every", int(self.global_every))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"invalid synthetic-data parameter: {exc}") from None
        if min(self.size) < 16:
            raise ConfigError(f"size must be at least 16x16, got {self.size}")
        if not 1 <= self.objects[0] <= self.objects[1] <= 8:
            raise ConfigError(f"objects must be a range within 1..8, got {self.objects}")
        if self.subframes < 15 or self.subframes % 2 == 0:
            raise ConfigError(f"subframes must be odd and >= 15, got {self.subframes}")
        for name in ("object_size", "feather", "motion_length", "global_motion_length",
                     "crop_zoom", "noise_sigma", "jpeg_quality", "defocus_radius"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ConfigError(f"{name} must be a range 0 <= lo <= hi, got {(lo, hi)}")
        if self.object_size[1] > 1.0 or self.object_size[0] <= 0:
            raise ConfigError(f"object_size must lie in (0, 1], got {self.object_size}")
        if self.feather[0] <= 0 or self.crop_zoom[0] <= 0:
            raise ConfigError("feather and crop_zoom must be positive")
        if not 1 <= self.jpeg_quality[0] <= self.jpeg_quality[1] <= 100:
            raise ConfigError(f"jpeg_quality must lie in 1..100, got {self.jpeg_quality}")
        for name in ("global_prob", "noise_prob", "jpeg_prob", "defocus_prob",
                     "defocus_whole_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be a probability, got {getattr(self, name)}")
        if min(self.curvature, self.rotation_deg, self.scale_change,
               self.global_rotation_deg, self.global_every) < 0:
            raise ConfigError("curvature, rotation, scale change and global_every must be >= 0")

    def replace(self, **changes) -> "SynthParams":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "SynthParams":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown synthetic-data fields {unknown}")
        return cls(**data)


@dataclass(frozen=True)
class Motion:
    """A similarity motion over the exposure, quadratic in ``t`` and the identity at t=0.

    Each quantity ``v`` (dx, dy, rotation in degrees, log scale) follows
    ``v(t) = (v_s + v_e)/2 * t^2 + (v_e - v_s)/2 * t`` (DESIGN eq. 4), so ``v(-1) = v_s``,
    ``v(1) = v_e`` and ``v(0) = 0``.
    """

    start: tuple[float, float] = (0.0, 0.0)
    end: tuple[float, float] = (0.0, 0.0)
    rot_start: float = 0.0
    rot_end: float = 0.0
    log_scale_start: float = 0.0
    log_scale_end: float = 0.0

    @staticmethod
    def _quad(vs: float, ve: float, t: float) -> float:
        return 0.5 * (vs + ve) * t * t + 0.5 * (ve - vs) * t

    def at(self, t: float) -> tuple[float, float, float, float]:
        """``(dx, dy, theta_radians, scale)`` at time ``t``."""
        dx = self._quad(float(self.start[0]), float(self.end[0]), t)
        dy = self._quad(float(self.start[1]), float(self.end[1]), t)
        theta = math.radians(self._quad(float(self.rot_start), float(self.rot_end), t))
        scale = math.exp(self._quad(float(self.log_scale_start), float(self.log_scale_end), t))
        return dx, dy, theta, scale

    def is_identity_at(self, t: float) -> bool:
        dx, dy, theta, scale = self.at(t)
        return dx == 0.0 and dy == 0.0 and theta == 0.0 and scale == 1.0

    def forward_displacement(self, t: float, xs: torch.Tensor, ys: torch.Tensor,
                             centre: tuple[float, float]) -> tuple[torch.Tensor, torch.Tensor]:
        """``T_t(p) - p`` at points ``(xs, ys)`` (float64 tensors)."""
        dx, dy, theta, scale = self.at(t)
        cos, sin = math.cos(theta), math.sin(theta)
        u, v = xs - centre[0], ys - centre[1]
        return (scale * (cos * u - sin * v) - u + dx,
                scale * (sin * u + cos * v) - v + dy)

    def inverse_map(self, t: float, xs: torch.Tensor, ys: torch.Tensor,
                    centre: tuple[float, float]) -> tuple[torch.Tensor, torch.Tensor]:
        """``T_t^{-1}(q)``: the mid-exposure position of what is at ``q`` at time ``t``."""
        dx, dy, theta, scale = self.at(t)
        cos, sin = math.cos(theta), math.sin(theta)
        u, v = xs - centre[0] - dx, ys - centre[1] - dy
        return (centre[0] + (cos * u + sin * v) / scale,
                centre[1] + (-sin * u + cos * v) / scale)

    def to_dict(self) -> dict:
        return {"start": [float(v) for v in self.start], "end": [float(v) for v in self.end],
                "rot_start": float(self.rot_start), "rot_end": float(self.rot_end),
                "log_scale_start": float(self.log_scale_start),
                "log_scale_end": float(self.log_scale_end)}


@dataclass
class SceneObject:
    """A foreground object: sRGB ``texture [3,h,w]`` and ``alpha [h,w]`` (zero on the
    border of its box), whose box sits at integer ``top_left = (x0, y0)`` in the frame at
    mid-exposure. ``centre`` (rotation/scale centre, frame coordinates) defaults to the box
    centre."""

    texture: torch.Tensor
    alpha: torch.Tensor
    top_left: tuple[int, int]
    motion: Motion
    centre: tuple[float, float] | None = None

    def resolved_centre(self) -> tuple[float, float]:
        if self.centre is not None:
            return (float(self.centre[0]), float(self.centre[1]))
        h, w = self.alpha.shape[-2:]
        return (self.top_left[0] + (w - 1) / 2.0, self.top_left[1] + (h - 1) / 2.0)


@dataclass
class RenderDebug:
    """Internals of one rendering, for tests and inspection.

    ``subframes [N,3,H,W]`` sRGB sub-frames (before augmentation); ``alphas [K,N,H,W]`` the
    warped alpha of every object (composited in this order, back to front); ``motion_px
    [K,H,W]`` the ``m_k`` of the mask rule (computed where the object can reach, zero
    elsewhere); ``times`` the instants ``t_n``; ``mid`` the index of ``t = 0``.
    """

    subframes: torch.Tensor
    alphas: torch.Tensor
    motion_px: torch.Tensor
    times: tuple[float, ...]
    mid: int


@dataclass
class SynthSample:
    """One sample. ``blur``/``sharp`` float32 ``[3,H,W]`` sRGB 0..1, ``mask`` bool
    ``[H,W]``, ``trajectory`` float32 ``[2,2,H,W]`` (see the module docstring)."""

    blur: torch.Tensor
    sharp: torch.Tensor
    mask: torch.Tensor
    trajectory: torch.Tensor
    is_global: bool
    meta: dict = field(default_factory=dict)
    debug: RenderDebug | None = None
    # what noise and JPEG added to the blurred image (blur minus its clean render); None
    # until augment_blur ran. Lets training keep them in the target (data.target_keeps_degradation).
    degradation: torch.Tensor | None = None

    @property
    def mask_fraction(self) -> float:
        return float(self.mask.float().mean())

    def to_tensors(self) -> dict:
        """Training dict: blur/sharp ``[3,H,W]``, mask float ``[1,H,W]``, trajectory
        ``[4,H,W]`` (o_s dx, o_s dy, o_e dx, o_e dy), is_global bool scalar tensor."""
        h, w = self.mask.shape
        return {"blur": self.blur, "sharp": self.sharp,
                "mask": self.mask[None].float(),
                "trajectory": self.trajectory.reshape(4, h, w),
                "is_global": torch.tensor(bool(self.is_global))}
