"""Reading, writing and converting images and masks for M2AE.

Public API
----------
``read_image(path, max_pixels=MAX_PIXELS) -> PIL.Image.Image | numpy.ndarray``
    Read any Pillow-readable file, fully decoded and EXIF-upright.  16-bit
    colour PNGs (RGB, RGBA, grey+alpha), which Pillow would silently reduce to
    8 bit, are decoded by :mod:`m2ae_core.png16` and returned as a numpy
    uint16 array (H, W, C); everything else is a PIL image in its own mode
    (16-bit greyscale PNGs come back as PIL mode ``I;16``).
``save_image(image, path)``
    Write a PIL image or a uint8/uint16 numpy array atomically.
``to_tensor(image) -> (tensor, ImageMeta)`` / ``from_tensor(tensor, meta)``
    Convert to the model's float32 [B, 3, H, W] 0..1 tensor and back to the
    caller's own kind, dtype, layout, device and alpha.
``mask_to_tensor(mask, height, width, batch=1) -> BoolTensor [B, 1, H, W]``
``image_size(image) -> (H, W)``

Every problem with user input raises :class:`~m2ae_core.errors.ImageInputError`
(a ``ValueError``) with a one-line message saying what is wrong and what to do.
"""

from __future__ import annotations

import io
import os
import re
import secrets
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from . import heif, png16, tiff16
from .errors import ImageInputError
from .photo_metadata import PhotoMetadata, pillow_options, png_chunks

__all__ = [
    "MAX_PIXELS",
    "SAVE_FORMATS",
    "ImageMeta",
    "read_image",
    "save_image",
    "to_tensor",
    "from_tensor",
    "mask_to_tensor",
    "image_size",
]

#: Largest image (width * height) ``read_image`` accepts by default.  The size
#: is read from the file header and checked before any pixel is decoded, so a
#: small file claiming a huge size (a "decompression bomb") costs nothing.
MAX_PIXELS: int = 100_000_000

#: File extensions ``save_image`` understands, and the format each one writes.
SAVE_FORMATS: dict[str, str] = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
    ".webp": "WEBP",
}

ImageLike = Union[Image.Image, np.ndarray, torch.Tensor]

_ACCEPTED_KINDS = (
    "a PIL image, a numpy array (HW or HWC, C in 1..4; uint8, uint16 or float 0..1) "
    "or a torch tensor (NCHW, CHW or ComfyUI BHWC)"
)
_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601
_CHANNEL_COUNTS = (1, 3, 4)
_PIL_LIMIT_LOCK = threading.Lock()


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
# reading
# --------------------------------------------------------------------------- #
def _path_of(path: Any, what: str) -> Path:
    if isinstance(path, (str, os.PathLike)):
        return Path(path)
    raise ImageInputError(
        f"{what} needs a file path (str or pathlib.Path), got {type(path).__name__}"
    )


def _read_file_bytes(p: Path) -> bytes:
    name = str(p)
    try:
        if p.is_dir():
            raise ImageInputError(f"cannot read '{name}': it is a folder (pass the path of an image file)")
        data = p.read_bytes()
    except ImageInputError:
        raise
    except FileNotFoundError:
        raise ImageInputError(f"cannot read '{name}': file does not exist (check the path)") from None
    except PermissionError:
        raise ImageInputError(
            f"cannot read '{name}': permission denied (check the file's permissions)"
        ) from None
    except OSError as exc:
        raise ImageInputError(
            f"cannot read '{name}': {exc.strerror or exc} (check the path and the disk)"
        ) from None
    if not data:
        raise ImageInputError(f"cannot read '{name}': file is empty (0 bytes; re-export or re-download it)")
    return data


def _check_size(width: int, height: int, max_pixels: int, name: str) -> None:
    if width <= 0 or height <= 0:
        raise ImageInputError(f"cannot read '{name}': image has zero width or height ({width}x{height})")
    if width * height > max_pixels:
        raise ImageInputError(
            f"cannot read '{name}': image is {width}x{height} = {width * height:,} pixels, more than "
            f"the limit of {max_pixels:,} pixels (downscale it first, or raise max_pixels if you trust the file)"
        )


def _corrupt(name: str) -> ImageInputError:
    return ImageInputError(
        f"cannot read '{name}': file is truncated or corrupt (re-export or re-download it)")


