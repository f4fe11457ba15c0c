"""Image, mask and trajectory metrics for evaluating local motion deblurring (DESIGN §6).

Protocol (as in LBAG / LMD-ViT)
-------------------------------
Every image is first brought to 8 bit: float data (assumed 0..1) is clamped to [0, 1] and
quantised with ``floor(x * 255 + 0.5)`` (round half up, the rule the synthetic dataset
writer uses, so a float image and its PNG compare identically); uint8 data is used as is;
uint16 data is divided by 65535 and quantised the same way. All metrics are then computed
in float64 on the 0..255 values. A difference below half a grey level therefore vanishes.

Accepted images: numpy arrays ``HxW``, ``HxWxC`` or ``CxHxW``; torch tensors ``CxHxW`` or
``1xCxHxW`` (``HxWxC`` too); PIL images. C is 1, 3 or 4 (a 4th, alpha, channel is dropped;
PIL images are converted to RGB). A 3-D numpy array whose last dimension is 1, 3 or 4 is read
as HWC, else as CHW; a 3-D torch tensor whose first dimension is 1, 3 or 4 is read as CHW,
else as HWC.
Both images of a comparison must have the same size and channel count.

Masks: bool arrays ``HxW`` (True = blurred); numpy/torch/PIL accepted, uint8 masks are
``> 127``, other numeric masks ``>= 0.5``; a leading singleton dimension is squeezed.

Definitions
-----------
``psnr``            ``10 log10(255^2 / MSE)``, MSE over all pixels and channels; ``inf`` for
                    identical images.
``ssim``            Wang et al. (2004): 11x11 Gaussian window, sigma 1.5 (normalised to sum 1),
                    ``C1 = (0.01*255)^2``, ``C2 = (0.03*255)^2``, local statistics by 'valid'
                    filtering (no padding: the map is ``(H-10) x (W-10)``), variances as
                    ``E[x^2] - E[x]^2``; the SSIM map of each channel is averaged, then the
                    channel means are averaged (RGB is not converted to grey).
``weighted_psnr``   PSNR with the MSE over the blurred pixels only:
                    ``sum_{mask, channels} (out-gt)^2 / (C * mask.sum())``; ``nan`` when the
                    mask is empty (no blurred pixel: the metric is undefined).
``weighted_ssim``   mean of the SSIM map over the mask cropped to the valid SSIM area
                    (``mask[5:-5, 5:-5]``), averaged over channels; ``nan`` when that crop is
                    empty.
``sharp_psnr``      ``weighted_psnr`` over the pixels *outside* the (ground-truth) mask: how
                    untouched the sharp background stays; ``nan`` for an all-blurred mask.
``mask_iou``        ``|P and G| / |P or G|``; 1.0 when both masks are empty.
``mask_f1``         ``2 |P and G| / (|P| + |G|)`` (Dice); 1.0 when both masks are empty.
``endpoint_error``  trajectories ``[2,2,H,W]`` = (start, end) x (dx, dy) (or ``[4,H,W]``):
                    per pixel ``(|o_s - o_s*| + |o_e - o_e*|) / 2`` (Euclidean norms),
                    averaged over the mask (all pixels when no mask); ``nan`` for an empty
                    mask. ``symmetric=True`` takes, per pixel, the smaller of that and the
                    error with predicted start and end swapped (a blurred image alone does
                    not tell the direction of time).
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["SSIM_WINDOW", "SSIM_SIGMA", "SSIM_C1", "SSIM_C2", "SSIM_MARGIN",
           "quantize", "as_mask", "mse", "psnr", "ssim_map", "ssim", "weighted_psnr",
           "weighted_ssim", "ssim_and_weighted", "sharp_psnr", "mask_iou", "mask_f1",
           "endpoint_error"]

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_C1 = (0.01 * 255.0) ** 2
SSIM_C2 = (0.03 * 255.0) ** 2
SSIM_MARGIN = SSIM_WINDOW // 2  # pixels lost on each side by 'valid' filtering
_PEAK = 255.0


# --------------------------------------------------------------------------- conversion

def _is_tensor(x) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency of the package
        return False
    return isinstance(x, torch.Tensor)


def _to_numpy(x) -> np.ndarray:
    """numpy view of a numpy array, torch tensor or PIL image (no value change)."""
    if isinstance(x, np.ndarray):
        return x
    try:
        import torch
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu()
            if x.dtype in (torch.bfloat16, torch.float16):
                x = x.float()
            return x.numpy()
    except ImportError:  # pragma: no cover - torch is a dependency of the package
        pass
    try:
        from PIL import Image
        if isinstance(x, Image.Image):
            if x.mode not in ("RGB", "L"):
                x = x.convert("RGB")
            return np.asarray(x)
    except ImportError:  # pragma: no cover
        pass
    return np.asarray(x)


def quantize(image) -> np.ndarray:
    """The 8-bit ``H x W x C`` (float64, values 0..255 integers) version of ``image``.

    Floats are clamped to [0, 1] and rounded half up to 1/255 steps; uint8 is kept;
    uint16 is rescaled to 0..1 first. See the module docstring for the accepted layouts.
    """
    channels_first = _is_tensor(image)
    arr = _to_numpy(image)
    if arr.ndim == 4:
        if arr.shape[0] != 1:
            raise ValueError(f"metrics take one image, got a batch of shape {arr.shape}")
        arr = arr[0]
    if arr.ndim == 2:
        arr = arr[:, :, None]
    elif arr.ndim == 3:
        if channels_first:
            chw = arr.shape[0] in (1, 3, 4)
        else:
            chw = arr.shape[-1] not in (1, 3, 4) and arr.shape[0] in (1, 3, 4)
        if chw:
            arr = np.moveaxis(arr, 0, -1)
    else:
        raise ValueError(f"expected an image HxW, HxWxC or CxHxW, got shape {arr.shape}")
    if arr.shape[-1] == 4:
        arr = arr[..., :3]
    if arr.shape[-1] not in (1, 3):
        raise ValueError(f"expected 1, 3 or 4 channels, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float64)
    if arr.dtype == np.bool_:
        return arr.astype(np.float64) * _PEAK
    if arr.dtype == np.uint16:
        values = arr.astype(np.float64) / 65535.0
    elif np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"unsupported integer image dtype {arr.dtype} (use uint8, uint16 or "
                         "float 0..1)")
    else:
        values = arr.astype(np.float64)
        if not np.isfinite(values).all():
            raise ValueError("image contains NaN or Inf values")
    return np.floor(np.clip(values, 0.0, 1.0) * _PEAK + 0.5)


def as_mask(mask, shape: tuple[int, int] | None = None) -> np.ndarray:
    """A bool ``H x W`` mask (True = blurred); checks the size against ``shape`` if given."""
    arr = _to_numpy(mask)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise ValueError(f"expected a mask HxW, got shape {arr.shape}")
    if arr.dtype == np.bool_:
        out = arr
    elif arr.dtype == np.uint8:
        out = arr > 127
    else:
        out = arr.astype(np.float64) >= 0.5
    if shape is not None and tuple(out.shape) != tuple(shape):
        raise ValueError(f"mask is {out.shape[0]}x{out.shape[1]} but the image is "
                         f"{shape[0]}x{shape[1]}")
    return out


def _pair(out, gt) -> tuple[np.ndarray, np.ndarray]:
    a, b = quantize(out), quantize(gt)
    if a.shape != b.shape:
        raise ValueError(f"images differ in size: {a.shape[0]}x{a.shape[1]}x{a.shape[2]} vs "
                         f"{b.shape[0]}x{b.shape[1]}x{b.shape[2]}")
    return a, b


def _psnr_from_mse(value: float) -> float:
    if math.isnan(value):
        return float("nan")
    if value == 0.0:
        return float("inf")
    return 10.0 * math.log10(_PEAK * _PEAK / value)


# --------------------------------------------------------------------------- PSNR

def mse(out, gt, mask=None) -> float:
    """Mean squared error on 0..255 values, over the mask (all pixels when None).

    With a mask: ``sum over mask pixels and channels / (channels * mask.sum())``;
    ``nan`` for an empty mask.
    """
    a, b = _pair(out, gt)
    sq = (a - b) ** 2
    if mask is None:
        return float(sq.mean())
    m = as_mask(mask, a.shape[:2])
    count = int(m.sum())
    if count == 0:
        return float("nan")
    return float(sq[m].sum() / (a.shape[2] * count))


def psnr(out, gt) -> float:
    """PSNR in dB of ``out`` against ``gt`` after 8-bit quantisation; inf when identical."""
    return _psnr_from_mse(mse(out, gt))


def weighted_psnr(out, gt, mask) -> float:
    """PSNR over the blurred (mask) pixels only; ``nan`` when the mask is empty."""
    return _psnr_from_mse(mse(out, gt, mask))


def sharp_psnr(out, gt, mask) -> float:
    """PSNR over the pixels outside ``mask`` (the ground-truth blur mask) only.

    Compares the restored output to the ground truth where nothing was blurred: how
    untouched the background stays. ``nan`` when the mask covers every pixel.
    """
    m = as_mask(mask)
    return _psnr_from_mse(mse(out, gt, ~m))


# --------------------------------------------------------------------------- SSIM

def _gaussian_taps(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    taps = np.exp(-(offsets ** 2) / (2.0 * sigma * sigma))
    return taps / taps.sum()


def _filter_valid(x: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of ``x`` [H,W,C] with ``taps`` along H then W."""
    k = len(taps)
    h, w = x.shape[:2]
    rows = np.zeros((h - k + 1,) + x.shape[1:])
    for i, t in enumerate(taps):
        rows += t * x[i:i + h - k + 1]
    out = np.zeros((rows.shape[0], w - k + 1) + x.shape[2:])
    for i, t in enumerate(taps):
        out += t * rows[:, i:i + w - k + 1]
    return out


