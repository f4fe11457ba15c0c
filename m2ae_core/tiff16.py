"""16-bit colour TIFFs (what raw converters export) at full precision.

Pillow opens a 16-bit RGB TIFF as 8-bit RGB without a word. With the optional ``tifffile``
package (and ``imagecodecs`` for LZW-compressed files; the ``tiff`` extra installs both) such
files are read as uint16 arrays, like 16-bit PNGs, so the result is written at 16 bits too.
Without them reading falls back to Pillow's 8 bits, with a warning that names the fix.
"""
from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image

from .png16 import apply_orientation

BITS_PER_SAMPLE = 258
SAMPLES_PER_PIXEL = 277
ORIENTATION = 274
PLANAR_CONFIGURATION = 284
INSTALL_HINT = "pip install tifffile imagecodecs (or the 'tiff' extra)"


def is_16bit_colour(im: Image.Image) -> bool:
    """Whether ``im`` (opened, not decoded) is a TIFF of 3 or 4 samples of 16 bits each."""
    if im.format != "TIFF":
        return False
    bits = im.tag_v2.get(BITS_PER_SAMPLE)
    bits = bits if isinstance(bits, tuple) else (bits,)
    samples = int(im.tag_v2.get(SAMPLES_PER_PIXEL, 1))
    return samples in (3, 4) and all(b == 16 for b in bits)


def read_16bit(data: bytes, im: Image.Image, name: str) -> np.ndarray | None:
    """The first page as uint16 (H, W, 3|4), upright; None (after a warning) when it cannot be
    decoded at 16 bits here, so the caller reads it with Pillow at 8 bits."""
    try:
        import tifffile
    except ImportError:
        warnings.warn(f"'{name}' is a 16-bit colour TIFF; reading it at 8 bits. For all 16 "
                      f"bits: {INSTALL_HINT}")
        return None
    try:
        arr = tifffile.imread(io.BytesIO(data), key=0)
    except Exception as exc:  # e.g. LZW without imagecodecs
        warnings.warn(f"'{name}': 16-bit TIFF not decodable at 16 bits here ({exc}); reading "
                      f"it at 8 bits. For all 16 bits: {INSTALL_HINT}")
        return None
    samples = int(im.tag_v2.get(SAMPLES_PER_PIXEL, 1))
    if int(im.tag_v2.get(PLANAR_CONFIGURATION, 1)) == 2 and arr.ndim == 3:
        arr = np.moveaxis(arr, 0, -1)  # stored one plane per sample
    if arr.dtype != np.uint16 or arr.ndim != 3 or arr.shape[-1] != samples:
        warnings.warn(f"'{name}': unexpected 16-bit TIFF layout {arr.dtype} {arr.shape}; "
                      "reading it at 8 bits")
        return None
    orientation = int(im.tag_v2.get(ORIENTATION, 1))
    return apply_orientation(arr, orientation if 1 <= orientation <= 8 else 1)
