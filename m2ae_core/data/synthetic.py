"""Deterministic synthetic local motion blur (DESIGN.md §5).

A sample is made from sharp photographs:

* a static **background** crop of one photo;
* 1-3 **foreground objects**, each a patch of *another* photo cut out with a random soft
  shape (ellipse, smooth radial blob or star-shaped polygon; the alpha is feathered over a
  band of 0.6-2 px and is exactly zero outside that band);
* each object moves during the exposure along a quadratic path
  ``p(t) = a t^2 + b t`` with ``t`` in ``[-1, 1]`` and ``p(0) = 0`` (so the mid-exposure
  frame is the sharp frame), plus a small rotation and scale change about its centre;
* ``N`` (odd, default 17) sub-frames at ``t_n = 2n/(N-1) - 1`` are rendered by bilinear
  backward warping (``grid_sample``) of the premultiplied object and its alpha, and
  composited back to front over the background **in linear light** (exact sRGB transfer
  function); the blurred image is the linear mean of the sub-frames, re-encoded to sRGB.
  The sharp image is the mid-exposure sub-frame through the same path, so zero motion gives
  ``blur == sharp`` bit for bit (pixels whose linear mean equals the mid frame copy the
  sharp value, so untouched background is identical in both images before augmentation).

A share of samples (``SynthParams.global_prob``, or every ``global_every``-th index) is
**global** blur instead: the whole frame moves (camera shake) along a quadratic path with a
small roll; the mask of such a sample is all ones (DESIGN §4).

Conventions
-----------
* Images are float32 torch tensors ``[3, H, W]`` in sRGB, 0..1.
* Displacements are ``(dx, dy)`` in pixels, x to the right, y down. A motion ``T_t`` maps
  the mid-exposure position ``p`` of a scene point to its position at time ``t``:
  ``T_t(p) = c + d(t) + s(t) R(theta(t)) (p - c)``; ``T_0`` is the identity. Rotation angles
  are in degrees, positive = clockwise on screen (because y points down).
* ``trajectory`` is ``[2, 2, H, W]``: ``trajectory[0] = o_s = T_{-1}(p) - p`` (start of the
  exposure minus mid-exposure position), ``trajectory[1] = o_e = T_{+1}(p) - p``; channel 0
  is dx, channel 1 is dy. For a local sample it is the motion of the object that dominates
  the pixel at mid-exposure (visible coverage >= 0.5), zero elsewhere (background, and the
  parts of a motion trail not covered at mid-exposure). For a global sample it is the
  camera motion at every pixel.

Mask rule (local samples)
-------------------------
Objects are composited in list order (the first is the back-most). With ``alpha_k^n(y)``
the warped alpha of object ``k`` in sub-frame ``n`` at pixel ``y``, its *visible coverage*
is ``w_k^n(y) = alpha_k^n(y) * prod_{j > k} (1 - alpha_j^n(y))``. With
``m_k(y) = max_n |T_{k,t_n}(y) - y|`` (the largest displacement from its mid-exposure
position, over the rendered instants, of the object point that sits at ``y`` at
mid-exposure; Euclidean, in pixels)::

    mask(y) = OR_k [ max_n w_k^n(y) > COVERAGE_EPS  and
                     ( max_n w_k^n(y) - min_n w_k^n(y) > COVERAGE_EPS   # coverage changes
                       or m_k(y) >= MOTION_EPS_PX ) ]                  # covered and moving

with ``COVERAGE_EPS = 1e-3`` (absorbs float rounding of bilinear warps of a constant alpha)
and ``MOTION_EPS_PX = 0.5``. Consequences, checked by the tests: a pixel outside the mask
and not covered by an object that moves less than 0.5 px there changes by at most
``2 * K * COVERAGE_EPS`` (linear light) between any sub-frame and the mid frame; an object
hidden behind another for the whole exposure does not mark pixels. Global samples: all ones.
"""
from __future__ import annotations

import dataclasses
import functools
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from ..errors import ConfigError

COVERAGE_EPS = 1e-3
MOTION_EPS_PX = 0.5
# A pixel takes an object's trajectory when that object's visible coverage at mid-exposure
# is at least this.
DOMINANT_COVERAGE = 0.5
GENERATOR_VERSION = "m2ae-synth-1"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")


# --------------------------------------------------------------------------------------
# colour
# --------------------------------------------------------------------------------------
def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    """Exact sRGB decoding (IEC 61966-2-1) of values clamped to [0, 1]."""
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    """Exact sRGB encoding of linear values clamped to [0, 1]."""
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.0031308, x * 12.92, 1.055 * x ** (1.0 / 2.4) - 0.055)