def ssim_map(out, gt) -> np.ndarray:
    """The SSIM map ``[(H-10), (W-10), C]`` (Wang et al.; see the module docstring)."""
    a, b = _pair(out, gt)
    h, w = a.shape[:2]
    if h < SSIM_WINDOW or w < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, "
                         f"got {h}x{w}")
    taps = _gaussian_taps()
    mu_a, mu_b = _filter_valid(a, taps), _filter_valid(b, taps)
    var_a = _filter_valid(a * a, taps) - mu_a * mu_a
    var_b = _filter_valid(b * b, taps) - mu_b * mu_b
    cov = _filter_valid(a * b, taps) - mu_a * mu_b
    numerator = (2.0 * mu_a * mu_b + SSIM_C1) * (2.0 * cov + SSIM_C2)
    denominator = (mu_a * mu_a + mu_b * mu_b + SSIM_C1) * (var_a + var_b + SSIM_C2)
    return numerator / denominator


def ssim(out, gt) -> float:
    """Mean SSIM (per channel, then averaged over channels)."""
    return float(ssim_map(out, gt).mean(axis=(0, 1)).mean())


def _masked_map_mean(smap: np.ndarray, mask) -> float:
    h, w = smap.shape[0] + 2 * SSIM_MARGIN, smap.shape[1] + 2 * SSIM_MARGIN
    m = as_mask(mask, (h, w))[SSIM_MARGIN:h - SSIM_MARGIN, SSIM_MARGIN:w - SSIM_MARGIN]
    if not m.any():
        return float("nan")
    return float(smap[m].mean(axis=0).mean())


