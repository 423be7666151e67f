"""Safe image decoding: every hostile or unusual image becomes RGB or a one-line error, never an exception.

All images here are generated: gradients, flat colours, shapes and noise.
"""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from analyzer.ingest.images import MAX_PIXELS, decode_image, to_rgb


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _gradient(w=64, h=48) -> Image.Image:
    x = np.linspace(0, 255, w, dtype=np.uint8)[None, :, None]
    y = np.linspace(0, 255, h, dtype=np.uint8)[:, None, None]
    arr = np.concatenate([np.broadcast_to(x, (h, w, 1)), np.broadcast_to(y, (h, w, 1)),
                          np.full((h, w, 1), 128, np.uint8)], axis=2)
    return Image.fromarray(np.ascontiguousarray(arr), "RGB")


def _png_with_header(width: int, height: int) -> bytes:
    """A real 1x1 PNG whose IHDR is rewritten to claim another size (CRC fixed): a bomb/huge header."""
    data = bytearray(_save(Image.new("L", (1, 1), 0), "PNG"))
    ihdr = bytearray(data[16:29])
    ihdr[0:8] = struct.pack(">II", width, height)
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr)) & 0xFFFFFFFF)
    return bytes(data)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF"])
def test_common_formats_decode_to_rgb(fmt):
    img, err = decode_image(_save(_gradient(), fmt))
    assert err is None
    assert img.mode == "RGB" and img.size == (64, 48)


@pytest.mark.parametrize("data", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, b"\xff\xd8\xff"])
def test_garbage_is_an_error(data):
    img, err = decode_image(data)
    assert img is None and err


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_truncated_images_are_errors_not_partial_images(fmt):
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8), "RGB")
    data = _save(noise, fmt)
    img, err = decode_image(data[: len(data) // 2])
    assert img is None
    assert "undecodable" in err


def test_decompression_bomb_header_is_refused_before_decoding():
    img, err = decode_image(_png_with_header(100_000, 100_000))  # 10^10 pixels: PIL's own check fires too
    assert img is None and "bomb" in err
    img, err = decode_image(_png_with_header(9000, 9000))  # 81 Mpx: above our limit, below PIL's error level
    assert img is None and "bomb" in err and str(MAX_PIXELS) in err


def test_huge_side_is_refused():
    img, err = decode_image(_png_with_header(40_000, 10))
    assert img is None and "dimensions" in err


def test_limits_are_configurable():
    data = _save(_gradient(64, 48), "PNG")
    assert decode_image(data, max_pixels=1000)[0] is None
    assert decode_image(data, max_side=50)[0] is None
    assert decode_image(data, max_bytes=10)[1].startswith("image too large")


def test_cmyk_jpeg_becomes_rgb():
    img, err = decode_image(_save(Image.new("CMYK", (20, 10), (0, 255, 255, 0)), "JPEG"))  # red in CMYK
    assert err is None and img.mode == "RGB"
    r, g, b = img.getpixel((10, 5))
    assert r > 200 and g < 60 and b < 60


def test_palette_with_transparency_is_composited_on_white():
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([0, 0, 255] + [255, 0, 0] * 255)
    ImageDraw.Draw(pal).rectangle([0, 0, 3, 7], fill=1)
    img, err = decode_image(_save(pal, "PNG", transparency=0))
    assert err is None and img.mode == "RGB"
    assert img.getpixel((6, 4)) == (255, 255, 255)  # transparent blue -> white
    assert img.getpixel((1, 4)) == (255, 0, 0)


def test_animated_gif_takes_the_first_frame():
    frames = [Image.new("RGB", (16, 16), c) for c in [(0, 200, 0), (200, 0, 0), (0, 0, 200)]]
    data = _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    img, err = decode_image(data)
    assert err is None and img.mode == "RGB"
    r, g, b = img.getpixel((8, 8))
    assert g > 150 and r < 50 and b < 50


def test_sixteen_bit_greyscale_is_rescaled_not_clipped():
    arr = np.zeros((4, 8), dtype=np.uint16)
    arr[:, 4:] = 65535
    arr[:, 2:4] = 32896  # mid grey in 16 bits
    src = Image.fromarray(arr)
    assert src.mode.startswith("I;16")
    img, err = decode_image(_save(src, "PNG"))
    assert err is None and img.mode == "RGB"
    assert img.getpixel((0, 0)) == (0, 0, 0)
    assert img.getpixel((3, 0))[0] == 128
    assert img.getpixel((7, 0)) == (255, 255, 255)


@pytest.mark.parametrize("mode", ["LA", "RGBA", "L", "1", "I", "F"])
def test_other_modes_become_rgb(mode):
    base = _gradient(16, 16).convert("RGBA" if mode in ("LA", "RGBA") else "L")
    if mode in ("LA", "RGBA"):
        base.putalpha(Image.new("L", (16, 16), 0))  # fully transparent -> white
    img = to_rgb(base.convert(mode))
    assert img.mode == "RGB" and img.size == (16, 16)
    if mode in ("LA", "RGBA"):
        assert img.getpixel((3, 3)) == (255, 255, 255)


def test_float_image_with_wide_range_is_rescaled():
    arr = np.array([[-5.0, 0.0, 1000.0]], dtype=np.float32)
    img = to_rgb(Image.fromarray(arr, "F"))
    assert img.getpixel((0, 0)) == (0, 0, 0) and img.getpixel((2, 0)) == (255, 255, 255)


def test_postscript_is_not_opened():
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    img, err = decode_image(eps)
    assert img is None and "not a supported image" in err


def test_non_bytes_and_pil_inputs():
    assert decode_image(12345)[0] is None
    img, err = decode_image(_gradient().convert("P"))
    assert err is None and img.mode == "RGB"
    img, err = decode_image(memoryview(_save(_gradient(), "PNG")))
    assert err is None


def test_draft_decodes_large_jpeg_at_reduced_scale():
    data = _save(_gradient(1024, 768), "JPEG")
    img, err = decode_image(data, draft_size=224)
    assert err is None and img.size == (512, 384)  # scale 1/2: short side stays >= 224


_VALID = _save(_gradient(24, 24), "PNG")


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_never_raise(data):
    img, err = decode_image(data)
    assert (img is None) != (err is None)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, len(_VALID) - 1), st.integers(0, 255))
def test_corrupted_valid_png_never_raises(pos, value):
    data = bytearray(_VALID)
    data[pos] = value
    img, err = decode_image(bytes(data))
    assert (img is None) != (err is None)
    if img is not None:
        assert img.mode == "RGB"