# --------------------------------------------------------------------------------------
# parameters and results
# --------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------
# image helpers
# --------------------------------------------------------------------------------------
def as_chw(image) -> torch.Tensor:
    """A ``[3,H,W]`` tensor view of an image (numpy/torch, HWC or CHW, grey/RGB/RGBA,
    uint8/uint16/float). Integer images keep their dtype (crop first, convert later)."""
    t = torch.from_numpy(np.ascontiguousarray(image)) if isinstance(image, np.ndarray) \
        else torch.as_tensor(image)
    if t.dtype == torch.uint16:
        t = t.to(torch.int32)
    if t.ndim == 2:
        t = t[None]
    elif t.ndim == 3 and t.shape[-1] in (1, 3, 4) and t.shape[0] not in (1, 3, 4):
        t = t.permute(2, 0, 1)
    elif t.ndim != 3:
        raise ValueError(f"expected an image of shape HxW, HxWxC or CxHxW, got {tuple(t.shape)}")
    if t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    elif t.shape[0] == 4:
        t = t[:3]
    elif t.shape[0] != 3:
        raise ValueError(f"expected 1, 3 or 4 channels, got shape {tuple(t.shape)}")
    return t


def _to_float(t: torch.Tensor) -> torch.Tensor:
    if t.dtype == torch.uint8:
        return t.float() / 255.0
    if t.dtype in (torch.int16, torch.int32, torch.int64):
        return t.float() / 65535.0
    return t.float().clamp(0.0, 1.0)


