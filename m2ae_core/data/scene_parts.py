"""Parts of a random scene: photo crops, soft object shapes, random motions and the rendered
instants (see :mod:`m2ae_core.data.synthetic`)."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .synth_types import Motion


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
