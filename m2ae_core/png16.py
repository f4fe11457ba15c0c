"""Small PNG codec (numpy + zlib) for the cases Pillow gets wrong.

Pillow decodes 16-bit greyscale PNGs losslessly (mode ``I;16``) but silently
reduces 16-bit RGB, RGBA and grey+alpha PNGs to 8 bit, and it cannot write
them at all.  This module reads and writes exactly those files:

* :func:`read_header` parses the signature and IHDR chunk only (cheap; used to
  check the size before anything is decoded).
* :func:`decode_png` decodes non-interlaced, non-palette PNGs with 8 or 16 bits
  per sample (colour types 0 grey, 2 RGB, 4 grey+alpha, 6 RGBA), all five
  filter types, and returns a numpy array: (H, W) for grey, (H, W, C)
  otherwise, dtype uint8 or uint16.  A 16-bit RGB ``tRNS`` colour key becomes
  an alpha channel (0 where the key matches, 65535 elsewhere).
* :func:`encode_png` writes such an array (uint8 or uint16; HW or HWC with
  C in 1..4) as a PNG with per-row adaptive filtering.

Every problem is reported as :class:`~m2ae_core.errors.ImageInputError` with a
one-line message.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Sequence

import numpy as np

from .errors import ImageInputError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

#: samples per pixel for each supported colour type
_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}
_COLOUR_FOR_CHANNELS = {1: 0, 3: 2, 2: 4, 4: 6}
_CRITICAL = {b"IHDR", b"PLTE", b"IDAT", b"IEND"}
_IDAT_SPLIT = 1 << 20  # bytes of compressed data per IDAT chunk when writing
_ENCODE_ROWS = 256  # rows filtered at once when writing (bounds memory)


@dataclass(frozen=True)
class PngHeader:
    """Fields of the IHDR chunk."""

    width: int
    height: int
    bit_depth: int
    colour_type: int
    interlace: int

    @property
    def channels(self) -> int:
        """Samples per pixel (palette images count as 1)."""
        return _CHANNELS.get(self.colour_type, 1)


def _name(source: str) -> str:
    return f"'{source}'" if source else "the PNG data"


def read_header(data: bytes, source: str = "") -> PngHeader | None:
    """Parse the IHDR of PNG ``data`` (at least the first 33 bytes).

    Returns None when ``data`` does not start with the PNG signature, and
    raises ImageInputError when it does but the header is damaged.
    """
    if not data.startswith(PNG_SIGNATURE):
        return None
    if len(data) < 33:
        raise ImageInputError(
            f"cannot read {_name(source)}: PNG file is truncated (re-export or re-download it)"
        )
    length, ctype = struct.unpack(">I4s", data[8:16])
    body = data[16:29]
    (crc,) = struct.unpack(">I", data[29:33])
    if ctype != b"IHDR" or length != 13 or zlib.crc32(ctype + body) != crc:
        raise ImageInputError(
            f"cannot read {_name(source)}: PNG header is corrupt (re-export or re-download it)"
        )
    width, height, depth, colour, _comp, _filt, interlace = struct.unpack(">IIBBBBB", body)
    return PngHeader(width, height, depth, colour, interlace)


def _iter_chunks(data: bytes, source: str):
    """Yield (type, body) for every chunk; checks CRCs of critical chunks."""
    pos = len(PNG_SIGNATURE)
    end = len(data)
    while True:
        if pos + 8 > end:
            raise ImageInputError(
                f"cannot read {_name(source)}: PNG file is truncated (re-export or re-download it)"
            )
        length, ctype = struct.unpack(">I4s", data[pos : pos + 8])
        if pos + 12 + length > end:
            raise ImageInputError(
                f"cannot read {_name(source)}: PNG file is truncated (re-export or re-download it)"
            )
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        pos += 12 + length
        if zlib.crc32(ctype + body) != crc:
            if ctype in _CRITICAL:
                raise ImageInputError(
                    f"cannot read {_name(source)}: PNG {ctype.decode('latin-1')} chunk is "
                    "corrupt (checksum mismatch; re-export or re-download it)"
                )
            continue  # damaged ancillary chunk: ignore it, as decoders are allowed to
        yield ctype, body
        if ctype == b"IEND":
            return


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Paeth predictor on int16 arrays."""
    p = a + b - c
    pa = np.abs(p - a)
    pb = np.abs(p - b)
    pc = np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def _unfilter(raw: np.ndarray, height: int, width: int, bpp: int) -> np.ndarray:
    """Undo PNG row filters.  ``raw``: uint8 of size height*(1+width*bpp).

    Returns uint8 (height, width, bpp) of reconstructed bytes.
    """
    rows = raw.reshape(height, 1 + width * bpp)
    ftypes = rows[:, 0]
    filt = rows[:, 1:].reshape(height, width, bpp)
    if ftypes.size and int(ftypes.max()) > 4:
        raise ImageInputError(
            "cannot decode PNG: unknown row filter type (file is corrupt; re-export or re-download it)"
        )
    out = np.empty((height, width, bpp), dtype=np.uint8)
    if not np.isin(ftypes, (3, 4)).any():
        # None / Sub / Up only: row by row, each row vectorised.
        prev = np.zeros((width, bpp), dtype=np.uint8)
        for y in range(height):
            f = ftypes[y]
            if f == 0:
                cur = filt[y]
            elif f == 1:
                cur = np.cumsum(filt[y], axis=0, dtype=np.uint8)  # wraps modulo 256
            else:
                cur = filt[y] + prev  # uint8 addition wraps modulo 256
            out[y] = cur
            prev = out[y]
        return out

    # Average / Paeth present: pixel (y, x) needs its reconstructed left, upper
    # and upper-left neighbours, so process anti-diagonals x + y = t (a
    # wavefront); all pixels of one diagonal are independent.  With a zero
    # border row/column the diagonal is a strided slice of the flat arrays.
    rec = np.zeros((height + 1, width + 1, bpp), dtype=np.uint8)
    rflat = rec.reshape(-1, bpp)
    fpad = np.zeros((height, width + 1, bpp), dtype=np.uint8)
    fpad[:, :width] = filt
    fflat = fpad.reshape(-1, bpp)
    types = ftypes.astype(np.intp)
    for t in range(height + width - 1):
        y0 = max(0, t - width + 1)
        y1 = min(height - 1, t)
        n = y1 - y0 + 1
        # padded index of (y, x=t-y) is (y+1)*(width+1) + (t-y) + 1 = y*width + width + t + 2
        start = y0 * width + width + t + 2
        stop = start + (n - 1) * width + 1
        a = rflat[start - 1 : stop - 1 : width].astype(np.int16)
        b = rflat[start - width - 1 : stop - width - 1 : width].astype(np.int16)
        c = rflat[start - width - 2 : stop - width - 2 : width].astype(np.int16)
        fstart = y0 * width + t  # index of (y, t-y) in fpad is y*(width+1) + t - y
        fd = fflat[fstart : fstart + (n - 1) * width + 1 : width]
        ty = types[y0 : y1 + 1]
        kinds = np.unique(ty)
        if kinds.size == 1:
            k = kinds[0]
            if k == 0:
                pred = 0
            elif k == 1:
                pred = a
            elif k == 2:
                pred = b
            elif k == 3:
                pred = (a + b) >> 1
            else:
                pred = _paeth(a, b, c)
        else:
            pred = np.zeros_like(a)
            for k in kinds:
                sel = ty == k
                if k == 1:
                    pred[sel] = a[sel]
                elif k == 2:
                    pred[sel] = b[sel]
                elif k == 3:
                    pred[sel] = (a[sel] + b[sel]) >> 1
                elif k == 4:
                    pred[sel] = _paeth(a[sel], b[sel], c[sel])
        rflat[start:stop:width] = (fd + pred) & 0xFF
    return rec[1:, 1:]