def _resize(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(img.shape[-2:]) == tuple(size):
        return img
    out = F.interpolate(img[None], size=size, mode="bilinear", align_corners=False,
                        antialias=True)[0]
    return out.clamp(0.0, 1.0)


def random_crop(photo, size: tuple[int, int], zoom: tuple[float, float],
                rng: np.random.Generator) -> torch.Tensor:
    """A random crop of ``photo`` resampled to ``size = (h, w)``, float32 ``[3,h,w]``.

    ``zoom`` = photo pixels per output pixel (clipped so the crop fits); random
    horizontal flip. Always consumes the same random numbers."""
    img = as_chw(photo)
    ph, pw = img.shape[-2:]
    h, w = size
    z = rng.uniform(zoom[0], zoom[1])
    fx, fy, flip = rng.random(), rng.random(), rng.random() < 0.5
    z = min(z, ph / h, pw / w)
    ch, cw = max(1, min(ph, round(z * h))), max(1, min(pw, round(z * w)))
    y0, x0 = int(fy * (ph - ch + 1)), int(fx * (pw - cw + 1))
    y0, x0 = min(y0, ph - ch), min(x0, pw - cw)
    crop = _resize(_to_float(img[:, y0:y0 + ch, x0:x0 + cw]), (h, w))
    return crop.flip(-1) if flip else crop.contiguous()


def random_soft_shape(rng: np.random.Generator, diameter: float,
                      feather: float) -> torch.Tensor:
    """A random soft shape, float32 alpha ``[h, w]`` in a box fitted around it.

    Ellipse, smooth radial blob or star-shaped polygon of about ``diameter`` px; alpha is a
    smoothstep of an (approximate) signed distance over ``[-feather, feather]``, so it is
    exactly 0 outside that band and on the border of the box."""
    radius = max(2.0, diameter / 2.0)
    kind = int(rng.integers(3))
    # Draw every shape parameter whatever the kind (a stable random stream).
    aspect, orient = rng.uniform(0.45, 1.0), rng.uniform(0.0, math.pi)
    amps = rng.uniform(0.0, 1.0, 4) * np.array([0.22, 0.12, 0.08, 0.05])
    phases = rng.uniform(0.0, 2 * math.pi, 4)
    n_vert = int(rng.integers(3, 9))
    jitter = rng.uniform(-0.3, 0.3, 8)[:n_vert]
    radii = rng.uniform(0.6, 1.0, 8)[:n_vert]
    spin = rng.uniform(0.0, 2 * math.pi)

    phis = np.linspace(0.0, 2 * math.pi, 721)

    def radial(phi: np.ndarray) -> np.ndarray:
        if kind == 0:
            a, b = radius, radius * aspect
            return a * b / np.sqrt((b * np.cos(phi - orient)) ** 2 + (a * np.sin(phi - orient)) ** 2)
        r = 1.0 + sum(amp * np.cos((i + 2) * phi + ph)
                      for i, (amp, ph) in enumerate(zip(amps, phases)))
        return r

    if kind == 1:
        blob_norm = radius / radial(phis).max()
    if kind == 2:
        angles = (np.arange(n_vert) + jitter) * (2 * math.pi / n_vert) + spin
        vx, vy = radius * radii * np.cos(angles), radius * radii * np.sin(angles)
    else:
        r = radial(phis) * (blob_norm if kind == 1 else 1.0)
        vx, vy = r * np.cos(phis), r * np.sin(phis)
    margin = int(math.ceil(feather)) + 2
    x_lo, x_hi = math.floor(vx.min()), math.ceil(vx.max())
    y_lo, y_hi = math.floor(vy.min()), math.ceil(vy.max())
    w, h = x_hi - x_lo + 2 * margin + 1, y_hi - y_lo + 2 * margin + 1
    xs = np.arange(w, dtype=np.float64) + (x_lo - margin)
    ys = np.arange(h, dtype=np.float64) + (y_lo - margin)
    gx, gy = np.meshgrid(xs, ys)
    if kind == 2:
        sd = _polygon_signed_distance(gx, gy, vx, vy)
    else:
        rho, phi = np.hypot(gx, gy), np.arctan2(gy, gx)
        sd = radial(phi) * (blob_norm if kind == 1 else 1.0) - rho
    a = np.clip((sd + feather) / (2.0 * feather), 0.0, 1.0)
    a = a * a * (3.0 - 2.0 * a)
    a[0, :] = a[-1, :] = 0.0
    a[:, 0] = a[:, -1] = 0.0
    return torch.from_numpy(a.astype(np.float32))


def _polygon_signed_distance(gx, gy, vx, vy) -> np.ndarray:
    """Distance to the polygon's boundary, positive inside (even-odd rule)."""
    x1, y1 = vx, vy
    x2, y2 = np.roll(vx, -1), np.roll(vy, -1)
    dist = np.full(gx.shape, np.inf)
    inside = np.zeros(gx.shape, dtype=bool)
    for ax, ay, bx, by in zip(x1, y1, x2, y2):
        ex, ey = bx - ax, by - ay
        t = np.clip(((gx - ax) * ex + (gy - ay) * ey) / max(ex * ex + ey * ey, 1e-12), 0, 1)
        dist = np.minimum(dist, np.hypot(gx - ax - t * ex, gy - ay - t * ey))
        crosses = ((ay > gy) != (by > gy)) & (
            gx < ax + (gy - ay) * ex / np.where(by == ay, 1e-12, by - ay))
        inside ^= crosses
    return np.where(inside, dist, -dist)


def sample_motion(rng: np.random.Generator, length: tuple[float, float], curvature: float,
                  rotation_deg: float, scale_change: float) -> Motion:
    """A random quadratic path whose polyline length over ``t in [-1, 1]`` is drawn from
    ``length``, with total rotation / log-scale change drawn from ``±rotation_deg`` /
    ``±scale_change`` (linear in time)."""
    target = rng.uniform(length[0], length[1])
    phi, psi = rng.uniform(0, 2 * math.pi), rng.uniform(0, 2 * math.pi)
    kappa = rng.uniform(0.0, curvature)
    rot = rng.uniform(-rotation_deg, rotation_deg)
    dscale = rng.uniform(-scale_change, scale_change)
    b = np.array([math.cos(phi), math.sin(phi)])
    a = kappa * np.array([math.cos(psi), math.sin(psi)])
    t = np.linspace(-1.0, 1.0, 257)[:, None]
    path = a * t * t + b * t
    path_len = float(np.hypot(*np.diff(path, axis=0).T).sum())
    k = target / path_len if path_len > 0 else 0.0
    a, b = a * k, b * k
    o_s, o_e = a - b, a + b
    return Motion(start=(float(o_s[0]), float(o_s[1])), end=(float(o_e[0]), float(o_e[1])),
                  rot_start=-rot / 2, rot_end=rot / 2,
                  log_scale_start=-dscale / 2, log_scale_end=dscale / 2)


def subframe_times(n: int) -> tuple[float, ...]:
    """``t_n = 2n/(N-1) - 1``; the middle one is exactly 0."""
    return tuple((2 * i - (n - 1)) / (n - 1) for i in range(n))


# --------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------
def _normalised_grid(px: torch.Tensor, py: torch.Tensor, h: int, w: int) -> torch.Tensor:
    gx = px * (2.0 / max(w - 1, 1)) - 1.0
    gy = py * (2.0 / max(h - 1, 1)) - 1.0
    return torch.stack((gx, gy), dim=-1).float()


def _object_region(obj: SceneObject, times, height: int, width: int):
    """Bounding box (r0, r1, c0, c1) in the frame of everything the object can touch."""
    h, w = obj.alpha.shape[-2:]
    x0, y0 = obj.top_left
    cx = torch.tensor([x0 - 1.0, x0 + w, x0 - 1.0, x0 + w], dtype=torch.float64)
    cy = torch.tensor([y0 - 1.0, y0 - 1.0, y0 + h, y0 + h], dtype=torch.float64)
    centre = obj.resolved_centre()
    xs, ys = [], []
    for t in times:
        dx, dy = obj.motion.forward_displacement(t, cx, cy, centre)
        xs.append(cx + dx)
        ys.append(cy + dy)
    xs, ys = torch.cat(xs), torch.cat(ys)
    r0, r1 = max(0, math.floor(ys.min())), min(height, math.ceil(ys.max()) + 1)
    c0, c1 = max(0, math.floor(xs.min())), min(width, math.ceil(xs.max()) + 1)
    if r0 >= r1 or c0 >= c1:
        return None
    return r0, r1, c0, c1


def _linear_mean(frames: torch.Tensor) -> torch.Tensor:
    acc = frames[0].double()
    for n in range(1, frames.shape[0]):
        acc += frames[n]
    return (acc / frames.shape[0]).float()


def render_scene(background, objects: Sequence[SceneObject] = (), *,
                 size: tuple[int, int] | None = None, subframes: int = 17,
                 camera: Motion | None = None,
                 return_subframes: bool = False) -> SynthSample:
    """Render one blurred/sharp pair without augmentation.

    ``background`` (sRGB) is cropped to its central ``size`` window (default: all of it);
    the margin around that window is what a moving ``camera`` reveals. With ``camera``
    (global blur) ``objects`` must be empty. Otherwise each object moves by its own
    ``Motion`` over the static background. ``subframes`` must be odd and >= 3.
    """
    if subframes < 3 or subframes % 2 == 0:
        raise ValueError(f"subframes must be odd and >= 3, got {subframes}")
    bg = _to_float(as_chw(background))
    hb, wb = bg.shape[-2:]
    height, width = size if size is not None else (hb, wb)
    oy, ox = (hb - height) // 2, (wb - width) // 2
    if oy < 0 or ox < 0:
        raise ValueError(f"background {hb}x{wb} is smaller than the frame {height}x{width}")
    times = subframe_times(subframes)
    mid = subframes // 2
    lin_bg = srgb_to_linear(bg)
    ys_full = torch.arange(height, dtype=torch.float64)[:, None].expand(height, width)
    xs_full = torch.arange(width, dtype=torch.float64)[None, :].expand(height, width)

    if camera is not None:
        if len(objects):
            raise ValueError("a camera-shake scene takes no separate moving objects")
        frames = torch.empty(subframes, 3, height, width)
        window = lin_bg[:, oy:oy + height, ox:ox + width]
        centre = ((width - 1) / 2.0, (height - 1) / 2.0)
        moving = [n for n, t in enumerate(times) if not camera.is_identity_at(t)]
        for n in range(subframes):
            if n not in moving:
                frames[n] = window
        if moving:
            grids = []
            for n in moving:
                px, py = camera.inverse_map(times[n], xs_full, ys_full, centre)
                grids.append(_normalised_grid(px + ox, py + oy, hb, wb))
            frames[moving] = F.grid_sample(
                lin_bg[None].expand(len(moving), -1, -1, -1), torch.stack(grids),
                mode="bilinear", padding_mode="border", align_corners=True)
        traj = torch.stack([torch.stack(camera.forward_displacement(t, xs_full, ys_full, centre))
                            for t in (-1.0, 1.0)]).float()
        mask = torch.ones(height, width, dtype=torch.bool)
        alphas = torch.zeros(0, subframes, height, width)
        motion_px = torch.zeros(0, height, width)
    else:
        frames = lin_bg[:, oy:oy + height, ox:ox + width].expand(subframes, -1, -1, -1).clone()
        k_count = len(objects)
        alphas = torch.zeros(k_count, subframes, height, width)
        motion_px = torch.zeros(k_count, height, width)
        obj_traj = torch.zeros(k_count, 2, 2, height, width)
        for k, obj in enumerate(objects):
            region = _object_region(obj, times, height, width)
            if region is None:
                continue
            _composite_object(obj, k, region, times, frames, alphas, motion_px, obj_traj)
        # visible coverage, front to back
        vis = alphas.clone()
        clear = torch.ones(subframes, height, width)
        for k in reversed(range(k_count)):
            vis[k] = alphas[k] * clear
            clear = clear * (1.0 - alphas[k])
        if k_count:
            w_max, w_min = vis.amax(dim=1), vis.amin(dim=1)
            covered = w_max > COVERAGE_EPS
            changes = (w_max - w_min) > COVERAGE_EPS
            mask = (covered & (changes | (motion_px >= MOTION_EPS_PX))).any(dim=0)
            w_mid = vis[:, mid]
            best_w, best_k = w_mid.max(dim=0)
            chosen = torch.gather(obj_traj, 0, best_k[None, None, None].expand(1, 2, 2, -1, -1))[0]
            traj = torch.where(best_w >= DOMINANT_COVERAGE, chosen, torch.zeros(()))
        else:
            mask = torch.zeros(height, width, dtype=torch.bool)
            traj = torch.zeros(2, 2, height, width)

    lin_blur = _linear_mean(frames)
    lin_sharp = frames[mid]
    sharp = linear_to_srgb(lin_sharp)
    blur = torch.where(lin_blur == lin_sharp, sharp, linear_to_srgb(lin_blur))
    debug = None
    if return_subframes:
        debug = RenderDebug(subframes=linear_to_srgb(frames), alphas=alphas,
                            motion_px=motion_px, times=times, mid=mid)
    return SynthSample(blur=blur.contiguous(), sharp=sharp.contiguous(), mask=mask,
                       trajectory=traj.contiguous(), is_global=camera is not None,
                       debug=debug)


def _composite_object(obj, k, region, times, frames, alphas, motion_px, obj_traj) -> None:
    r0, r1, c0, c1 = region
    rh, rw = r1 - r0, c1 - c0
    alpha = obj.alpha.float()
    h, w = alpha.shape
    x0, y0 = obj.top_left
    layer = torch.cat([srgb_to_linear(_to_float(as_chw(obj.texture))) * alpha, alpha[None]])
    if tuple(layer.shape[-2:]) != (h, w):
        raise ValueError("object texture and alpha must have the same size")
    centre = obj.resolved_centre()
    ys = torch.arange(r0, r1, dtype=torch.float64)[:, None].expand(rh, rw)
    xs = torch.arange(c0, c1, dtype=torch.float64)[None, :].expand(rh, rw)

    warped = torch.zeros(len(times), 4, rh, rw)
    moving = [n for n, t in enumerate(times) if not obj.motion.is_identity_at(t)]
    # identity frames: paste the box (integer position)
    fy0, fy1 = max(r0, y0), min(r1, y0 + h)
    fx0, fx1 = max(c0, x0), min(c1, x0 + w)
    for n in range(len(times)):
        if n not in moving and fy0 < fy1 and fx0 < fx1:
            warped[n, :, fy0 - r0:fy1 - r0, fx0 - c0:fx1 - c0] = \
                layer[:, fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0]
    if moving:
        grids = []
        for n in moving:
            px, py = obj.motion.inverse_map(times[n], xs, ys, centre)
            grids.append(_normalised_grid(px - x0, py - y0, h, w))
        warped[moving] = F.grid_sample(layer[None].expand(len(moving), -1, -1, -1),
                                       torch.stack(grids), mode="bilinear",
                                       padding_mode="zeros", align_corners=True)
    a = warped[:, 3:4]
    view = frames[:, :, r0:r1, c0:c1]
    view.mul_(1.0 - a).add_(warped[:, :3])
    alphas[k, :, r0:r1, c0:c1] = a[:, 0]
    m = torch.zeros(rh, rw, dtype=torch.float64)
    for t in times:
        dx, dy = obj.motion.forward_displacement(t, xs, ys, centre)
        m = torch.maximum(m, torch.hypot(dx, dy))
    motion_px[k, r0:r1, c0:c1] = m.float()
    for i, t in enumerate((-1.0, 1.0)):
        dx, dy = obj.motion.forward_displacement(t, xs, ys, centre)
        obj_traj[k, i, 0, r0:r1, c0:c1] = dx.float()
        obj_traj[k, i, 1, r0:r1, c0:c1] = dy.float()


# --------------------------------------------------------------------------------------
# random scenes
# --------------------------------------------------------------------------------------
def disc_kernel(radius: float) -> torch.Tensor:
    """A normalised disc of ``radius`` px (a lens's defocus spread), edge anti-aliased."""
    half = max(1, math.ceil(radius))
    r = torch.arange(-half, half + 1, dtype=torch.float32)
    distance = torch.sqrt(r[:, None] ** 2 + r[None, :] ** 2)
    kernel = (radius + 0.5 - distance).clamp(0.0, 1.0)
    return kernel / kernel.sum()


def defocus(image: torch.Tensor, radius: float) -> torch.Tensor:
    """Lens defocus of an sRGB ``[3,H,W]`` image: a disc blur in linear light."""
    kernel = disc_kernel(radius)
    pad = kernel.shape[-1] // 2
    linear = F.pad(srgb_to_linear(image)[:, None], (pad,) * 4, mode="replicate")
    return linear_to_srgb(F.conv2d(linear, kernel[None, None])[:, 0]).clamp(0.0, 1.0)


def random_focus_falloff(rng: np.random.Generator, height: int, width: int,
                         whole_prob: float = 0.5) -> tuple[torch.Tensor, dict]:
    """How far out of focus each pixel is, 0..1 ``[1,H,W]``: the whole frame (with
    probability ``whole_prob``), or a soft ramp across a random direction (a focal plane
    crossing the scene)."""
    whole = rng.random() < whole_prob
    # the ramp is drawn even for a whole frame: a sample uses the same random numbers either way
    angle, centre, softness = rng.uniform(0, 2 * math.pi), rng.uniform(0.25, 0.75), \
        rng.uniform(0.05, 0.4)
    info = {"whole": bool(whole)}
    if whole:
        return torch.ones(1, height, width), info
    cos, sin = math.cos(angle), math.sin(angle)
    ys = torch.linspace(-0.5, 0.5, height)[:, None]
    xs = torch.linspace(-0.5, 0.5, width)[None, :]
    along = (xs * cos + ys * sin) / (abs(cos) + abs(sin)) + 0.5  # 0..1 across the frame
    info.update(angle_deg=round(math.degrees(angle), 2), centre=round(float(centre), 4),
                softness=round(float(softness), 4))
    return ((along - centre) / softness + 0.5).clamp(0.0, 1.0)[None], info


def defocus_background(background: torch.Tensor, params: SynthParams,
                       rng: np.random.Generator) -> tuple[torch.Tensor, dict]:
    """Put part or all of a static background out of focus.

    Why: real photos have soft, sharp-but-defocused backgrounds that a mask predictor
    trained on crisp backgrounds takes for motion blur. Defocus is static, so the mask rule
    is untouched: these pixels stay unmasked and equal in the blurred and sharp images."""
    radius = rng.uniform(*params.defocus_radius)
    falloff, info = random_focus_falloff(rng, *background.shape[-2:],
                                         whole_prob=params.defocus_whole_prob)
    soft = defocus(background, radius)
    info["radius"] = round(float(radius), 4)
    return (background + falloff * (soft - background)).contiguous(), info


def augment_blur(blur: torch.Tensor, params: SynthParams,
                 rng: np.random.Generator) -> tuple[torch.Tensor, dict]:
    """Mild Gaussian noise, then a JPEG round trip, on the blurred image only."""
    use_noise = rng.random() < params.noise_prob
    sigma = rng.uniform(*params.noise_sigma)
    use_jpeg = rng.random() < params.jpeg_prob
    quality = int(rng.integers(params.jpeg_quality[0], params.jpeg_quality[1] + 1))
    info = {"noise_sigma": float(sigma) if use_noise else 0.0,
            "jpeg_quality": quality if use_jpeg else None}
    if use_noise and sigma > 0:
        noise = rng.standard_normal(tuple(blur.shape), dtype=np.float32)
        blur = (blur + float(sigma) * torch.from_numpy(noise)).clamp(0.0, 1.0)
    if use_jpeg:
        u8 = to_uint8(blur)
        buf = io.BytesIO()
        Image.fromarray(u8).save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        with Image.open(buf) as im:
            dec = np.asarray(im.convert("RGB"))
        blur = torch.from_numpy(dec.copy()).permute(2, 0, 1).float() / 255.0
    return blur.contiguous(), info


def render_sample(background, foregrounds: Sequence, params: SynthParams,
                  rng: np.random.Generator, *, is_global: bool | None = None,
                  return_subframes: bool = False) -> SynthSample:
    """Draw and render one random sample.

    ``background``: the photo the background is cropped from; ``foregrounds``: photos the
    objects are cut from (pass the *other* photos; any indexable sequence, accessed lazily).
    Images are numpy/torch arrays (HWC or CHW, uint8 or float 0..1). ``is_global=None``
    draws local vs global with ``params.global_prob``. ``meta['objects'][i]['photo']`` is
    an index into ``foregrounds``.
    """
    height, width = params.size
    if is_global is None:
        is_global = bool(rng.random() < params.global_prob)
    meta: dict = {}
    if is_global:
        camera = sample_motion(rng, params.global_motion_length, params.curvature,
                               params.global_rotation_deg, 0.0)
        margin = _camera_margin(camera, height, width, subframe_times(params.subframes))
        bg = random_crop(background, (height + 2 * margin, width + 2 * margin),
                         params.crop_zoom, rng)
        sample = render_scene(bg, size=(height, width), subframes=params.subframes,
                              camera=camera, return_subframes=return_subframes)
        meta["camera"] = camera.to_dict()
    else:
        if len(foregrounds) == 0:
            raise ValueError("local blur needs at least one foreground photo")
        bg = random_crop(background, (height, width), params.crop_zoom, rng)
        count = int(rng.integers(params.objects[0], params.objects[1] + 1))
        objects, obj_meta = [], []
        for _ in range(count):
            photo_index = int(rng.integers(len(foregrounds)))
            diameter = rng.uniform(*params.object_size) * min(height, width)
            feather = rng.uniform(*params.feather)
            alpha = random_soft_shape(rng, diameter, feather)
            h, w = alpha.shape
            texture = random_crop(foregrounds[photo_index], (h, w), params.crop_zoom, rng)
            cx, cy = rng.uniform(0.1, 0.9) * (width - 1), rng.uniform(0.1, 0.9) * (height - 1)
            top_left = (int(round(cx - (w - 1) / 2)), int(round(cy - (h - 1) / 2)))
            motion = sample_motion(rng, params.motion_length, params.curvature,
                                   params.rotation_deg, params.scale_change)
            objects.append(SceneObject(texture, alpha, top_left, motion))
            obj_meta.append({"photo": photo_index, "top_left": list(top_left),
                             "box": [h, w], "feather": round(float(feather), 4),
                             "motion": motion.to_dict()})
        # Drawn after the objects, and not at all at probability 0, so the objects (and the
        # benchmark) do not depend on it.
        if params.defocus_prob > 0 and rng.random() < params.defocus_prob:
            bg, meta["defocus"] = defocus_background(bg, params, rng)
        sample = render_scene(bg, objects, subframes=params.subframes,
                              return_subframes=return_subframes)
        meta["objects"] = obj_meta
    clean = sample.blur
    sample.blur, aug = augment_blur(clean, params, rng)
    sample.degradation = sample.blur - clean
    meta.update(aug)
    sample.meta = meta
    return sample


def _camera_margin(camera: Motion, height: int, width: int, times) -> int:
    centre = ((width - 1) / 2.0, (height - 1) / 2.0)
    xs = torch.tensor([0.0, width - 1.0, 0.0, width - 1.0], dtype=torch.float64)
    ys = torch.tensor([0.0, 0.0, height - 1.0, height - 1.0], dtype=torch.float64)
    worst = 0.0
    for t in times:
        px, py = camera.inverse_map(t, xs, ys, centre)
        worst = max(worst, float((px - xs).abs().max()), float((py - ys).abs().max()))
    return int(math.ceil(worst)) + 2


# --------------------------------------------------------------------------------------
# photo folders, datasets, writing
# --------------------------------------------------------------------------------------
def load_photo(path, max_side: int = 1024) -> np.ndarray:
    """Decode an image as uint8 RGB ``[H,W,3]``, EXIF-rotated, long side <= ``max_side``.

    JPEGs are decoded at a reduced DCT scale (``draft``) first, so 6k-pixel photos load
    fast and small."""
    path = Path(path)
    with Image.open(path) as im:
        if im.format == "JPEG" and max(im.size) > max_side:
            s = max_side / max(im.size)
            im.draft("RGB", (math.ceil(im.width * s), math.ceil(im.height * s)))
        im = ImageOps.exif_transpose(im)
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(im, dtype=np.float64)
            im = Image.fromarray(np.clip(arr / 257.0 + 0.5, 0, 255).astype(np.uint8))
        im = im.convert("RGB")
        if max(im.size) > max_side:
            s = max_side / max(im.size)
            new = (max(1, round(im.width * s)), max(1, round(im.height * s)))
            im = im.resize(new, Image.Resampling.LANCZOS, reducing_gap=3.0)
        return np.asarray(im).copy()


@functools.lru_cache(maxsize=32)
def _load_photo_cached(path: str, mtime_ns: int, size: int, max_side: int) -> np.ndarray:
    return load_photo(path, max_side)


def cached_photo(path, max_side: int = 1024) -> np.ndarray:
    """``load_photo`` through a per-process cache (keyed on path, mtime, size, max_side),
    shared by every source of the process. Do not modify the returned array."""
    path = Path(path).resolve()
    st = path.stat()
    return _load_photo_cached(str(path), st.st_mtime_ns, st.st_size, int(max_side))


def list_photos(folder) -> list[Path]:
    folder = Path(folder)
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


class _LazyPhotos(Sequence):
    def __init__(self, source: "SyntheticBlurSource", indices: list[int]):
        self._source, self._indices = source, indices

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, i):
        return self._source.photo(self._indices[i])