def _pil_open(data: bytes, name: str, max_pixels: int) -> Image.Image:
    """Parse the header with Pillow (no pixel decoding) and check the size.

    Pillow has its own decompression-bomb guard (an error above
    2 * Image.MAX_IMAGE_PIXELS, about 179 MP by default).  When max_pixels is
    larger than that, Pillow's guard is lifted for the duration of the header
    parse (process-wide, under a lock) so our limit is the one that applies.
    """
    if heif.is_heif(data[:12]):
        heif.enable_heif(name)
    pil_limit = Image.MAX_IMAGE_PIXELS
    lift = pil_limit is not None and max_pixels > 2 * pil_limit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            if lift:
                with _PIL_LIMIT_LOCK:
                    saved = Image.MAX_IMAGE_PIXELS
                    Image.MAX_IMAGE_PIXELS = None
                    try:
                        im = Image.open(io.BytesIO(data))
                    finally:
                        Image.MAX_IMAGE_PIXELS = saved
            else:
                im = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            found = re.search(r"\((\d+) pixels\)", str(exc))
            size = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
            raise ImageInputError(
                f"cannot read '{name}': image has {size}, more than the limit of {max_pixels:,} "
                "pixels (downscale it first, or raise max_pixels if you trust the file)"
            ) from None
        except UnidentifiedImageError:
            raise ImageInputError(
                f"cannot read '{name}': not an image file, or a format Pillow cannot read "
                "(check the file; convert it to PNG or JPEG)"
            ) from None
        except MemoryError:
            raise
        except Exception:
            raise _corrupt(name) from None
    _check_size(im.width, im.height, max_pixels, name)
    return im


def _upright(im: Image.Image, name: str) -> Image.Image:
    try:
        out = ImageOps.exif_transpose(im, in_place=True)
        return im if out is None else out
    except Exception as exc:  # broken EXIF must not make a good image unreadable
        warnings.warn(f"'{name}': could not apply EXIF orientation ({exc}); using the image as stored")
        return im


def read_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> Image.Image | np.ndarray:
    """Read an image file, fully decoded and upright (EXIF orientation applied).

    Returns a ``PIL.Image.Image`` in the file's own mode, except for 16-bit
    colour PNGs (RGB, RGBA, grey+alpha) and, with the optional tifffile
    package, 16-bit colour TIFFs: a PIL image cannot hold those without losing
    precision, so they are returned as a numpy uint16 array of shape
    (H, W, 3), (H, W, 4) or (H, W, 2).  16-bit greyscale PNGs are PIL
    mode ``I;16``.  Multi-frame files (GIF, TIFF) give their first frame.

    The size from the file header is checked against ``max_pixels`` before
    any pixel is decoded.  Missing files, folders, empty, non-image,
    truncated or corrupt files and oversized images raise ImageInputError.
    """
    p = _path_of(path, "read_image")
    name = str(path)
    data = _read_file_bytes(p)
    header = png16.read_header(data[:33], name) if data.startswith(png16.PNG_SIGNATURE) else None
    if header is not None:
        _check_size(header.width, header.height, max_pixels, name)
        if header.bit_depth == 16 and header.colour_type in (2, 4, 6):
            return png16.decode_png(data, name)
    im = _pil_open(data, name, max_pixels)
    if tiff16.is_16bit_colour(im):  # Pillow would quietly decode it at 8 bits
        deep = tiff16.read_16bit(data, im, name)
        if deep is not None:
            return deep
    try:
        im.load()
    except MemoryError:
        raise
    except Exception:
        raise _corrupt(name) from None
    return _upright(im, name)


# --------------------------------------------------------------------------- #
# writing
# --------------------------------------------------------------------------- #
def _to_8bit_pil(im: Image.Image) -> Image.Image:
    """High-precision greyscale modes (I;16*, I, F) -> L, scaling (not clipping)."""
    arr = np.asarray(im)
    if im.mode == "F":
        vals = np.clip(np.nan_to_num(arr.astype(np.float64)), 0.0, 1.0) * 255.0
    else:
        vals = np.clip(arr.astype(np.float64), 0, 65535) / 257.0
    return Image.fromarray(np.rint(vals).astype(np.uint8))