def _exif_orientation(body: bytes) -> int:
    """Orientation tag (1..8) of an eXIf chunk, 1 when absent or unreadable."""
    try:
        from PIL import Image

        exif = Image.Exif()
        exif.load(body)
        value = int(exif.get(0x0112, 1))
    except Exception:  # a broken EXIF block must not make the image unreadable
        return 1
    return value if 1 <= value <= 8 else 1


def apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Make an (H, W[, C]) array upright for an EXIF orientation value.

    Matches ``PIL.ImageOps.exif_transpose``.
    """
    if orientation == 2:
        arr = arr[:, ::-1]
    elif orientation == 3:
        arr = arr[::-1, ::-1]
    elif orientation == 4:
        arr = arr[::-1]
    elif orientation == 5:
        arr = arr.swapaxes(0, 1)
    elif orientation == 6:
        arr = np.rot90(arr, k=-1)
    elif orientation == 7:
        arr = arr[::-1, ::-1].swapaxes(0, 1)
    elif orientation == 8:
        arr = np.rot90(arr, k=1)
    return np.ascontiguousarray(arr)


def decode_png(data: bytes, source: str = "", apply_exif: bool = True) -> np.ndarray:
    """Decode PNG bytes into a numpy array (see module docstring).

    ``apply_exif``: rotate/flip according to an ``eXIf`` chunk so the result
    is upright (as ``read_image`` does for every other file).
    """
    header = read_header(data, source)
    if header is None:
        raise ImageInputError(
            f"cannot read {_name(source)}: not a PNG file (check the file or its extension)"
        )
    if header.width == 0 or header.height == 0:
        raise ImageInputError(f"cannot read {_name(source)}: image has zero width or height")
    if header.colour_type not in _CHANNELS or header.bit_depth not in (8, 16):
        raise ImageInputError(
            f"cannot decode {_name(source)}: PNG colour type {header.colour_type} with "
            f"{header.bit_depth}-bit samples is not supported by the 16-bit decoder "
            "(re-save it as 8- or 16-bit RGB/RGBA/grey)"
        )
    if header.interlace != 0:
        raise ImageInputError(
            f"cannot read {_name(source)}: interlaced (Adam7) {header.bit_depth}-bit PNGs are "
            "not supported (re-save it without interlacing)"
        )
    idat: list[bytes] = []
    trns = None
    orientation = 1
    for ctype, body in _iter_chunks(data, source):
        if ctype == b"IDAT":
            idat.append(body)
        elif ctype == b"tRNS":
            trns = body
        elif ctype == b"eXIf":
            orientation = _exif_orientation(body)
    if not idat:
        raise ImageInputError(
            f"cannot read {_name(source)}: PNG has no image data (file is truncated or corrupt; "
            "re-export or re-download it)"
        )
    channels = _CHANNELS[header.colour_type]
    sample_bytes = header.bit_depth // 8
    bpp = channels * sample_bytes
    expected = header.height * (1 + header.width * bpp)
    dec = zlib.decompressobj()
    try:
        raw = dec.decompress(b"".join(idat), expected)
    except zlib.error:
        raw = b""
    if len(raw) != expected:
        raise ImageInputError(
            f"cannot read {_name(source)}: PNG image data is truncated or corrupt "
            "(re-export or re-download it)"
        )
    recon = _unfilter(np.frombuffer(raw, dtype=np.uint8), header.height, header.width, bpp)
    if sample_bytes == 2:
        pixels = recon.reshape(header.height, header.width * bpp).view(">u2").astype(np.uint16)
    else:
        pixels = recon.reshape(header.height, header.width * bpp)
    pixels = pixels.reshape(header.height, header.width, channels)
    if header.colour_type == 2 and trns is not None and len(trns) == 6:
        key = np.array(struct.unpack(">HHH", trns), dtype=np.uint16)
        if sample_bytes == 1:
            key = key.astype(np.uint8)
        full = np.iinfo(pixels.dtype).max
        alpha = np.where((pixels == key).all(axis=2), 0, full).astype(pixels.dtype)
        pixels = np.concatenate([pixels, alpha[..., None]], axis=2)
    if channels == 1:
        pixels = pixels[..., 0]
    if apply_exif and orientation != 1:
        pixels = apply_orientation(pixels, orientation)
    return np.ascontiguousarray(pixels)


def _chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body))


def _filter_block(block: np.ndarray, prev: np.ndarray, bpp: int, choice) -> tuple[np.ndarray, np.ndarray]:
    """Filter rows ``block`` (n, stride) uint8 given the row above ``prev``.

    Returns (filter types (n,), filtered bytes (n, stride)).
    """
    x = block.astype(np.int16)
    b = np.concatenate([prev[None].astype(np.int16), x[:-1]], axis=0)
    a = np.zeros_like(x)
    a[:, bpp:] = x[:, :-bpp]
    c = np.zeros_like(x)
    c[:, bpp:] = b[:, :-bpp]
    candidates = np.stack(
        [x, x - a, x - b, x - ((a + b) >> 1), x - _paeth(a, b, c)], axis=0
    ) & 0xFF  # (5, n, stride)
    n = block.shape[0]
    if choice is None:
        signed = np.where(candidates > 127, 256 - candidates, candidates)
        types = signed.sum(axis=2, dtype=np.int64).argmin(axis=0)
    else:
        types = np.asarray(choice, dtype=np.intp)
    rows = candidates[types, np.arange(n)].astype(np.uint8)
    return types.astype(np.uint8), rows


def encode_png(
    arr: np.ndarray,
    out: BinaryIO,
    compress_level: int = 6,
    filters: int | Sequence[int] | None = None,
    extra_chunks: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """Write ``arr`` as PNG to the binary file object ``out``.

    ``arr``: uint8 or uint16, (H, W) or (H, W, C) with C = 1 (grey),
    2 (grey+alpha), 3 (RGB), 4 (RGBA).  ``filters``: None for per-row
    adaptive filtering (minimum sum of absolute differences), or one filter
    type 0..4 for every row, or one per row (mainly for tests).
    ``extra_chunks``: (type, body) pairs written before the image data
    (iCCP, eXIf: :func:`m2ae_core.photo_metadata.png_chunks`).
    """
    if not isinstance(arr, np.ndarray) or arr.dtype not in (np.uint8, np.uint16):
        raise ImageInputError("PNG writer needs a uint8 or uint16 numpy array")
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in _COLOUR_FOR_CHANNELS:
        raise ImageInputError(
            f"PNG writer needs an (H, W) or (H, W, C) array with C in 1..4, got shape {arr.shape}"
        )
    height, width, channels = arr.shape
    if height == 0 or width == 0:
        raise ImageInputError("cannot write an empty image (zero width or height)")
    depth = 8 * arr.dtype.itemsize
    bpp = channels * arr.dtype.itemsize
    data = np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder(">"), copy=False))
    rows = data.reshape(height, -1).view(np.uint8).reshape(height, width * bpp)
    if filters is None or isinstance(filters, (int, np.integer)):
        per_row = None if filters is None else np.full(height, int(filters))
    else:
        per_row = np.asarray(filters, dtype=np.intp)
        if per_row.shape != (height,):
            raise ValueError("filters must be None, one int, or one int per row")
    if per_row is not None and ((per_row < 0) | (per_row > 4)).any():
        raise ValueError("PNG filter types are 0..4")

    out.write(PNG_SIGNATURE)
    out.write(_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth,
                                          _COLOUR_FOR_CHANNELS[channels], 0, 0, 0)))
    for ctype, body in extra_chunks:
        out.write(_chunk(ctype, body))
    comp = zlib.compressobj(compress_level)
    pending = bytearray()
    prev = np.zeros(width * bpp, dtype=np.uint8)
    for y0 in range(0, height, _ENCODE_ROWS):
        block = rows[y0 : y0 + _ENCODE_ROWS]
        choice = None if per_row is None else per_row[y0 : y0 + block.shape[0]]
        types, filtered = _filter_block(block, prev, bpp, choice)
        prev = block[-1]
        payload = np.concatenate([types[:, None], filtered], axis=1)
        pending += comp.compress(payload.tobytes())
        while len(pending) >= _IDAT_SPLIT:
            out.write(_chunk(b"IDAT", bytes(pending[:_IDAT_SPLIT])))
            del pending[:_IDAT_SPLIT]
    pending += comp.flush()
    for i in range(0, len(pending), _IDAT_SPLIT):
        out.write(_chunk(b"IDAT", bytes(pending[i : i + _IDAT_SPLIT])))
    out.write(_chunk(b"IEND", b""))
