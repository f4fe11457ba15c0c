"""Images in memory <-> the model's float32 [B, 3, H, W] tensor in 0..1, and back to the
caller's own kind (PIL, numpy, torch NCHW/CHW or ComfyUI BHWC), dtype, device and alpha.
Part of :mod:`m2ae_core.imageio`'s public API."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import torch
from PIL import Image

from .errors import ImageInputError
from .image_files import file_image_size

__all__ = ["ImageLike", "ImageMeta", "to_tensor", "from_tensor", "image_size"]

ImageLike = Union[Image.Image, np.ndarray, torch.Tensor]

ACCEPTED_KINDS = (
    "a PIL image, a numpy array (HW or HWC, C in 1..4; uint8, uint16 or float 0..1) "
    "or a torch tensor (NCHW, CHW or ComfyUI BHWC)"
)
_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601
_CHANNEL_COUNTS = (1, 3, 4)


# --------------------------------------------------------------------------- #
# metadata
# --------------------------------------------------------------------------- #
@dataclass
class ImageMeta:
    """Everything :func:`from_tensor` needs to rebuild the caller's image.

    kind:     "pil", "numpy", "torch_nchw" or "torch_bhwc".
    layout:   "PIL", "HW", "HWC" (numpy), "NCHW", "CHW" (3-D tensor), "BHWC".
    dtype:    original numpy dtype (pil/numpy) or torch dtype (torch).
    mode:     original PIL mode (pil only, else None).
    out_mode: PIL mode from_tensor produces ("P" -> "RGB"/"RGBA", "CMYK" -> "RGB").
    channels: original channel count including alpha (1 for greyscale).
    grey:     the colour part is a single channel (restored via BT.601 luma).
    alpha:    the original alpha values, untouched, in the original dtype and
              layout ((H, W) for pil, (H, W, 1) for numpy, [B, 1, H, W] or
              [B, H, W, 1] for torch), or None.
    device:   the original tensor's device (torch only, else None).
    scale:    value of "full intensity" in the original data: 255, 65535 or 1.0.
    batch, height, width: size of the model tensor.
    """

    kind: str
    layout: str
    dtype: Any
    mode: str | None
    out_mode: str | None
    channels: int
    grey: bool
    alpha: Any
    device: torch.device | None
    scale: float
    batch: int
    height: int
    width: int

    @property
    def has_alpha(self) -> bool:
        return self.alpha is not None



# --------------------------------------------------------------------------- #
# image -> tensor
# --------------------------------------------------------------------------- #
def pil_pixels(im: Image.Image) -> tuple[np.ndarray, float, str, bool, bool]:
    """PIL image -> (HWC array, scale, output mode, grey, has_alpha).

    The array keeps the original sample type (uint8, uint16, int32, float32
    or bool); alpha, if any, is the last channel.
    """
    mode = im.mode
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode == "PA":
        im = im.convert("RGBA")
    elif mode in ("RGBa", "La"):
        im = im.convert(mode.upper())
    elif mode not in ("1", "L", "LA", "RGB", "RGBA", "I", "F") and not mode.startswith("I;16"):
        try:  # CMYK, YCbCr, LAB, HSV, RGBX, ...
            im = im.convert("RGB")
        except Exception:
            raise ImageInputError(
                f"unsupported PIL image mode '{mode}' (convert it to RGB, RGBA or L first)"
            ) from None
    mode_now = im.mode
    arr = np.asarray(im)
    if mode_now.startswith("I;16"):
        arr = arr.astype(np.uint16)
        scale, out_mode = 65535.0, "I;16"
    elif mode_now == "I":
        scale, out_mode = 65535.0, "I"
    elif mode_now in ("F", "1"):
        scale, out_mode = 1.0, mode_now
    else:
        scale, out_mode = 255.0, mode_now
    if arr.ndim == 2:
        arr = arr[..., None]
    grey = arr.shape[2] in (1, 2)
    has_alpha = arr.shape[2] in (2, 4)
    return arr, scale, out_mode, grey, has_alpha


def check_finite_np(arr: np.ndarray) -> None:
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ImageInputError("image contains NaN or Inf values (fix the source data, e.g. with nan_to_num)")


def _hwc_to_tensor(colour: np.ndarray, scale: float) -> torch.Tensor:
    """(H, W, 1|3) array -> float32 [1, 3, H, W] in 0..1."""
    f = colour.astype(np.float32)
    if scale != 1.0:
        f /= np.float32(scale)
    else:
        np.clip(f, 0.0, 1.0, out=f)
    t = torch.from_numpy(np.ascontiguousarray(f.transpose(2, 0, 1)))[None]
    if t.shape[1] == 1:
        t = t.expand(1, 3, t.shape[2], t.shape[3]).contiguous()
    return t


def _pil_to_tensor(im: Image.Image) -> tuple[torch.Tensor, ImageMeta]:
    if im.width == 0 or im.height == 0:
        raise ImageInputError("image is empty (zero width or height)")
    arr, scale, out_mode, grey, has_alpha = pil_pixels(im)
    check_finite_np(arr)
    ncol = 1 if grey else 3
    colour = arr[..., :ncol]
    if arr.dtype == np.int32:
        colour = np.clip(colour, 0, 65535)
    elif arr.dtype == np.bool_:
        colour = colour.astype(np.uint8)
    alpha = arr[..., -1].copy() if has_alpha else None
    meta = ImageMeta(
        kind="pil", layout="PIL", dtype=arr.dtype, mode=im.mode, out_mode=out_mode,
        channels=arr.shape[2], grey=grey, alpha=alpha, device=None, scale=scale,
        batch=1, height=arr.shape[0], width=arr.shape[1],
    )
    return _hwc_to_tensor(colour, scale), meta


def _numpy_scale(dtype: np.dtype) -> float:
    if dtype == np.uint8:
        return 255.0
    if dtype.kind == "u" and dtype.itemsize == 2:
        return 65535.0
    if dtype.kind == "f":
        return 1.0
    raise ImageInputError(
        f"unsupported numpy image dtype {dtype} (use uint8, uint16 or float32/float64 in 0..1)"
    )


def _numpy_to_tensor(arr: np.ndarray) -> tuple[torch.Tensor, ImageMeta]:
    if arr.ndim == 2:
        layout, hwc = "HW", arr[..., None]
    elif arr.ndim == 3 and arr.shape[2] in (1, 2, 3, 4):
        layout, hwc = "HWC", arr
    else:
        hint = " (for CHW data use arr.transpose(1, 2, 0))" if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) else ""
        raise ImageInputError(
            f"numpy images must be HW or HWC with C in 1..4, got shape {arr.shape}{hint}"
        )
    if arr.size == 0:
        raise ImageInputError(f"image is empty (shape {arr.shape})")
    scale = _numpy_scale(arr.dtype)
    check_finite_np(arr)
    c = hwc.shape[2]
    grey = c in (1, 2)
    alpha = hwc[..., -1:].copy() if c in (2, 4) else None
    meta = ImageMeta(
        kind="numpy", layout=layout, dtype=arr.dtype, mode=None, out_mode=None, channels=c,
        grey=grey, alpha=alpha, device=None, scale=scale, batch=1,
        height=hwc.shape[0], width=hwc.shape[1],
    )
    return _hwc_to_tensor(hwc[..., : 1 if grey else 3], scale), meta


def torch_layout(t: torch.Tensor) -> str:
    """Layout of a 3-D/4-D image tensor: "CHW", "NCHW" or "BHWC".

    4-D rule: dim 1 in {1,3,4} and last dim not -> NCHW; last dim in {1,3,4}
    and dim 1 not -> BHWC; both -> BHWC if the tensor is floating point and
    the last dim is 3 or 4 (the ComfyUI IMAGE convention), else NCHW.
    """
    if t.ndim == 3:
        if t.shape[0] in _CHANNEL_COUNTS:
            return "CHW"
        raise ImageInputError(
            f"3-D image tensors must be CHW with C in (1, 3, 4), got shape {tuple(t.shape)} "
            "(add a batch dimension for BHWC data)"
        )
    if t.ndim == 4:
        d1 = t.shape[1] in _CHANNEL_COUNTS
        dl = t.shape[3] in _CHANNEL_COUNTS
        if d1 and not dl:
            return "NCHW"
        if dl and not d1:
            return "BHWC"
        if d1 and dl:
            return "BHWC" if t.is_floating_point() and t.shape[3] in (3, 4) else "NCHW"
    raise ImageInputError(
        f"image tensors must be NCHW or CHW (C in 1, 3, 4) or BHWC (C in 1, 3, 4), got shape {tuple(t.shape)}"
    )


def _torch_scale(dtype: torch.dtype) -> float:
    if dtype.is_floating_point:
        return 1.0
    if dtype == torch.uint8:
        return 255.0
    if dtype == getattr(torch, "uint16", None):
        return 65535.0
    raise ImageInputError(
        f"unsupported tensor dtype {dtype} (use a float tensor in 0..1, uint8 or uint16)"
    )


def _torch_to_tensor(t: torch.Tensor) -> tuple[torch.Tensor, ImageMeta]:
    layout = torch_layout(t)
    scale = _torch_scale(t.dtype)
    if t.numel() == 0:
        raise ImageInputError(f"image is empty (shape {tuple(t.shape)})")
    t = t.detach()
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise ImageInputError("image contains NaN or Inf values (fix the source data, e.g. with nan_to_num)")
    nchw = t[None] if layout == "CHW" else t
    if layout == "BHWC":
        nchw = nchw.permute(0, 3, 1, 2)
    c = nchw.shape[1]
    grey = c == 1
    alpha = None
    if c == 4:
        alpha = t[..., 3:4].clone() if layout == "BHWC" else nchw[:, 3:4].clone()
    x = nchw[:, : 1 if grey else 3].to(torch.float32)
    x = x / scale if scale != 1.0 else x.clamp(0.0, 1.0)
    if grey:
        x = x.expand(-1, 3, -1, -1)
    x = x.contiguous()
    meta = ImageMeta(
        kind="torch_bhwc" if layout == "BHWC" else "torch_nchw", layout=layout, dtype=t.dtype,
        mode=None, out_mode=None, channels=c, grey=grey, alpha=alpha, device=t.device,
        scale=scale, batch=x.shape[0], height=x.shape[2], width=x.shape[3],
    )
    return x, meta


def to_tensor(image: ImageLike) -> tuple[torch.Tensor, ImageMeta]:
    """Convert an image to the model's input: float32 [B, 3, H, W] in 0..1.

    Accepted:

    * PIL images in modes RGB, RGBA, L, LA, P/PA (palette -> RGB, or RGBA
      when it has transparency), 1, I;16 / I (16-bit greyscale, scale 65535),
      F (float, assumed 0..1), CMYK/YCbCr/LAB/HSV (converted to RGB).
    * numpy arrays HW or HWC with C in 1 (grey), 2 (grey+alpha), 3 (RGB) or
      4 (RGBA); dtype uint8, uint16 or float (assumed 0..1).
    * torch tensors NCHW, CHW (treated as NCHW with B=1) or BHWC (ComfyUI
      IMAGE), C in 1, 3, 4; float (0..1), uint8 or uint16.  4-D layout rule:
      see ``torch_layout`` (an ambiguous float tensor whose last dim is 3 or
      4 is read as BHWC).

    Greyscale is replicated to 3 channels; alpha is kept aside, untouched, in
    the returned :class:`ImageMeta`.  Float data is clamped to 0..1.  The
    tensor lives on the input tensor's device (CPU for PIL/numpy).  B is 1
    except for batched tensors.  NaN/Inf, empty images and unsupported types
    raise ImageInputError.
    """
    if isinstance(image, Image.Image):
        return _pil_to_tensor(image)
    if isinstance(image, np.ndarray):
        return _numpy_to_tensor(image)
    if isinstance(image, torch.Tensor):
        return _torch_to_tensor(image)
    raise ImageInputError(f"unsupported image type {type(image).__name__} (pass {ACCEPTED_KINDS})")


# --------------------------------------------------------------------------- #
# tensor -> image
# --------------------------------------------------------------------------- #
def _luma(x: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] -> [B, 1, H, W] BT.601 luma (0.299 R + 0.587 G + 0.114 B).

    Written as G + 0.299 (R - G) + 0.114 (B - G) (the weights sum to 1), so a
    grey input replicated to R = G = B comes back bit-exact, even for floats.
    """
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return (g + _LUMA[0] * (r - g) + _LUMA[2] * (b - g)).clamp(0.0, 1.0)