def _pil_for_format(im: Image.Image, fmt: str, name: str) -> Image.Image:
    mode = im.mode
    if mode.startswith("I;16") and mode != "I;16":
        im = Image.fromarray(np.asarray(im).astype(np.uint16))
        mode = im.mode
    if fmt == "PNG":
        if mode == "F":  # keep the precision: 16-bit greyscale
            vals = np.clip(np.nan_to_num(np.asarray(im, dtype=np.float64)), 0.0, 1.0) * 65535.0
            return Image.fromarray(np.rint(vals).astype(np.uint16))
        if mode == "I":
            return Image.fromarray(np.clip(np.asarray(im), 0, 65535).astype(np.uint16))
        if mode in ("1", "L", "LA", "P", "RGB", "RGBA", "I;16"):
            return im
        return im.convert("RGBA" if "A" in mode else "RGB")
    if fmt == "TIFF":
        if mode in ("1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I", "F", "CMYK"):
            return im
        return im.convert("RGBA" if "A" in mode else "RGB")
    # JPEG, BMP, WEBP: 8 bit only
    if mode in ("I;16", "I", "F"):
        warnings.warn(f"'{name}': {fmt} stores 8 bits per channel; 16-bit/float data is reduced (use .png or .tif to keep it)")
        im = _to_8bit_pil(im)
        mode = im.mode
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    if mode == "PA":
        im = im.convert("RGBA")
        mode = im.mode
    if fmt in ("JPEG", "BMP"):
        if mode in ("RGBA", "LA"):
            warnings.warn(f"'{name}': {fmt} keeps no alpha channel; the alpha is dropped (use .png to keep it)")
            return im.convert("RGB" if mode == "RGBA" else "L")
        if mode in ("L", "RGB") or (fmt == "JPEG" and mode == "CMYK") or (fmt == "BMP" and mode == "1"):
            return im
        return im.convert("L" if mode == "1" else "RGB")
    # WEBP
    if mode in ("RGB", "RGBA"):
        return im
    return im.convert("RGBA" if "A" in mode else "RGB")


def _writer_for(image: Any, fmt: str, name: str,
                metadata: PhotoMetadata | None = None) -> Callable[[Any], None]:
    """Return a function writing ``image`` in ``fmt`` (with ``metadata`` where the format
    holds it) to a binary file object."""
    options: dict[str, Any] = {}
    if fmt == "JPEG":
        options = {"quality": 95, "subsampling": 0}
    elif fmt == "WEBP":
        options = {"quality": 95}

    if isinstance(image, np.ndarray):
        arr = image
        if arr.dtype.kind == "u" and arr.dtype.itemsize in (1, 2) and not arr.dtype.isnative:
            arr = arr.astype(arr.dtype.newbyteorder("="))
        if arr.dtype not in (np.uint8, np.uint16):
            raise ImageInputError(
                f"cannot write '{name}': numpy images must be uint8 or uint16, got {arr.dtype} "
                "(convert float results with from_tensor first)"
            )
        if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (1, 2, 3, 4))):
            raise ImageInputError(
                f"cannot write '{name}': numpy images must be HW or HWC with C in 1..4, got shape {arr.shape}"
            )
        if arr.size == 0:
            raise ImageInputError(f"cannot write '{name}': image is empty (zero width or height)")
        arr = np.ascontiguousarray(arr)
        grey = arr.ndim == 2 or arr.shape[2] == 1
        if arr.dtype == np.uint16:
            if fmt == "PNG" and not grey:
                chunks = png_chunks(metadata, arr.shape[2])
                return lambda fh: png16.encode_png(arr, fh, extra_chunks=chunks)
            if fmt in ("PNG", "TIFF") and grey:
                im = Image.fromarray(arr.reshape(arr.shape[0], arr.shape[1]))
                kept = pillow_options(metadata, fmt, im)
                return lambda fh: im.save(fh, format=fmt, **kept)
            warnings.warn(
                f"'{name}': {fmt} cannot store 16-bit {'greyscale' if grey else 'colour'} here; "
                "writing 8 bits per channel (use .png to keep 16 bits)"
            )
            arr = np.rint(arr / 257.0).astype(np.uint8)
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[..., 0]
        image = Image.fromarray(arr)
    if not isinstance(image, Image.Image):
        raise ImageInputError(
            f"cannot write '{name}': save_image needs a PIL image or a uint8/uint16 numpy array, "
            f"got {type(image).__name__} (convert tensors with from_tensor first)"
        )
    if image.width == 0 or image.height == 0:
        raise ImageInputError(f"cannot write '{name}': image is empty (zero width or height)")
    im = _pil_for_format(image, fmt, name)
    options.update(pillow_options(metadata, fmt, im))
    return lambda fh: im.save(fh, format=fmt, **options)


