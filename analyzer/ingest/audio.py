"""Audio decoding with PyAV: mono float32 windows at an encoder's sample rate, within limits.

``decode_windows(data, limits, rate=, window_s=)`` decodes the first audio stream once, resampled to mono ``rate``
Hz, and keeps at most ``limits.max_windows`` windows of ``window_s`` seconds (the audio encoder's input length):
consecutive windows when the file is short enough, else windows starting at evenly spaced times over the declared
duration (a long file costs one decode and a bounded amount of memory). Audio encoders embed each window; the tag
stage keeps the most-flagged window per concept with its start time, as it does for video frames.

Failures are :class:`analyzer.ingest.video.MediaError` with a one-line reason: no audio stream; undecodable or
truncated data (a WAVE data chunk cut short, or a decoded length well short of the declared duration; an Ogg or raw
MP3 file cut at a page or frame boundary declares nothing that would show it and decodes as a shorter file); a
declared or decoded duration over ``limits.max_duration_s``; decoding past ``limits.max_decode_s`` seconds of wall
clock (checked between frames).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from analyzer.ingest.video import MediaError, _errors, _first_line, _open


@dataclass(frozen=True)
class AudioLimits:
    """Audio windowing and safety limits (recorded in the run's config as ``media.audio``)."""

    max_windows: int = 12  # windows embedded per file (each as long as the audio encoder's input, 10 s for CLAP)
    max_duration_s: float = 4 * 3600.0
    max_decode_s: float = 120.0

    def as_dict(self) -> dict:
        return asdict(self)


def decode_windows(data, limits: AudioLimits = AudioLimits(), *, rate: int = 48000, window_s: float = 10.0
                   ) -> tuple[float, list[tuple[float, np.ndarray]]]:
    """(decoded duration in seconds, [(window start in seconds, float32 mono samples)]); raises MediaError."""
    av = _av()
    t0 = time.monotonic()
    win = max(1, int(round(window_s * rate)))
    _check_wav_length(data)
    try:
        with _open(data) as container:
            if not container.streams.audio:
                raise MediaError("no audio stream in the file")
            stream = container.streams.audio[0]
            declared = None
            if stream.duration is not None and stream.time_base is not None:
                declared = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                declared = container.duration / 1_000_000
            if declared is not None and declared > limits.max_duration_s:
                raise MediaError(f"audio too long: {declared:.0f} s declared > limit {limits.max_duration_s:.0f} s")
            starts = _window_starts(declared, limits, rate, win)
            keep: list[list[np.ndarray]] = [[] for _ in starts]
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            pos = 0  # samples decoded so far (at ``rate``)
            for frame in _frames(container, stream):
                for out in resampler.resample(frame):
                    pos = _collect(out.to_ndarray().reshape(-1), pos, starts, keep, win)
                if pos > limits.max_duration_s * rate:
                    raise MediaError(f"audio too long: decoding passed the limit of {limits.max_duration_s:.0f} s")
                if time.monotonic() - t0 > limits.max_decode_s:
                    raise MediaError(f"audio decoding stopped: decode time over the limit of "
                                     f"{limits.max_decode_s:.0f} s (endless or very slow stream)")
            for out in resampler.resample(None):
                pos = _collect(out.to_ndarray().reshape(-1), pos, starts, keep, win)
    except MediaError:
        raise
    except _errors() as exc:
        raise MediaError(f"undecodable audio: {type(exc).__name__}: {_first_line(exc)}") from None
    duration = pos / rate
    if pos == 0:
        raise MediaError("audio holds no decodable samples (empty, corrupt or truncated file)")
    if declared is not None and declared > 1.0 and duration < 0.9 * declared - 0.5:
        raise MediaError(f"audio truncated: the stream ends at {duration:.1f} s of {declared:.1f} s declared")
    windows = [(s / rate, np.concatenate(w)) for s, w in zip(starts, keep) if w]
    return duration, windows


def _check_wav_length(data) -> None:
    """A WAVE file declares its sample data's size: data cut short is an error (FFmpeg decodes what is there and
    estimates the duration from the file size, so the duration check below cannot see it)."""
    head = bytes(data[:12]) if data is not None else b""
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return
    pos, n = 12, len(data)
    while pos + 8 <= n:
        cid, size = bytes(data[pos:pos + 4]), int.from_bytes(bytes(data[pos + 4:pos + 8]), "little")
        if cid == b"data":
            if size != 0xFFFFFFFF and pos + 8 + size > n:
                raise MediaError(f"audio truncated: the WAVE data chunk declares {size} bytes, the file holds "
                                 f"{n - pos - 8}")
            return
        pos += 8 + size + (size & 1)


def _av():
    import av

    return av


def _frames(container, stream):
    for packet in container.demux(stream):
        yield from packet.decode()


def _window_starts(declared: float | None, limits: AudioLimits, rate: int, win: int) -> list[int]:
    """Sample offsets of the windows: consecutive when they cover the file, else evenly spaced over its duration."""
    n = limits.max_windows
    if declared is None or declared * rate <= n * win:
        return [k * win for k in range(n)]
    total = int(declared * rate)
    return [int(s) for s in np.linspace(0, max(0, total - win), n)]


def _collect(samples: np.ndarray, pos: int, starts: list[int], keep: list, win: int) -> int:
    """Append the part of ``samples`` (starting at offset ``pos``) that falls in each window."""
    end = pos + len(samples)
    for j, s in enumerate(starts):
        lo, hi = max(s, pos), min(s + win, end)
        if hi > lo:
            keep[j].append(samples[lo - pos:hi - pos].astype(np.float32, copy=True))
    return end


__all__ = ["AudioLimits", "decode_windows"]