def _quantise_np(f: np.ndarray, dtype: np.dtype, scale: float) -> np.ndarray:
    if dtype == np.bool_:
        return f >= 0.5
    if dtype.kind == "f":
        return f.astype(dtype)
    return np.rint(f * np.float32(scale)).astype(dtype)


def from_tensor(tensor: torch.Tensor, meta: ImageMeta) -> ImageLike:
    """Convert a model output [B, 3, H, W] (0..1) back to the input's kind.

    PIL stays PIL in the same mode family (L, LA, RGB, RGBA, 1, I;16, I, F;
    P becomes RGB/RGBA, CMYK etc. become RGB); numpy keeps dtype and layout;
    torch keeps layout, dtype and device.  Alpha is re-attached untouched;
    greyscale inputs get the BT.601 luma of the restored RGB.  Integer types
    are rounded to nearest.  Values are clamped to 0..1 first.
    """
    if not isinstance(tensor, torch.Tensor):
        raise ImageInputError(f"from_tensor needs a torch tensor, got {type(tensor).__name__}")
    expected = (meta.batch, 3, meta.height, meta.width)
    if tuple(tensor.shape) != expected:
        raise ImageInputError(
            f"restored tensor has shape {tuple(tensor.shape)} but the input needs {expected} "
            "(the model must keep the batch size and image size)"
        )
    x = tensor.detach().to(torch.float32)
    if bool(torch.isnan(x).any()):
        raise ImageInputError("restored image contains NaN values (check the model weights and input)")
    x = x.clamp(0.0, 1.0)
    if meta.grey:
        x = _luma(x)

    if meta.kind in ("pil", "numpy"):
        hwc = x[0].permute(1, 2, 0).cpu().numpy()
        if meta.kind == "pil":
            return _to_pil(hwc, meta)
        out = _quantise_np(hwc, meta.dtype, meta.scale)
        if meta.alpha is not None:
            out = np.concatenate([out, meta.alpha.astype(meta.dtype, copy=False)], axis=2)
        if meta.layout == "HW":
            out = out[..., 0]
        return np.ascontiguousarray(out)

    # torch
    device = meta.device if meta.device is not None else tensor.device
    x = x.to(device)
    if meta.dtype.is_floating_point:
        out = x.to(meta.dtype)
    else:
        out = (x * meta.scale).round().to(meta.dtype)
    if meta.alpha is not None:
        alpha = meta.alpha.to(device)
        if meta.layout == "BHWC":
            return torch.cat([out.permute(0, 2, 3, 1), alpha], dim=3).contiguous()
        out = torch.cat([out, alpha], dim=1)
    elif meta.layout == "BHWC":
        return out.permute(0, 2, 3, 1).contiguous()
    return out[0] if meta.layout == "CHW" else out


