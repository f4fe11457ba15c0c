"""Image files: reading (size-checked before decoding, EXIF-upright, 16-bit kept) and atomic
writing in the format the extension names.  Part of :mod:`m2ae_core.imageio`'s public API."""

from __future__ import annotations

import io
import os
import re
import secrets
import threading
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from . import heif, png16, tiff16
from .errors import ImageInputError
from .photo_metadata import PhotoMetadata, pillow_options, png_chunks

__all__ = ["MAX_PIXELS", "SAVE_FORMATS", "read_image", "save_image", "file_image_size"]

#: Largest image (width * height) ``read_image`` accepts by default.  The size
#: is read from the file header and checked before any pixel is decoded, so a
#: small file claiming a huge size (a "decompression bomb") costs nothing.
MAX_PIXELS: int = 100_000_000
# zlib level of PNG outputs: on a 13 MP photo level 4 wrote in 1.7 s what Pillow's default 6
# wrote in 4.2 s, for a 4.7 % larger file (session 17)
PNG_COMPRESS_LEVEL = 4
RAISE_THE_LIMIT = ("(downscale it first, or raise the limit if you trust the file: "
                   "m2ae deblur --max-pixels N, read_image(..., max_pixels=N))")

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

_PIL_LIMIT_LOCK = threading.Lock()


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
            f"the limit of {max_pixels:,} pixels {RAISE_THE_LIMIT}"
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
                f"pixels {RAISE_THE_LIMIT}"
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
    elif fmt == "PNG":
        options = {"compress_level": PNG_COMPRESS_LEVEL}

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
                return lambda fh: png16.encode_png(arr, fh, compress_level=PNG_COMPRESS_LEVEL,
                                                   extra_chunks=chunks)
            if fmt in ("PNG", "TIFF") and grey:
                im = Image.fromarray(arr.reshape(arr.shape[0], arr.shape[1]))
                kept = {**options, **pillow_options(metadata, fmt, im)}
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
    chroma subsampling, PNG at zlib level :data:`PNG_COMPRESS_LEVEL`.

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


def file_image_size(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """(height, width) of an image file as :func:`read_image` would return it (after EXIF
    orientation), read from the header without decoding pixels; files over ``max_pixels``
    raise ImageInputError as in read_image."""
    name = str(path)
    im = _pil_open(_read_file_bytes(_path_of(path, "image_size")), name, max_pixels)
    w, h = im.size
    try:
        orientation = int(im.getexif().get(0x0112, 1))
    except Exception:
        orientation = 1
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)