class SyntheticBlurSource:
    """Samples from a fixed list of photos; ``sample(index)`` depends only on
    ``(seed, index)`` (``numpy.random.default_rng([seed, index])``), not on call order.

    Photos are decoded on first use (long side <= ``max_side``) and cached as uint8
    (per process, see ``cached_photo``).
    The background photo of a sample is drawn uniformly; its objects come from the other
    photos (from the same photo only when there is a single one).
    """

    def __init__(self, photo_paths: Sequence, params: SynthParams | None = None,
                 seed: int = 0, *, max_side: int = 1024):
        self.paths = [Path(p) for p in photo_paths]
        if not self.paths:
            raise ValueError("SyntheticBlurSource needs at least one photo")
        self.params = params if params is not None else SynthParams()
        self.seed = int(seed)
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.max_side = int(max_side)
        self._cache: dict[int, np.ndarray] = {}

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.paths]

    def photo(self, i: int) -> np.ndarray:
        if i not in self._cache:
            self._cache[i] = cached_photo(self.paths[i], self.max_side)
        return self._cache[i]

    def preload(self) -> "SyntheticBlurSource":
        for i in range(len(self.paths)):
            self.photo(i)
        return self

    def is_global(self, index: int, rng: np.random.Generator) -> bool:
        every = self.params.global_every
        if every > 0:
            return index % every == every - 1
        return bool(rng.random() < self.params.global_prob)

    def sample(self, index: int, *, return_subframes: bool = False) -> SynthSample:
        index = int(index)
        if index < 0:
            raise ValueError(f"sample index must be >= 0, got {index}")
        rng = np.random.default_rng([self.seed, index])
        is_global = self.is_global(index, rng)
        n = len(self.paths)
        bg_index = int(rng.integers(n))
        others = [j for j in range(n) if j != bg_index] or [bg_index]
        sample = render_sample(self.photo(bg_index), _LazyPhotos(self, others), self.params,
                               rng, is_global=is_global, return_subframes=return_subframes)
        sample.meta["background"] = self.paths[bg_index].name
        for obj in sample.meta.get("objects", []):
            obj["photo"] = self.paths[others[obj["photo"]]].name
        sample.meta["index"] = index
        return sample