def _to_pil(hwc: np.ndarray, meta: ImageMeta) -> Image.Image:
    mode = meta.out_mode
    if mode == "1":
        return Image.fromarray(hwc[..., 0] >= 0.5)
    if mode == "F":
        return Image.fromarray(hwc[..., 0].astype(np.float32))
    if mode == "I;16":
        return Image.fromarray(np.rint(hwc[..., 0] * np.float32(65535)).astype(np.uint16))
    if mode == "I":
        return Image.fromarray(np.rint(hwc[..., 0] * np.float32(65535)).astype(np.int32))
    out = np.rint(hwc * np.float32(255)).astype(np.uint8)
    if meta.alpha is not None:
        out = np.concatenate([out, meta.alpha[..., None].astype(np.uint8)], axis=2)
    if out.shape[2] == 1:
        out = out[..., 0]
    return Image.fromarray(out)


# --------------------------------------------------------------------------- #
# size
# --------------------------------------------------------------------------- #
def image_size(image: Any) -> tuple[int, int]:
    """(height, width) of any accepted image, without converting it.

    Also accepts a file path: the size is read from the header (no pixel
    decoding), after EXIF orientation, so it matches what :func:`read_image`
    returns; files over :data:`MAX_PIXELS` raise ImageInputError as in
    read_image.
    """
    if isinstance(image, Image.Image):
        return image.height, image.width
    if isinstance(image, np.ndarray):
        if image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 2, 3, 4)):
            return int(image.shape[0]), int(image.shape[1])
        raise ImageInputError(f"numpy images must be HW or HWC with C in 1..4, got shape {image.shape}")
    if isinstance(image, torch.Tensor):
        layout = torch_layout(image)
        if layout == "CHW":
            return int(image.shape[1]), int(image.shape[2])
        if layout == "NCHW":
            return int(image.shape[2]), int(image.shape[3])
        return int(image.shape[1]), int(image.shape[2])
    if isinstance(image, (str, os.PathLike)):
        return file_image_size(image)
    raise ImageInputError(f"unsupported image type {type(image).__name__} (pass {ACCEPTED_KINDS})")