def save_image(image: Image.Image | np.ndarray, path: str | os.PathLike,
               metadata: PhotoMetadata | None = None) -> None:
    """Write ``image`` (PIL image, or numpy uint8/uint16 HW/HWC) to ``path``.

    ``metadata`` (:func:`m2ae_core.photo_metadata.read_metadata` of the input photo): its ICC
    profile and EXIF go into PNG, JPEG, WEBP and TIFF files (the profile only where its colour
    space matches the image's channels).

    The format follows the extension (see :data:`SAVE_FORMATS`).  uint16
    colour arrays are written as 16-bit PNGs by :mod:`m2ae_core.png16` and
    uint16 greyscale through Pillow mode ``I;16``, so 16-bit data survives a
    read_image/save_image round trip exactly.  Formats that cannot hold the
    data get a reduced version plus a warning (16-bit -> 8-bit for JPEG/BMP/
    WEBP, alpha dropped for JPEG and BMP).  JPEG is written at quality 95 without
    chroma subsampling.

    The file is written to a temporary file in the same folder and moved into
    place with ``os.replace``, so an interrupted run never leaves a
    half-written image (an existing file is either kept or fully replaced).
    """
    p = _path_of(path, "save_image")
    name = str(path)
    fmt = SAVE_FORMATS.get(p.suffix.lower())
    if fmt is None:
        supported = ", ".join(sorted(SAVE_FORMATS))
        raise ImageInputError(
            f"cannot write '{name}': unsupported extension '{p.suffix}' (use one of {supported})"
        )
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise ImageInputError(f"cannot write '{name}': folder '{folder}' does not exist (create it first)")
    if p.is_dir():
        raise ImageInputError(f"cannot write '{name}': it is a folder (pass a file name)")
    write = _writer_for(image, fmt, name, metadata)

    tmp = folder / f".{p.name}.{secrets.token_hex(4)}.tmp"
    try:
        # os.open with 0o666 lets the umask decide the final permissions,
        # exactly as for a file created directly.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, ImageInputError) or not isinstance(exc, (OSError, ValueError)):
            raise
        if isinstance(exc, PermissionError):
            raise ImageInputError(
                f"cannot write '{name}': permission denied (choose another folder or fix its permissions)"
            ) from None
        detail = getattr(exc, "strerror", None) or str(exc)
        raise ImageInputError(f"cannot write '{name}': {detail} (check the disk space and the path)") from None


# --------------------------------------------------------------------------- #
# image -> tensor
# --------------------------------------------------------------------------- #
def _pil_pixels(im: Image.Image) -> tuple[np.ndarray, float, str, bool, bool]:
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


def _check_finite_np(arr: np.ndarray) -> None:
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
    arr, scale, out_mode, grey, has_alpha = _pil_pixels(im)
    _check_finite_np(arr)
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
    _check_finite_np(arr)
    c = hwc.shape[2]
    grey = c in (1, 2)
    alpha = hwc[..., -1:].copy() if c in (2, 4) else None
    meta = ImageMeta(
        kind="numpy", layout=layout, dtype=arr.dtype, mode=None, out_mode=None, channels=c,
        grey=grey, alpha=alpha, device=None, scale=scale, batch=1,
        height=hwc.shape[0], width=hwc.shape[1],
    )
    return _hwc_to_tensor(hwc[..., : 1 if grey else 3], scale), meta