class SyntheticBlurDataset(torch.utils.data.Dataset):
    """Map-style dataset of ``length`` on-the-fly samples (dicts of tensors, see
    ``SynthSample.to_tensors``). Item ``i`` is source sample
    ``offset + epoch * length + i``; call ``set_epoch`` for fresh samples every epoch."""

    def __init__(self, source: SyntheticBlurSource, length: int, offset: int = 0):
        if length <= 0:
            raise ValueError(f"length must be positive, got {length}")
        self.source, self.length, self.offset, self.epoch = source, int(length), int(offset), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.length:
            raise IndexError(i)
        index = self.offset + self.epoch * self.length + int(i)
        item = self.source.sample(index).to_tensors()
        item["index"] = torch.tensor(index)
        return item


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """``[3,H,W]`` float 0..1 → ``[H,W,3]`` uint8 (round half up after clamping)."""
    arr = (image.clamp(0.0, 1.0) * 255.0 + 0.5).floor().to(torch.uint8)
    return arr.permute(1, 2, 0).contiguous().numpy()


def _name(i: int, digits: int) -> str:
    return f"{i:0{digits}d}"


def write_dataset(source: SyntheticBlurSource, count: int, out_dir, *, start: int = 0,
                  extra: dict | None = None, progress=None) -> dict:
    """Write samples ``start .. start+count-1`` of ``source`` to ``out_dir``.

    Layout: ``blur/NNNN.png``, ``sharp/NNNN.png`` (8-bit RGB, the quantised values),
    ``mask/NNNN.png`` (8-bit grey, 0 or 255), ``trajectory/NNNN.npy`` (float32
    ``[2,2,H,W]``) and ``manifest.json``. Everything is a function of (photos, params,
    seed, indices), so a rewrite is byte-identical. Returns the manifest.
    """
    count = int(count)
    if count <= 0:
        raise ValueError(f"count must be positive, got {count}")
    out = Path(out_dir)
    for sub in ("blur", "sharp", "mask", "trajectory"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    digits = max(4, len(str(start + count - 1)))
    records = []
    for i in range(start, start + count):
        s = source.sample(i)
        name = _name(i, digits)
        Image.fromarray(to_uint8(s.blur)).save(out / "blur" / f"{name}.png")
        Image.fromarray(to_uint8(s.sharp)).save(out / "sharp" / f"{name}.png")
        Image.fromarray(s.mask.numpy().astype(np.uint8) * 255).save(out / "mask" / f"{name}.png")
        np.save(out / "trajectory" / f"{name}.npy", s.trajectory.numpy().astype(np.float32))
        rec = {"name": name, "index": i, "is_global": bool(s.is_global),
               "mask_fraction": round(s.mask_fraction, 6), "background": s.meta["background"],
               "objects": [o["photo"] for o in s.meta.get("objects", [])],
               "noise_sigma": round(s.meta["noise_sigma"], 6),
               "jpeg_quality": s.meta["jpeg_quality"]}
        records.append(rec)
        if progress is not None:
            progress(i - start + 1, count)
    manifest = {"generator": GENERATOR_VERSION, "seed": source.seed, "start": start,
                "count": count, "digits": digits, "size": list(source.params.size),
                "max_side": source.max_side, "params": source.params.to_dict(),
                "photos": source.names, "samples": records}
    if extra:
        manifest.update(extra)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def read_sample(folder, name: str | int) -> SynthSample:
    """Read one written sample back (blur/sharp as their quantised values)."""
    folder = Path(folder)
    if not isinstance(name, str):
        manifest = json.loads((folder / "manifest.json").read_text())
        rec = next((r for r in manifest["samples"] if r["index"] == int(name)), None)
        if rec is None:
            raise KeyError(f"no sample with index {name} in {folder}")
        name, is_global = rec["name"], rec["is_global"]
    else:
        is_global = None

    def rgb(sub):
        with Image.open(folder / sub / f"{name}.png") as im:
            return torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1).float() / 255.0

    with Image.open(folder / "mask" / f"{name}.png") as im:
        mask = torch.from_numpy(np.asarray(im.convert("L")) > 127)
    traj = torch.from_numpy(np.load(folder / "trajectory" / f"{name}.npy"))
    if is_global is None:
        is_global = bool(mask.all())
    return SynthSample(blur=rgb("blur"), sharp=rgb("sharp"), mask=mask, trajectory=traj,
                       is_global=bool(is_global), meta={"name": name})
