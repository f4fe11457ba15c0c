"""Tests for m2ae_core.imageio and m2ae_core.png16 (small images, fast)."""

from __future__ import annotations

import io
import os
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from m2ae_core import png16
from m2ae_core.errors import ImageInputError
from m2ae_core.imageio import (
    MAX_PIXELS,
    ImageMeta,
    from_tensor,
    image_size,
    mask_to_tensor,
    read_image,
    save_image,
    to_tensor,
)

RNG = np.random.default_rng(1234)


def rand(shape, dtype):
    if np.dtype(dtype).kind == "f":
        return RNG.random(shape).astype(dtype)
    return RNG.integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)


def chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body))


def png_bytes(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    png16.encode_png(arr, buf, **kw)
    return buf.getvalue()


def pil_png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def filter_types(data: bytes, width: int, bpp: int) -> set[int]:
    """Row filter bytes of a (single-IDAT-stream) PNG."""
    idat = b""
    pos = 8
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        if data[pos + 4 : pos + 8] == b"IDAT":
            idat += data[pos + 8 : pos + 8 + n]
        pos += 12 + n
    raw = zlib.decompress(idat)
    stride = 1 + width * bpp
    return {raw[i] for i in range(0, len(raw), stride)}


def structured(shape, dtype):
    """Smooth gradients plus noise: makes adaptive filtering use several filter types."""
    h, w = shape[:2]
    top = np.iinfo(dtype).max
    yy, xx = np.mgrid[0:h, 0:w]
    base = (yy * 7 + xx * 13) * (top // 400)
    if len(shape) == 3:
        base = base[..., None] * np.arange(1, shape[2] + 1)
    noise = RNG.integers(0, top // 50 + 1, shape)
    out = (base + noise) % (top + 1)
    out[h // 2 :] = RNG.integers(0, top + 1, out[h // 2 :].shape)
    return out.astype(dtype)


# --------------------------------------------------------------------------- #
# png16 codec
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("shape", [(9, 11), (9, 11, 2), (7, 5, 3), (6, 8, 4), (1, 6, 3), (5, 1, 4)])
@pytest.mark.parametrize("filters", [None, 0, 1, 2, 3, 4, "mixed"])
def test_png16_roundtrip_every_filter(dtype, shape, filters):
    arr = rand(shape, dtype)
    if filters == "mixed":
        filters = [i % 5 for i in range(shape[0])][::-1]
    data = png_bytes(arr, filters=filters)
    out = png16.decode_png(data)
    assert out.dtype == dtype and out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)
    # independent check of the encoder: Pillow decodes 8-bit and 16-bit grey losslessly
    # and 16-bit colour as the high byte of every sample.
    pil = np.asarray(Image.open(io.BytesIO(data)))
    if dtype == np.uint8 or arr.ndim == 2:
        np.testing.assert_array_equal(pil, arr)
    elif shape[2] == 2:  # Pillow turns 16-bit grey+alpha into 8-bit RGBA
        np.testing.assert_array_equal(pil[..., 0], arr[..., 0] >> 8)
        np.testing.assert_array_equal(pil[..., 3], arr[..., 1] >> 8)
    else:
        np.testing.assert_array_equal(pil, (arr >> 8).astype(np.uint8))


def test_png16_decodes_pillow_written_files_with_mixed_filters():
    rgb = structured((40, 48, 3), np.uint8)
    data = pil_png_bytes(Image.fromarray(rgb))
    used = filter_types(data, 48, 3)
    assert len(used) >= 2 and used & {3, 4}, used  # exercises the wavefront path
    np.testing.assert_array_equal(png16.decode_png(data), rgb)

    grey16 = structured((30, 26), np.uint16)
    data = pil_png_bytes(Image.fromarray(grey16))
    assert data[24] == 16 and data[25] == 0  # 16-bit greyscale really
    assert len(filter_types(data, 26, 2)) >= 2
    np.testing.assert_array_equal(png16.decode_png(data), grey16)


def test_png16_known_bytes_sub_and_paeth():
    # 2x2 16-bit RGB, row 0 filtered with Sub, row 1 with Paeth, built by hand.
    px = np.array([[[1000, 2000, 3000], [1500, 2500, 65535]],
                   [[0, 1, 2], [40000, 50000, 60000]]], dtype=np.uint16)
    b = px.astype(">u2").view(np.uint8).reshape(2, 12).astype(int)
    row0 = [b[0, i] - (b[0, i - 6] if i >= 6 else 0) for i in range(12)]

    def paeth(a, up, c):
        p = a + up - c
        pa, pb, pc = abs(p - a), abs(p - up), abs(p - c)
        return a if pa <= pb and pa <= pc else (up if pb <= pc else c)

    row1 = [b[1, i] - paeth(b[1, i - 6] if i >= 6 else 0, b[0, i], b[0, i - 6] if i >= 6 else 0)
            for i in range(12)]
    raw = bytes([1] + [v & 255 for v in row0] + [4] + [v & 255 for v in row1])
    data = (png16.PNG_SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    np.testing.assert_array_equal(png16.decode_png(data), px)


def test_png16_rejects_interlaced_and_corrupt():
    data = bytearray(png_bytes(rand((4, 4, 3), np.uint16)))
    ihdr = bytes(data[12:29])
    interlaced = ihdr[:-1] + b"\x01"
    bad = bytes(data[:8]) + chunk(b"IHDR", interlaced[4:]) + bytes(data[33:])
    with pytest.raises(ImageInputError, match="interlaced"):
        png16.decode_png(bad)
    data[-20] ^= 0xFF  # inside IDAT: checksum mismatch
    with pytest.raises(ImageInputError, match="corrupt"):
        png16.decode_png(bytes(data))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_apply_orientation_matches_pillow(orientation):
    arr = rand((3, 5, 3), np.uint8)
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = orientation
    im.info["exif"] = exif.tobytes()
    expected = np.asarray(ImageOps.exif_transpose(im))
    np.testing.assert_array_equal(png16.apply_orientation(arr, orientation), expected)


# --------------------------------------------------------------------------- #
# read_image / save_image
# --------------------------------------------------------------------------- #
def test_exif_rotated_jpeg_comes_out_upright(tmp_path):
    arr = np.zeros((40, 80, 3), np.uint8)  # 80 wide, 40 tall as stored
    arr[:16, :16] = (255, 0, 0)  # marker at the stored top-left corner
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # display = stored rotated 90 degrees clockwise
    path = tmp_path / "rot.jpg"
    im.save(path, exif=exif.tobytes(), quality=95)

    out = read_image(path)
    assert out.size == (40, 80)  # width and height swapped
    assert image_size(path) == (80, 40)
    px = np.asarray(out.convert("RGB")).astype(int)
    # clockwise rotation moves the top-left corner to the top-right corner
    assert px[4, 35, 0] > 200 and px[4, 35, 1] < 60
    assert px[4, 4, 0] < 60
    assert px[75, 35, 0] < 60


def test_16bit_rgb_png_keeps_precision(tmp_path):
    arr = rand((13, 17, 3), np.uint16)
    arr[0, 0] = (65535, 256, 1000)
    path = tmp_path / "deep.png"
    save_image(arr, path)
    # the reason png16 exists: Pillow itself reduces this file to 8 bit
    with Image.open(path) as pil:
        assert pil.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(pil), (arr >> 8).astype(np.uint8))
    out = read_image(path)
    assert isinstance(out, np.ndarray) and out.dtype == np.uint16
    assert out.max() > 255
    np.testing.assert_array_equal(out, arr)
    # save -> read again is exact
    save_image(out, tmp_path / "again.png")
    np.testing.assert_array_equal(read_image(tmp_path / "again.png"), arr)


@pytest.mark.parametrize("shape", [(9, 7, 4), (9, 7, 2)])
def test_16bit_alpha_png_roundtrip(tmp_path, shape):
    arr = rand(shape, np.uint16)
    save_image(arr, tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.dtype == np.uint16 and out.shape == shape
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize("shape", [(8, 6), (8, 6, 1)])
def test_16bit_grey_png_roundtrip_via_pillow(tmp_path, shape):
    arr = rand(shape, np.uint16)
    save_image(arr, tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    assert isinstance(out, Image.Image) and out.mode.startswith("I;16")
    np.testing.assert_array_equal(np.asarray(out), arr.reshape(8, 6))
    x, meta = to_tensor(out)
    assert meta.scale == 65535.0
    back = from_tensor(x, meta)
    np.testing.assert_array_equal(np.asarray(back), arr.reshape(8, 6))


def test_16bit_png_with_exif_orientation_is_rotated(tmp_path):
    arr = rand((4, 6, 3), np.uint16)
    exif = Image.Exif()
    exif[0x0112] = 8
    data = png_bytes(arr)
    iend = data.rindex(b"IEND") - 4
    body = exif.tobytes()
    body = body[6:] if body.startswith(b"Exif\x00\x00") else body  # eXIf holds the bare TIFF block
    data = data[:iend] + chunk(b"eXIf", body) + data[iend:]
    (tmp_path / "r.png").write_bytes(data)
    out = read_image(tmp_path / "r.png")
    np.testing.assert_array_equal(out, np.rot90(arr, 1))


# BMP + RGBA is left out: BMP drops alpha (test_save_drops_alpha_with_warning)
@pytest.mark.parametrize(
    "ext,mode",
    [(e, m) for e in (".png", ".tif", ".bmp") for m in ("RGB", "RGBA", "L") if (e, m) != (".bmp", "RGBA")],
)
def test_8bit_lossless_save_read_roundtrip(tmp_path, ext, mode):
    im = Image.fromarray(rand((6, 9, len(mode)) if len(mode) > 1 else (6, 9), np.uint8))
    assert im.mode == mode
    save_image(im, tmp_path / f"x{ext}")
    out = read_image(tmp_path / f"x{ext}")
    np.testing.assert_array_equal(np.asarray(out.convert(mode)), np.asarray(im))


def test_read_errors(tmp_path):
    with pytest.raises(ImageInputError, match="does not exist"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(ImageInputError, match="folder"):
        read_image(tmp_path)
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageInputError, match="empty"):
        read_image(tmp_path / "empty.jpg")
    (tmp_path / "notes.png").write_text("this is not an image\n" * 20)
    with pytest.raises(ImageInputError, match="not an image"):
        read_image(tmp_path / "notes.png")
    with pytest.raises(ImageInputError, match="file path"):
        read_image(12345)


@pytest.mark.parametrize("fmt,ext", [("PNG", ".png"), ("JPEG", ".jpg")])
def test_truncated_files_fail_on_read(tmp_path, fmt, ext):
    buf = io.BytesIO()
    Image.fromarray(structured((64, 64, 3), np.uint8)).save(buf, format=fmt)
    data = buf.getvalue()
    path = tmp_path / f"cut{ext}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageInputError, match="truncated or corrupt") as info:
        read_image(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_truncated_16bit_png_fails(tmp_path):
    data = png_bytes(rand((32, 32, 3), np.uint16))
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageInputError, match="truncated"):
        read_image(tmp_path / "cut.png")


def test_huge_png_header_rejected_without_decoding(tmp_path):
    data = (png16.PNG_SIGNATURE
            + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b""))
    path = tmp_path / "bomb.png"
    path.write_bytes(data)
    tracemalloc.start()
    try:
        with pytest.raises(ImageInputError, match="limit") as info:
            read_image(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "30000x30000" in str(info.value) and f"{MAX_PIXELS:,}" in str(info.value)
    assert peak < 20 * 2**20  # 2.7 GB of pixels were never allocated


def test_huge_gif_header_rejected_by_pillow_path(tmp_path):
    # GIF logical screen + one image descriptor claiming 30000x30000
    gif = (b"GIF89a" + struct.pack("<HHBBB", 30000, 30000, 0, 0, 0)
           + b"," + struct.pack("<HHHHB", 0, 0, 30000, 30000, 0) + b"\x08\x02\x4c\x01\x00;")
    (tmp_path / "bomb.gif").write_bytes(gif)
    with pytest.raises(ImageInputError, match="limit"):
        read_image(tmp_path / "bomb.gif")


def test_max_pixels_mechanism(tmp_path):
    for ext in (".png", ".jpg"):
        path = tmp_path / f"small{ext}"
        save_image(rand((50, 40, 3), np.uint8), path)
        with pytest.raises(ImageInputError, match="40x50 = 2,000 pixels"):
            read_image(path, max_pixels=1999)
        assert read_image(path, max_pixels=2000).size == (40, 50)


def test_save_unsupported_extension_and_folder(tmp_path):
    img = rand((4, 4, 3), np.uint8)
    with pytest.raises(ImageInputError, match=r"\.png") as info:
        save_image(img, tmp_path / "x.gifx")
    assert ".jpg" in str(info.value)
    with pytest.raises(ImageInputError, match="does not exist"):
        save_image(img, tmp_path / "nope" / "x.png")
    with pytest.raises(ImageInputError, match="uint8 or uint16"):
        save_image(img.astype(np.float32), tmp_path / "x.png")
    with pytest.raises(ImageInputError, match="PIL image"):
        save_image(torch.zeros(1, 3, 4, 4), tmp_path / "x.png")


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "out.png"
    save_image(rand((5, 5, 3), np.uint16), path)
    original = path.read_bytes()

    def broken(arr, fh, **kw):
        fh.write(b"\x89PNG partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(png16, "encode_png", broken)
    with pytest.raises(ImageInputError, match="No space left"):
        save_image(rand((5, 5, 3), np.uint16), path)
    assert path.read_bytes() == original
    assert sorted(os.listdir(tmp_path)) == ["out.png"]  # no temp file left behind


def test_save_replaces_existing_and_leaves_no_temp(tmp_path):
    path = tmp_path / "o.png"
    a, b = rand((4, 4, 3), np.uint8), rand((4, 4, 3), np.uint8)
    save_image(a, path)
    save_image(b, path)
    np.testing.assert_array_equal(np.asarray(read_image(path)), b)
    assert os.listdir(tmp_path) == ["o.png"]


@pytest.mark.parametrize("ext", [".jpg", ".bmp"])
def test_save_drops_alpha_with_warning(tmp_path, ext):
    with pytest.warns(UserWarning, match="alpha"):
        save_image(Image.new("RGBA", (8, 8), (200, 10, 10, 128)), tmp_path / f"a{ext}")
    out = read_image(tmp_path / f"a{ext}")
    assert out.mode == "RGB" and abs(int(np.asarray(out)[4, 4, 0]) - 200) <= 3


def test_save_16bit_to_jpeg_warns(tmp_path):
    with pytest.warns(UserWarning, match="8 bits"):
        save_image(np.full((8, 8, 3), 65535, np.uint16), tmp_path / "b.jpg")
    assert np.asarray(read_image(tmp_path / "b.jpg")).min() >= 250


# --------------------------------------------------------------------------- #
# to_tensor / from_tensor
# --------------------------------------------------------------------------- #
def _check_model_tensor(x, batch, h, w):
    assert x.dtype == torch.float32 and tuple(x.shape) == (batch, 3, h, w)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


def _pil(mode):
    h, w = 5, 7
    if mode in ("RGB", "RGBA", "LA", "CMYK"):
        return Image.fromarray(rand((h, w, len(mode)), np.uint8)) if mode != "CMYK" \
            else Image.frombytes("CMYK", (w, h), rand((h, w, 4), np.uint8).tobytes())
    if mode == "L":
        return Image.fromarray(rand((h, w), np.uint8))
    if mode == "1":
        return Image.fromarray(rand((h, w), np.uint8) > 127)
    if mode == "I;16":
        return Image.fromarray(rand((h, w), np.uint16))
    if mode == "I":
        return Image.fromarray(rand((h, w), np.uint16).astype(np.int32))
    if mode == "F":
        return Image.fromarray(rand((h, w), np.float32))
    if mode == "P":
        im = Image.fromarray(rand((h, w), np.uint8)).convert("P")
        im.putpalette(list(rand((768,), np.uint8)))
        return im
    raise AssertionError(mode)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "1", "I;16", "I", "F"])
def test_pil_roundtrip_exact(mode):
    im = _pil(mode)
    assert im.mode == mode
    x, meta = to_tensor(im)
    _check_model_tensor(x, 1, 5, 7)
    assert meta.kind == "pil" and meta.mode == mode
    out = from_tensor(x, meta)
    assert isinstance(out, Image.Image) and out.mode == mode and out.size == im.size
    np.testing.assert_array_equal(np.asarray(out), np.asarray(im))


def test_pil_palette_without_transparency_becomes_rgb():
    im = _pil("P")
    x, meta = to_tensor(im)
    out = from_tensor(x, meta)
    assert out.mode == "RGB" and meta.alpha is None
    np.testing.assert_array_equal(np.asarray(out), np.asarray(im.convert("RGB")))


def test_palette_with_transparency(tmp_path):
    idx = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    im = Image.fromarray(idx).convert("P")
    im.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
    im.info["transparency"] = 1
    im.save(tmp_path / "p.png")
    loaded = read_image(tmp_path / "p.png")
    assert loaded.mode == "P"
    x, meta = to_tensor(loaded)
    np.testing.assert_array_equal(meta.alpha, np.where(idx == 1, 0, 255))
    np.testing.assert_allclose(x[0, :, 0, 0].numpy(), [1, 0, 0])
    out = from_tensor(x, meta)
    assert out.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(out), np.asarray(loaded.convert("RGBA")))


def test_la_alpha_carried_through_untouched():
    grey = rand((6, 5), np.uint8)
    alpha = rand((6, 5), np.uint8)
    im = Image.fromarray(np.stack([grey, alpha], -1))
    assert im.mode == "LA"
    x, meta = to_tensor(im)
    out = from_tensor(1.0 - x, meta)  # the model changed the colour
    res = np.asarray(out)
    assert out.mode == "LA"
    np.testing.assert_array_equal(res[..., 1], alpha)
    np.testing.assert_array_equal(res[..., 0], 255 - grey)


def test_cmyk_is_converted_to_rgb():
    im = _pil("CMYK")
    x, meta = to_tensor(im)
    out = from_tensor(x, meta)
    assert out.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(out), np.asarray(im.convert("RGB")))


def test_grey_output_is_bt601_luma():
    im = Image.fromarray(np.zeros((2, 3), np.uint8))
    _, meta = to_tensor(im)
    x = torch.zeros(1, 3, 2, 3)
    x[:, 0], x[:, 1], x[:, 2] = 1.0, 0.5, 0.0
    out = np.asarray(from_tensor(x, meta))
    assert (out == round(255 * (0.299 + 0.587 * 0.5))).all()


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("shape", [(5, 6), (5, 6, 1), (5, 6, 2), (5, 6, 3), (5, 6, 4)])
def test_numpy_roundtrip_exact(dtype, shape):
    arr = rand(shape, dtype)
    arr.flat[0] = np.iinfo(dtype).max
    x, meta = to_tensor(arr)
    _check_model_tensor(x, 1, 5, 6)
    assert meta.kind == "numpy" and meta.scale == (255 if dtype == np.uint8 else 65535)
    out = from_tensor(x, meta)
    assert out.dtype == arr.dtype and out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_float_roundtrip_and_clamp(dtype):
    arr = rand((4, 5, 4), dtype)
    x, meta = to_tensor(arr)
    out = from_tensor(x, meta)
    assert out.dtype == dtype and out.shape == arr.shape
    np.testing.assert_allclose(out, arr, atol=1e-6)
    np.testing.assert_array_equal(out[..., 3], arr[..., 3])  # alpha is untouched, exactly
    wide = np.array([[-0.5, 1.7]], dtype)
    y, _ = to_tensor(wide)
    assert y.min() == 0.0 and y.max() == 1.0


def test_quantisation_rounds_to_nearest():
    _, meta = to_tensor(np.zeros((1, 1, 3), np.uint8))
    out = from_tensor(torch.full((1, 3, 1, 1), 10.6 / 255), meta)
    assert out.tolist() == [[[11, 11, 11]]]
    _, meta16 = to_tensor(np.zeros((1, 1), np.uint16))
    assert from_tensor(torch.full((1, 3, 1, 1), 1000.7 / 65535), meta16).tolist() == [[1001]]


@pytest.mark.parametrize(
    "shape,dtype,kind",
    [
        ((2, 3, 5, 6), torch.float32, "torch_nchw"),
        ((1, 4, 5, 6), torch.uint8, "torch_nchw"),
        ((2, 1, 5, 6), torch.float16, "torch_nchw"),
        ((3, 5, 6), torch.float32, "torch_nchw"),  # CHW
        ((1, 5, 6), torch.float64, "torch_nchw"),
        ((2, 5, 6, 3), torch.float32, "torch_bhwc"),  # ComfyUI IMAGE
        ((1, 5, 6, 4), torch.float32, "torch_bhwc"),
        ((1, 3, 5, 6), torch.uint16, "torch_nchw"),
    ],
)
def test_torch_roundtrip(shape, dtype, kind):
    if dtype.is_floating_point:
        t = torch.rand(shape, dtype=torch.float64).to(dtype)
    else:
        top = 255 if dtype == torch.uint8 else 65535
        t = torch.randint(0, top + 1, shape, dtype=torch.int64).to(dtype)
    x, meta = to_tensor(t)
    assert meta.kind == kind and meta.device == t.device
    batch = shape[0] if len(shape) == 4 else 1
    h, w = (shape[1], shape[2]) if kind == "torch_bhwc" else shape[-2:]
    _check_model_tensor(x, batch, h, w)
    out = from_tensor(x, meta)
    assert out.dtype == t.dtype and out.shape == t.shape and out.device == t.device
    if dtype in (torch.uint8, torch.uint16):
        assert torch.equal(out.to(torch.int64), t.to(torch.int64))
    else:
        assert torch.allclose(out.double(), t.double(), atol=1e-3 if dtype == torch.float16 else 1e-6)


def test_torch_alpha_is_kept_exactly():
    t = torch.rand(2, 6, 5, 4)
    x, meta = to_tensor(t)
    out = from_tensor(torch.zeros_like(x), meta)
    assert torch.equal(out[..., 3], t[..., 3]) and float(out[..., :3].abs().max()) == 0.0


def test_torch_layout_disambiguation():
    amb = torch.rand(1, 3, 5, 3)  # dim1 and last dim both look like channels
    _, meta = to_tensor(amb)
    assert meta.kind == "torch_bhwc" and (meta.height, meta.width) == (3, 5)
    _, meta = to_tensor((amb * 255).to(torch.uint8))
    assert meta.kind == "torch_nchw" and (meta.height, meta.width) == (5, 3)
    assert image_size(amb) == (3, 5)
    assert image_size(torch.rand(2, 3, 7, 9)) == (7, 9)
    assert image_size(torch.rand(3, 7, 9)) == (7, 9)
    assert image_size(torch.rand(2, 7, 9, 4)) == (7, 9)
    assert image_size(np.zeros((7, 9))) == (7, 9)
    assert image_size(Image.new("RGB", (9, 7))) == (7, 9)
    with pytest.raises(ImageInputError):
        to_tensor(torch.rand(1, 5, 6, 7))


@pytest.mark.parametrize(
    "bad,match",
    [
        (np.array([[0.1, np.nan]], np.float32), "NaN or Inf"),
        (torch.tensor([[[[0.0, float("inf")]]]]).expand(1, 3, 1, 2), "NaN or Inf"),
        (Image.fromarray(np.array([[np.nan, 0.0]], np.float32)), "NaN or Inf"),
        (np.zeros((0, 4, 3), np.uint8), "empty"),
        (torch.zeros(1, 3, 0, 4), "empty"),
        (Image.new("RGB", (0, 0)), "empty"),
        ([[1, 2], [3, 4]], "PIL image, a numpy array"),
        (np.zeros((4, 4), np.int32), "uint8, uint16"),
        (np.zeros((3, 4, 5), np.uint8), "HW or HWC"),
    ],
)
def test_to_tensor_rejects_bad_input(bad, match):
    with pytest.raises(ImageInputError, match=match) as info:
        to_tensor(bad)
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)


def test_from_tensor_checks_shape_and_nan():
    x, meta = to_tensor(np.zeros((4, 5, 3), np.uint8))
    assert isinstance(meta, ImageMeta)
    with pytest.raises(ImageInputError, match="shape"):
        from_tensor(torch.zeros(1, 3, 8, 10), meta)
    with pytest.raises(ImageInputError, match="NaN"):
        from_tensor(torch.full_like(x, float("nan")), meta)


def test_read_image_output_feeds_to_tensor(tmp_path):
    arr = rand((6, 4, 4), np.uint16)
    save_image(arr, tmp_path / "c.png")
    img = read_image(tmp_path / "c.png")
    x, meta = to_tensor(img)
    np.testing.assert_array_equal(from_tensor(x, meta), arr)


# --------------------------------------------------------------------------- #
# masks
# --------------------------------------------------------------------------- #
def test_mask_low_res_is_upscaled():
    low = np.zeros((4, 4), np.uint8)
    low[:, :2] = 255
    m = mask_to_tensor(low, 8, 16)
    assert m.dtype == torch.bool and tuple(m.shape) == (1, 1, 8, 16)
    assert m[0, 0, :, :8].all() and not m[0, 0, :, 8:].any()


def test_mask_high_res_is_downscaled_and_thresholded():
    hi = np.zeros((64, 64), np.float32)
    hi[:, :16] = 1.0
    hi[:, 16:32] = 0.4  # below threshold
    m = mask_to_tensor(torch.from_numpy(hi), 4, 4)
    assert m[0, 0].tolist() == [[True, False, False, False]] * 4


def test_mask_rgba_painted_uses_alpha():
    rgba = np.zeros((6, 6, 4), np.uint8)  # black brush on a transparent layer
    rgba[1:3, 2:5, 3] = 255
    m = mask_to_tensor(Image.fromarray(rgba), 6, 6)
    np.testing.assert_array_equal(m[0, 0].numpy(), rgba[..., 3] > 0)
    # red brush on transparent white: colour max is constant, alpha decides
    rgba2 = np.full((6, 6, 4), 255, np.uint8)
    rgba2[..., 3] = 0
    rgba2[3:, :2] = (255, 0, 0, 255)
    m2 = mask_to_tensor(rgba2, 6, 6)
    np.testing.assert_array_equal(m2[0, 0].numpy(), rgba2[..., 3] > 0)
    # fully opaque RGBA: the colour is the mask
    rgba3 = np.zeros((6, 6, 4), np.uint8)
    rgba3[..., 3] = 255
    rgba3[:2, :, 1] = 255
    m3 = mask_to_tensor(rgba3, 6, 6)
    np.testing.assert_array_equal(m3[0, 0].numpy(), rgba3[..., 1] > 0)
    # LA mask painted white on black, alpha opaque: grey is the mask
    la = np.stack([rgba3[..., 1], np.full((6, 6), 255, np.uint8)], -1)
    np.testing.assert_array_equal(mask_to_tensor(Image.fromarray(la), 6, 6)[0, 0].numpy(), la[..., 0] > 0)


def test_mask_rgb_uses_channel_max():
    rgb = np.zeros((3, 3, 3), np.uint8)
    rgb[0, 0, 2] = 200
    rgb[1, 1, 0] = 100  # below 0.5
    m = mask_to_tensor(Image.fromarray(rgb), 3, 3)
    assert m[0, 0].nonzero().tolist() == [[0, 0]]


def test_mask_comfyui_batch():
    masks = torch.zeros(2, 5, 5)
    masks[0, :2] = 1.0
    masks[1, :, :1] = 1.0
    m = mask_to_tensor(masks, 10, 10, batch=2)
    assert tuple(m.shape) == (2, 1, 10, 10)
    assert m[0, 0, :4].all() and not m[0, 0, 4:].any()
    assert m[1, 0, :, :2].all() and not m[1, 0, :, 2:].any()
    with pytest.raises(ImageInputError, match="2 masks but the image batch has 3"):
        mask_to_tensor(masks, 10, 10, batch=3)
    single = mask_to_tensor(masks[:1, None], 5, 5, batch=3)
    assert tuple(single.shape) == (3, 1, 5, 5) and torch.equal(single[0], single[2])
    assert torch.equal(single[1, 0], masks[0] >= 0.5)


def test_mask_kinds_and_dtypes(tmp_path):
    ref = np.zeros((4, 6), bool)
    ref[1:3, 2:5] = True
    variants = [
        ref,
        ref.astype(np.uint16) * 65535,
        ref.astype(np.float64),
        ref.astype(np.int64),
        ref[..., None].astype(np.uint8) * 255,
        Image.fromarray(ref),
        Image.fromarray(ref.astype(np.uint8) * 255).convert("RGB"),
        torch.from_numpy(ref),
        torch.from_numpy(ref)[None, None].float(),
    ]
    Image.fromarray(ref.astype(np.uint8) * 255).save(tmp_path / "m.png")
    variants.append(tmp_path / "m.png")
    variants.append(str(tmp_path / "m.png"))
    for v in variants:
        m = mask_to_tensor(v, 4, 6)
        np.testing.assert_array_equal(m[0, 0].numpy(), ref, err_msg=repr(type(v)))


@pytest.mark.parametrize(
    "bad,match",
    [
        (np.array([[0.0, np.nan]]), "NaN or Inf"),
        (torch.tensor([[0.0, float("nan")]]), "NaN or Inf"),
        (np.array([[0, 5]], np.int64), "only 0 and 1"),
        (np.zeros((0, 3)), "empty"),
        (object(), "unsupported mask type"),
    ],
)
def test_mask_rejects_bad_input(bad, match):
    with pytest.raises(ImageInputError, match=match):
        mask_to_tensor(bad, 4, 4)


def test_mask_size_arguments_validated():
    with pytest.raises(ImageInputError, match="height"):
        mask_to_tensor(np.ones((2, 2)), 0, 4)


# --------------------------------------------------------------------------- 16-bit TIFF

def _tiff16(path, arr, **kwargs):
    tifffile = pytest.importorskip("tifffile")  # in the test extra; CI has it
    tifffile.imwrite(path, arr, photometric="rgb", **kwargs)
    return path


@pytest.mark.parametrize("planar", [False, True])
def test_16bit_colour_tiff_keeps_all_16_bits(tmp_path, planar):
    arr = np.random.default_rng(7).integers(0, 65536, (20, 30, 3)).astype(np.uint16)
    if planar:
        path = _tiff16(tmp_path / "p.tif", np.moveaxis(arr, -1, 0), planarconfig="separate",
                       compression="zlib")
    else:
        path = _tiff16(tmp_path / "c.tif", arr)
    assert Image.open(path).mode == "RGB"  # what Pillow alone would give: 8 bits
    out = read_image(path)
    assert isinstance(out, np.ndarray) and out.dtype == np.uint16
    assert np.array_equal(out, arr)


def test_16bit_tiff_orientation_and_the_cli_writes_16_bits(tmp_path):
    from m2ae_core import build_model, save_weights
    from m2ae_core.cli import main

    arr = np.random.default_rng(8).integers(0, 65536, (20, 30, 3)).astype(np.uint16)
    path = _tiff16(tmp_path / "o.tif", arr, extratags=[(274, "H", 1, 6, True)])  # rotate 90
    assert np.array_equal(read_image(path), png16.apply_orientation(arr, 6))
    weights = tmp_path / "w.safetensors"
    save_weights(build_model("small", width=8), weights)
    assert main(["deblur", str(path), "-o", str(tmp_path / "r.png"), "--weights", str(weights)]) == 0
    restored = read_image(tmp_path / "r.png")
    assert restored.dtype == np.uint16 and restored.shape == (30, 20, 3)


def test_16bit_tiff_without_tifffile_warns_and_reads_8_bits(tmp_path, monkeypatch):
    import sys

    arr = np.random.default_rng(9).integers(0, 65536, (20, 30, 3)).astype(np.uint16)
    path = _tiff16(tmp_path / "n.tif", arr)
    monkeypatch.setitem(sys.modules, "tifffile", None)
    with pytest.warns(UserWarning, match="16-bit colour TIFF; reading it at 8 bits.*tifffile"):
        out = read_image(path)
    assert np.asarray(out).dtype == np.uint8 and np.asarray(out).shape == (20, 30, 3)


def test_png_outputs_use_the_faster_compression_level(tmp_path, monkeypatch):
    """PNG results are written at zlib level PNG_COMPRESS_LEVEL, 8-bit and 16-bit alike."""
    import zlib

    from m2ae_core import image_files

    levels = []
    real = zlib.compressobj

    def spy(level=-1, *args, **kwargs):
        levels.append(level)
        return real(level, *args, **kwargs)

    rng = np.random.default_rng(3)
    deep = rng.integers(0, 65536, (16, 16, 3), dtype=np.uint16)
    monkeypatch.setattr(zlib, "compressobj", spy)
    save_image(deep, tmp_path / "deep.png")
    assert levels and set(levels) == {image_files.PNG_COMPRESS_LEVEL}
    assert np.array_equal(read_image(tmp_path / "deep.png"), deep)

    flat = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    save_image(flat, tmp_path / "a.png")
    flat.save(tmp_path / "b.png", compress_level=image_files.PNG_COMPRESS_LEVEL)
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