def weighted_ssim(out, gt, mask) -> float:
    """Mean of the SSIM map over ``mask`` cropped to the valid area (``mask[5:-5, 5:-5]``).

    Averaged over channels; ``nan`` when no mask pixel lies in the valid area.
    """
    return _masked_map_mean(ssim_map(out, gt), mask)


def ssim_and_weighted(out, gt, mask=None) -> tuple[float, float]:
    """``(ssim(out, gt), weighted_ssim(out, gt, mask))`` from one SSIM map (the second is
    ``nan`` without a mask)."""
    smap = ssim_map(out, gt)
    plain = float(smap.mean(axis=(0, 1)).mean())
    return plain, (float("nan") if mask is None else _masked_map_mean(smap, mask))


# --------------------------------------------------------------------------- masks

def _mask_pair(pred, gt) -> tuple[np.ndarray, np.ndarray]:
    g = as_mask(gt)
    return as_mask(pred, g.shape), g


def mask_iou(pred, gt) -> float:
    """Intersection over union of two bool masks; 1.0 when both are empty."""
    p, g = _mask_pair(pred, gt)
    union = int(np.logical_or(p, g).sum())
    if union == 0:
        return 1.0
    return int(np.logical_and(p, g).sum()) / union


def mask_f1(pred, gt) -> float:
    """F1 score (Dice) of ``pred`` against ``gt``; 1.0 when both are empty."""
    p, g = _mask_pair(pred, gt)
    total = int(p.sum()) + int(g.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(p, g).sum()) / total


# --------------------------------------------------------------------------- trajectories

def _trajectory(x, name: str) -> np.ndarray:
    arr = np.asarray(_to_numpy(x), dtype=np.float64)
    if arr.ndim == 3 and arr.shape[0] == 4:
        arr = arr.reshape(2, 2, *arr.shape[1:])
    if arr.ndim != 4 or arr.shape[:2] != (2, 2):
        raise ValueError(f"{name} trajectory must be [2,2,H,W] or [4,H,W], got {arr.shape}")
    return arr


def endpoint_error(pred_traj, gt_traj, mask=None, *, symmetric: bool = False) -> float:
    """Mean end-point error in pixels of the (start, end) displacement vectors.

    Per pixel ``(|o_s - o_s*|_2 + |o_e - o_e*|_2) / 2``, averaged over ``mask`` (all pixels
    when None); ``nan`` for an empty mask. ``symmetric``: per pixel, the smaller of that and
    the error with the predicted start and end swapped.
    """
    p, g = _trajectory(pred_traj, "predicted"), _trajectory(gt_traj, "ground-truth")
    if p.shape != g.shape:
        raise ValueError(f"trajectories differ in shape: {p.shape} vs {g.shape}")

    def error(a: np.ndarray) -> np.ndarray:
        return 0.5 * (np.hypot(*(a[0] - g[0])) + np.hypot(*(a[1] - g[1])))

    per_pixel = error(p)
    if symmetric:
        per_pixel = np.minimum(per_pixel, error(p[::-1]))
    if mask is None:
        return float(per_pixel.mean())
    m = as_mask(mask, p.shape[2:])
    if not m.any():
        return float("nan")
    return float(per_pixel[m].mean())
