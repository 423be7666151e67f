"""Generated benign media for the media tests: noise and colour-field PNGs, synthetic colour fields encoded as video
with PyAV, tones and noise encoded as audio. Nothing here depicts anything: every image is noise or a flat colour,
every frame a flat colour (optionally with a moving bar), every sound a sine tone or noise."""
from __future__ import annotations

import io
from fractions import Fraction

import numpy as np
from PIL import Image

# Colours a test encoder maps to concept prototypes (tests/test_media_video.py); every other colour is background.
BACKGROUND = (40, 90, 160)


def _png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, "PNG")
    return buf.getvalue()


def noise_png(seed: int, *, shape=(32, 40)) -> bytes:
    """A PNG of seeded random pixels (height, width = ``shape``)."""
    return _png_bytes(np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8))


def colour_png(colour, seed: int, *, noise: float, shape=(32, 40)) -> bytes:
    """A PNG of one colour with seeded Gaussian noise of standard deviation ``noise`` (height, width = ``shape``)."""
    rng = np.random.default_rng(seed)
    arr = np.asarray(colour, np.float64) + rng.normal(0, noise, (*shape, 3))
    return _png_bytes(np.clip(arr, 0, 255).astype(np.uint8))


def colour_video(colours, *, fps: int = 10, size=(64, 48), fmt: str = "mp4", codec: str | None = None,
                 gop: int = 10, bar: bool = True) -> bytes:
    """Encode one frame per entry of ``colours`` (RGB tuples) as a video: mp4 (H.264), webm (VP8), mkv (H.264) or
    mov (mpeg4). ``bar`` draws a moving dark bar so consecutive frames differ (PDQ quality)."""
    import av

    codec = codec or {"mp4": "libx264", "webm": "libvpx", "mkv": "libx264", "mov": "mpeg4"}[fmt]
    buf = io.BytesIO()
    w, h = size
    with av.open(buf, mode="w", format={"mkv": "matroska", "mov": "mov"}.get(fmt, fmt)) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.gop_size = gop
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "tune": "zerolatency", "crf": "18"}
        stream.time_base = Fraction(1, fps)
        for i, c in enumerate(colours):
            arr = np.empty((h, w, 3), dtype=np.uint8)
            arr[:] = np.asarray(c, dtype=np.uint8)
            if bar:
                x = (i * 5) % w
                arr[:, x:x + 6] //= 3
                arr[h // 3: h // 3 + 4, :] = 255 - arr[h // 3: h // 3 + 4, :]
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def textured_video(n_frames: int, *, fps: int = 10, size=(192, 144), seed: int = 0, fmt: str = "mp4",
                   crf: int = 18) -> bytes:
    """Generated textures (random 16x16 colours, bicubic), a new one every second: high PDQ quality, for the
    vPDQ tests."""
    import av

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    w, h = size
    with av.open(buf, mode="w", format=fmt) as out:
        stream = out.add_stream("libx264" if fmt == "mp4" else "libvpx", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if fmt == "mp4":
            stream.options = {"preset": "ultrafast", "crf": str(crf)}
        stream.time_base = Fraction(1, fps)
        for i in range(n_frames):
            if i % fps == 0:  # a new texture every second: each vPDQ frame hash differs from the last
                small = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
                img = np.asarray(Image.fromarray(small, "RGB").resize((w, h), Image.BICUBIC))
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def tone(seconds: float = 1.0, *, freq: float = 440.0, rate: int = 16000, fmt: str = "wav", noise: float = 0.0,
         seed: int = 0) -> bytes:
    """A sine tone (plus optional white noise) encoded as wav (PCM), flac, mp3 or ogg (Opus)."""
    import av

    n = int(seconds * rate)
    t = np.arange(n) / rate
    x = 0.3 * np.sin(2 * np.pi * freq * t)
    if noise:
        x = x + noise * np.random.default_rng(seed).normal(size=n)
    x = np.clip(x, -1, 1).astype(np.float32)
    codec = {"wav": "pcm_s16le", "flac": "flac", "mp3": "libmp3lame", "ogg": "libopus"}[fmt]
    out_rate = 48000 if fmt == "ogg" else rate
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=fmt) as out:
        stream = out.add_stream(codec, rate=out_rate, layout="mono")
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout="mono", rate=out_rate)
        frame = av.AudioFrame.from_ndarray(x[None, :], format="flt", layout="mono")
        frame.sample_rate = rate
        for f in resampler.resample(frame) + resampler.resample(None):
            for packet in stream.encode(f):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def reencode(data: bytes, *, fmt: str = "webm", scale: float = 0.75, crf: int = 30) -> bytes:
    """Decode a video and encode its frames again: another codec/container, scaled (a re-encoded copy)."""
    import av

    buf = io.BytesIO()
    with av.open(io.BytesIO(data)) as src, av.open(buf, mode="w", format=fmt) as out:
        vs = src.streams.video[0]
        w, h = (int(vs.codec_context.width * scale) // 2 * 2, int(vs.codec_context.height * scale) // 2 * 2)
        stream = out.add_stream("libvpx" if fmt == "webm" else "libx264", rate=vs.average_rate)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if fmt != "webm":
            stream.options = {"preset": "ultrafast", "crf": str(crf)}
        stream.time_base = Fraction(1, int(vs.average_rate))
        for i, frame in enumerate(src.decode(vs)):
            f = av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24", width=w, height=h), format="rgb24")
            f.pts = i
            for packet in stream.encode(f):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()
