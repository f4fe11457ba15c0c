"""Colour profile and EXIF carried from an input photo to its restored output.

Restoration works on the stored pixel values, so the output is in the input's colour space: a
Display P3 phone photo or an Adobe RGB camera file must keep its ICC profile, or viewers show
it with the wrong colours. EXIF (camera, lens, exposure, date) is kept too, except the
orientation: ``read_image`` already turned the pixels upright, so it becomes 1.
"""
from __future__ import annotations

import os
import warnings
import zlib
from dataclasses import dataclass

from PIL import Image

from .heif import enable_heif, is_heif

__all__ = ["PhotoMetadata", "read_metadata", "pillow_options", "png_chunks", "icc_colour_space"]

ORIENTATION_TAG = 0x0112
EXIF_PREFIX = b"Exif\x00\x00"  # JPEG's APP1 marker prefix; PNG's eXIf chunk starts after it
# Formats whose Pillow writer takes icc_profile= and exif=.
PILLOW_METADATA_FORMATS = {"PNG", "JPEG", "WEBP", "TIFF"}


@dataclass(frozen=True)
class PhotoMetadata:
    icc_profile: bytes | None = None
    exif: bytes | None = None  # as Pillow writes it: "Exif\0\0" + TIFF structure

    def __bool__(self) -> bool:
        return bool(self.icc_profile or self.exif)


def icc_colour_space(profile: bytes) -> str | None:
    """The data colour space of an ICC profile ('RGB', 'GRAY', 'CMYK', ...), from its header."""
    if len(profile) < 20:
        return None
    return profile[16:20].decode("ascii", "replace").strip()


def read_metadata(path: str | os.PathLike) -> PhotoMetadata:
    """The ICC profile and EXIF of the image file at ``path`` (empty where it has none or they
    cannot be read: metadata never makes a readable photo fail)."""
    try:
        with open(path, "rb") as head:
            if is_heif(head.read(12)):
                enable_heif(str(path))
        with Image.open(path) as im:
            icc = im.info.get("icc_profile") or None
            exif = im.getexif()
            exif_bytes = None
            if len(exif):
                if ORIENTATION_TAG in exif:
                    exif[ORIENTATION_TAG] = 1
                exif_bytes = exif.tobytes()
    except Exception as exc:  # broken metadata: restore the photo anyway, without it
        warnings.warn(f"'{path}': its colour profile / EXIF could not be read ({exc}); the "
                      "output will not carry them")
        return PhotoMetadata()
    return PhotoMetadata(icc, exif_bytes)


def _profile_fits(profile: bytes | None, channels: int) -> bool:
    """A profile describes the output only if its colour space matches the output's channels
    (a CMYK JPEG's profile must not be attached to the RGB result)."""
    if not profile:
        return False
    return icc_colour_space(profile) == ("GRAY" if channels in (1, 2) else "RGB")


def pillow_options(metadata: PhotoMetadata | None, fmt: str, image: Image.Image) -> dict:
    """``icc_profile`` / ``exif`` keyword arguments for ``Image.save`` in ``fmt``."""
    if not metadata or fmt not in PILLOW_METADATA_FORMATS:
        return {}
    options = {}
    if _profile_fits(metadata.icc_profile, len(image.getbands())):
        options["icc_profile"] = metadata.icc_profile
    if metadata.exif:
        options["exif"] = metadata.exif
    return options


def png_chunks(metadata: PhotoMetadata | None, channels: int) -> list[tuple[bytes, bytes]]:
    """(type, body) of the iCCP and eXIf chunks for :func:`m2ae_core.png16.encode_png`."""
    if not metadata:
        return []
    chunks = []
    if _profile_fits(metadata.icc_profile, channels):
        # profile name, NUL, compression method 0 (zlib), compressed profile
        chunks.append((b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(metadata.icc_profile)))
    if metadata.exif:
        body = metadata.exif
        chunks.append((b"eXIf", body[len(EXIF_PREFIX):] if body.startswith(EXIF_PREFIX) else body))
    return chunks
