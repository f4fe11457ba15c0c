"""HEIF / HEIC photos (what phones save by default), read through the optional pillow-heif
plugin (``pip install pillow-heif``, or the ``heif`` extra)."""
from __future__ import annotations

from .errors import ImageInputError

# Major brands of the ISO base media "ftyp" box that mark a HEIF still image or sequence.
HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}
_registered = False


def is_heif(head: bytes) -> bool:
    """Whether a file starting with ``head`` (its first 12 bytes or more) is HEIF."""
    return len(head) >= 12 and head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS


def enable_heif(name: str) -> None:
    """Let Pillow open HEIF files, or say how to make it able to (for the file ``name``)."""
    global _registered
    try:
        import pillow_heif
    except ImportError:
        raise ImageInputError(
            f"cannot read '{name}': it is a HEIF/HEIC photo, which needs the pillow-heif "
            "plugin: pip install pillow-heif (or convert it to JPEG or PNG)") from None
    if not _registered:
        pillow_heif.register_heif_opener()
        _registered = True