def _torch_layout(t: torch.Tensor) -> str:
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
    layout = _torch_layout(t)
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
      see ``_torch_layout`` (an ambiguous float tensor whose last dim is 3 or
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
    raise ImageInputError(f"unsupported image type {type(image).__name__} (pass {_ACCEPTED_KINDS})")


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
# masks
# --------------------------------------------------------------------------- #
def _mask_float_np(arr: np.ndarray) -> np.ndarray:
    """numpy mask values -> float32 in 0..1 by dtype."""
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if arr.dtype.kind == "f":
        _check_finite_np(arr)
        return np.clip(arr, 0.0, 1.0).astype(np.float32)
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype.kind == "u" and arr.dtype.itemsize == 2:
        return arr.astype(np.float32) / 65535.0
    if arr.dtype.kind in "iu":
        if arr.size and (arr.min() < 0 or arr.max() > 1):
            raise ImageInputError(
                f"mask of dtype {arr.dtype} must contain only 0 and 1 (use bool, uint8 0..255, "
                "uint16 or float 0..1)"
            )
        return arr.astype(np.float32)
    raise ImageInputError(f"unsupported mask dtype {arr.dtype} (use bool, uint8, uint16 or float 0..1)")


def _mask_float_torch(t: torch.Tensor) -> torch.Tensor:
    t = t.detach()
    if t.dtype == torch.bool:
        return t.to(torch.float32)
    if t.is_floating_point():
        if not bool(torch.isfinite(t).all()):
            raise ImageInputError("mask contains NaN or Inf values (fix the mask, e.g. with nan_to_num)")
        return t.to(torch.float32).clamp(0.0, 1.0)
    if t.dtype == torch.uint8:
        return t.to(torch.float32) / 255.0
    if t.dtype == getattr(torch, "uint16", None):
        return t.to(torch.float32) / 65535.0
    if t.dtype.is_complex:
        raise ImageInputError(f"unsupported mask dtype {t.dtype} (use bool, uint8, uint16 or float 0..1)")
    f = t.to(torch.float32)
    if f.numel() and (float(f.min()) < 0 or float(f.max()) > 1):
        raise ImageInputError(
            f"mask of dtype {t.dtype} must contain only 0 and 1 (use bool, uint8 0..255, uint16 or float 0..1)"
        )
    return f


def _mask_nchw(mask: Any) -> torch.Tensor:
    """Any accepted mask -> float32 [B, C, h, w] in 0..1 (C in 1..4; alpha last for C=2/4)."""
    if isinstance(mask, Image.Image):
        if mask.width == 0 or mask.height == 0:
            raise ImageInputError("mask is empty (zero width or height)")
        arr, scale, _mode, _grey, _alpha = _pil_pixels(mask)
        if arr.dtype == np.bool_:
            f = arr.astype(np.float32)
        elif arr.dtype.kind == "f":
            _check_finite_np(arr)
            f = np.clip(arr, 0.0, 1.0).astype(np.float32)
        else:
            f = np.clip(arr.astype(np.float32) / np.float32(scale), 0.0, 1.0)
        return torch.from_numpy(np.ascontiguousarray(f.transpose(2, 0, 1)))[None]
    if isinstance(mask, np.ndarray):
        if mask.ndim == 2:
            mask = mask[..., None]
        elif not (mask.ndim == 3 and mask.shape[2] in (1, 2, 3, 4)):
            raise ImageInputError(
                f"numpy masks must be HW or HWC with C in 1..4, got shape {mask.shape}"
            )
        if mask.size == 0:
            raise ImageInputError(f"mask is empty (shape {mask.shape})")
        f = _mask_float_np(mask)
        return torch.from_numpy(np.ascontiguousarray(f.transpose(2, 0, 1)))[None]
    if isinstance(mask, torch.Tensor):
        if mask.numel() == 0:
            raise ImageInputError(f"mask is empty (shape {tuple(mask.shape)})")
        if mask.ndim == 2:
            t = mask[None, None]
        elif mask.ndim == 3:  # ComfyUI MASK [B, H, W]
            t = mask[:, None]
        elif mask.ndim == 4:
            if mask.shape[1] == 1:
                t = mask
            else:
                layout = _torch_layout(mask)
                t = mask.permute(0, 3, 1, 2) if layout == "BHWC" else mask
        else:
            raise ImageInputError(
                f"mask tensors must be [H, W], [B, H, W] or [B, 1, H, W], got shape {tuple(mask.shape)}"
            )
        return _mask_float_torch(t)
    raise ImageInputError(
        f"unsupported mask type {type(mask).__name__} (pass a file path, a PIL image, a numpy "
        "array or a torch tensor)"
    )


def _reduce_channels(m: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] -> [B, 1, h, w] following the documented channel rule."""
    c = m.shape[1]
    if c == 1:
        return m
    if c == 3:
        return m.amax(dim=1, keepdim=True)
    colour = m[:, :1] if c == 2 else m[:, :3].amax(dim=1, keepdim=True)
    alpha = m[:, -1:]
    eps = 1e-6
    flat_a = alpha.flatten(1)
    alpha_varies = (flat_a.amax(1) - flat_a.amin(1)) > eps
    opaque = (alpha >= 0.5).flatten(1)
    flat_c = colour.flatten(1)
    cmax = torch.where(opaque, flat_c, torch.full_like(flat_c, -1.0)).amax(1)
    cmin = torch.where(opaque, flat_c, torch.full_like(flat_c, 2.0)).amin(1)
    colour_const = ~opaque.any(1) | ((cmax - cmin) <= eps)
    use_alpha = (alpha_varies & colour_const).view(-1, 1, 1, 1)
    return torch.where(use_alpha, alpha, colour)


def mask_to_tensor(mask: Any, height: int, width: int, batch: int = 1) -> torch.Tensor:
    """Turn a user mask into a bool tensor [batch, 1, height, width] (True = blurred).

    ``mask`` may be a file path (read with :func:`read_image`), a PIL image
    (L, 1, RGB, RGBA, LA, P, I;16, F, ...), a numpy array (bool, uint8,
    uint16, float; HW or HWC) or a torch tensor ([H, W], [B, H, W] as a
    ComfyUI MASK, [B, 1, H, W], or an NCHW/BHWC image tensor), at any
    resolution.

    Values are normalised to 0..1 by dtype (uint8 / 255, uint16 / 65535,
    float clamped; other integer types must be 0/1).  Channels: RGB -> max
    over the channels.  With alpha (LA, RGBA): if the alpha varies and the
    colour (max over colour channels) is constant over the pixels with
    alpha >= 0.5 -- a brush of one colour painted on a transparent layer --
    the alpha is the mask; otherwise the colour is, as for RGB.  The choice is
    made per batch item.  The mask is then resized to (height, width) if needed --
    nearest neighbour when enlarging (shapes keep their corners), antialiased
    bilinear when shrinking -- and thresholded at >= 0.5.  A single mask is broadcast over ``batch``; a
    batch of masks must have exactly ``batch`` items.  The result is on the
    mask tensor's device (CPU otherwise).
    """
    for label, value in (("height", height), ("width", width), ("batch", batch)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ImageInputError(f"mask_to_tensor: {label} must be a positive integer, got {value!r}")
    if isinstance(mask, (str, os.PathLike)):
        mask = read_image(mask)
    m = _reduce_channels(_mask_nchw(mask))
    if m.shape[2:] != (height, width):
        if m.shape[2] <= height and m.shape[3] <= width:
            # enlarging: nearest keeps a painted shape's corners (bilinear + threshold cuts them)
            m = F.interpolate(m, size=(int(height), int(width)), mode="nearest-exact")
        else:
            m = F.interpolate(m, size=(int(height), int(width)), mode="bilinear",
                              align_corners=False, antialias=True)
    out = m >= 0.5
    if out.shape[0] == batch:
        return out.contiguous()
    if out.shape[0] == 1:
        return out.expand(int(batch), -1, -1, -1).contiguous()
    raise ImageInputError(
        f"mask batch has {out.shape[0]} masks but the image batch has {batch} images "
        "(pass one mask, or one mask per image)"
    )


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
        layout = _torch_layout(image)
        if layout == "CHW":
            return int(image.shape[1]), int(image.shape[2])
        if layout == "NCHW":
            return int(image.shape[2]), int(image.shape[3])
        return int(image.shape[1]), int(image.shape[2])
    if isinstance(image, (str, os.PathLike)):
        name = str(image)
        data = _read_file_bytes(Path(image))
        im = _pil_open(data, name, MAX_PIXELS)
        w, h = im.size
        try:
            orientation = int(im.getexif().get(0x0112, 1))
        except Exception:
            orientation = 1
        return (w, h) if orientation in (5, 6, 7, 8) else (h, w)
    raise ImageInputError(f"unsupported image type {type(image).__name__} (pass {_ACCEPTED_KINDS})")
