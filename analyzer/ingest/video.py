"""Video decoding with PyAV (FFmpeg inside its wheel): bounded frame sampling and the frames vPDQ hashes.

``sample_frames(data, limits)`` returns the frames the tag stage embeds: the keyframes (at most
``limits.max_keyframes``, evenly spaced when there are more) plus ``limits.uniform_frames`` frames at the middles of
equal slices of the duration, merged and capped at ``limits.max_frames`` per video. Each is reached by seeking to the
keyframe before it and decoding forward, so the work per video is bounded by the cap times one group of pictures,
not by the length of the video. Frames are scaled so their longer side is at most ``limits.frame_side`` (the image
towers resize to 224-448 px anyway; 32 full 4K frames would hold 800 MB).

``hash_frames(data, limits)`` yields one full-resolution RGB frame per ``limits.hash_seconds`` in Meta's vPDQ rule
(decoded frame number divisible by ``int(seconds * frame_rate)``, timestamp = frame number / frame rate), decoding
every frame as vPDQ does.

Every failure is a :class:`MediaError` with a one-line reason, never a hang: a video is refused before decoding when
its header declares a resolution or a duration over the limits; decoding stops with an error when it passes the
frame, packet or wall-clock limits (an endless or lying stream), and a stream that ends well before its declared
duration is reported as truncated. The wall-clock limit is checked between frames: one FFmpeg call is not
interrupted (that would need a separate process).
"""
from __future__ import annotations

import io
import time
from dataclasses import asdict, dataclass

import numpy as np


class MediaError(Exception):
    """A video or audio item could not be decoded within the limits; ``str(err)`` is a one-line reason."""


@dataclass(frozen=True)
class VideoLimits:
    """Frame sampling and safety limits of one video (recorded in the run's config as ``media.video``)."""

    max_frames: int = 32  # frames sampled per video: keyframes plus the uniform sample, at most this many
    uniform_frames: int = 16  # frames at the middles of equal slices of the duration
    max_keyframes: int = 16  # keyframes kept (evenly spaced when the video has more)
    frame_side: int = 640  # sampled frames are scaled to this longer side at most
    max_duration_s: float = 4 * 3600.0  # a longer declared or measured duration is refused
    max_side: int = 8192  # a wider or taller video is refused before decoding
    max_pixels: int = 8192 * 4352  # 35.7 Mpx (8K UHD)
    max_decoded_frames: int = 20000  # frames decoded for sampling, seeks included
    max_packets: int = 5_000_000  # packets read while indexing the keyframes
    max_decode_s: float = 120.0  # wall clock per video (sampling or hashing), checked between frames
    hash_seconds: float = 1.0  # vPDQ: one hash per this many seconds of video
    max_hash_frames: int = 4 * 3600 * 60  # frames decoded for vPDQ (every frame is decoded, as vPDQ does)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class VideoInfo:
    duration_s: float
    width: int
    height: int
    fps: float
    codec: str
    keyframes: int  # keyframes in the stream


@dataclass
class SampledFrame:
    time_s: float
    keyframe: bool
    image: object  # PIL.Image.Image, RGB


def _av():
    import av

    return av


def _errors():
    av = _av()
    return (av.FFmpegError, OSError, ValueError, EOFError, IndexError, MemoryError)


def _open(data):
    av = _av()
    if isinstance(data, memoryview):
        data = data.tobytes()
    if not data:
        raise MediaError("empty media bytes")
    try:
        return av.open(io.BytesIO(bytes(data)), mode="r", metadata_errors="ignore")
    except _errors() as exc:
        raise MediaError(f"undecodable media: {type(exc).__name__}: {_first_line(exc)}") from None


def _first_line(exc: Exception) -> str:
    text = getattr(exc, "strerror", None) or str(exc)  # FFmpeg errors: the message without errno and file name
    text = str(text).strip()
    return (text.splitlines()[0] if text else "")[:200]


def stream_kinds(data) -> tuple[bool, bool]:
    """(has a video stream, has an audio stream) of a container; raises MediaError when it cannot be opened.
    Cover art (an attached picture in an audio file) is not a video."""
    with _open(data) as container:
        video = any(not _is_cover_art(s) for s in container.streams.video)
        return video, bool(container.streams.audio)


def _is_cover_art(stream) -> bool:
    try:
        return bool(stream.disposition & _av().stream.Disposition.attached_pic)
    except (AttributeError, TypeError):
        return False


def _video_stream(container):
    streams = [s for s in container.streams.video if not _is_cover_art(s)]
    if not streams:
        raise MediaError("no video stream in the file")
    return streams[0]


def _check_header(container, stream, limits: VideoLimits) -> tuple[float | None, float, int, int]:
    """(declared duration or None, frame rate, width, height), refusing what the limits exclude."""
    cc = stream.codec_context
    w, h = int(cc.width or 0), int(cc.height or 0)
    if w <= 0 or h <= 0:
        raise MediaError(f"video has an empty frame size {w}x{h}")
    if max(w, h) > limits.max_side or w * h > limits.max_pixels:
        raise MediaError(f"video resolution refused: {w}x{h} is over the limit (side {limits.max_side}, "
                         f"{limits.max_pixels} pixels)")
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
    duration = None
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / 1_000_000
    if duration is not None and duration > limits.max_duration_s:
        raise MediaError(f"video too long: {duration:.0f} s declared > limit {limits.max_duration_s:.0f} s")
    return duration, fps, w, h


class _Clock:
    def __init__(self, limits: VideoLimits, what: str):
        self.t0, self.limits, self.what = time.monotonic(), limits, what

    def check(self) -> None:
        if time.monotonic() - self.t0 > self.limits.max_decode_s:
            raise MediaError(f"{self.what} stopped: decode time over the limit of {self.limits.max_decode_s:.0f} s "
                             "(endless or very slow stream)")


def _index(container, stream, limits: VideoLimits, clock: _Clock) -> tuple[list[float], float, float]:
    """Keyframe times, the first packet's time and the end of the last packet, from one pass over the packets (no
    decoding). Times are the stream's own (a stream may start after 0)."""
    tb = stream.time_base
    keys, start, end, n = [], float("inf"), 0.0, 0
    for packet in container.demux(stream):
        if packet.pts is None:
            continue
        n += 1
        if n > limits.max_packets:
            raise MediaError(f"video refused: more than {limits.max_packets} packets (endless stream?)")
        t = float(packet.pts * tb)
        d = float(packet.duration * tb) if packet.duration else 0.0
        start, end = min(start, t), max(end, t + d)
        if packet.is_keyframe:
            keys.append(t)
        if end - start > limits.max_duration_s:
            raise MediaError(f"video too long: the stream runs past the limit of {limits.max_duration_s:.0f} s")
        if n % 256 == 0:
            clock.check()
    if n == 0:
        raise MediaError("video stream holds no packets (empty or truncated file)")
    return sorted(set(keys)), start, end


def choose_times(duration: float, keys: list[float], limits: VideoLimits, start: float = 0.0
                 ) -> list[tuple[float, bool]]:
    """Sample times (seconds, is a keyframe): evenly spaced keyframes plus the uniform sample over
    ``[start, start + duration)``, capped."""
    if len(keys) > limits.max_keyframes:
        keys = [keys[int(i)] for i in np.unique(np.round(np.linspace(0, len(keys) - 1, limits.max_keyframes)))]
    n_uni = limits.uniform_frames
    uniform = ([start + (k + 0.5) * duration / n_uni for k in range(n_uni)] if duration > 0 and n_uni > 0
               else [start])
    gap = duration / max(4 * n_uni, 1) if duration > 0 else 0.0
    chosen = [(t, True) for t in keys]
    for t in uniform:
        if not any(abs(t - k) <= gap for k in keys):
            chosen.append((t, False))
    chosen.sort()
    if len(chosen) > limits.max_frames:
        chosen = [chosen[int(i)] for i in np.unique(np.round(np.linspace(0, len(chosen) - 1, limits.max_frames)))]
    return chosen


def _scaled(frame, side: int):
    w, h = frame.width, frame.height
    s = min(1.0, side / max(w, h))
    if s >= 1.0:
        return frame.to_image()
    return frame.to_image(width=max(2, int(round(w * s))), height=max(2, int(round(h * s))))


def sample_frames(data, limits: VideoLimits = VideoLimits()) -> tuple[VideoInfo, list[SampledFrame]]:
    """The sampled frames of a video (module docstring); raises :class:`MediaError` with the reason."""
    clock = _Clock(limits, "video sampling")
    try:
        with _open(data) as container:
            stream = _video_stream(container)
            declared, fps, w, h = _check_header(container, stream, limits)
            keys, start, end = _index(container, stream, limits, clock)
            measured = end - start
            if declared is not None and declared > 1.0 and measured < 0.9 * declared - 0.5:
                raise MediaError(f"video truncated: the stream ends at {measured:.1f} s of {declared:.1f} s declared")
            duration = measured if measured > 0 else (declared or 0.0)
            times = choose_times(duration, keys, limits, start)
            frames = _decode_at(container, stream, times, keys, limits, clock)
            info = VideoInfo(duration_s=duration, width=w, height=h, fps=fps, codec=stream.codec_context.name,
                             keyframes=len(keys))
    except MediaError:
        raise
    except _errors() as exc:
        raise MediaError(f"undecodable video: {type(exc).__name__}: {_first_line(exc)}") from None
    if not frames:
        raise MediaError("video holds no decodable frame (corrupt or truncated stream)")
    return info, frames


def _decode_at(container, stream, times, keys, limits: VideoLimits, clock: _Clock) -> list[SampledFrame]:
    tb = stream.time_base
    eps = 0.5 / (float(stream.average_rate) if stream.average_rate else 25.0)
    out: list[SampledFrame] = []
    it, last, decoded = None, float("-inf"), 0
    for t, is_key in times:
        before = [k for k in keys if k <= t + eps]
        key = before[-1] if before else 0.0
        if it is None or last > t + eps or key > last + eps:
            container.seek(int(round(key / float(tb))) if tb else 0, stream=stream, backward=True, any_frame=False)
            it = container.decode(stream)
        for frame in it:
            decoded += 1
            if decoded > limits.max_decoded_frames:
                raise MediaError(f"video sampling stopped: more than {limits.max_decoded_frames} frames decoded")
            clock.check()
            if frame.pts is None:
                continue
            ft = float(frame.pts * tb)
            last = ft
            if ft + eps >= t:
                out.append(SampledFrame(time_s=ft, keyframe=bool(frame.key_frame), image=_scaled(frame,
                                                                                                 limits.frame_side)))
                break
        else:
            it = None  # end of the stream: later targets seek again (and find nothing past the end)
    # a seek can land two targets on one frame: keep one per time
    seen, unique = set(), []
    for f in out:
        key = round(f.time_s, 6)
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def hash_frames(data, limits: VideoLimits = VideoLimits()):
    """Yield ``(frame_number, time_s, rgb uint8 (h, w, 3))`` for vPDQ: every ``int(hash_seconds * fps)``-th decoded
    frame at full resolution (Meta's vPDQ rule). Raises :class:`MediaError`."""
    clock = _Clock(limits, "video hashing")
    try:
        with _open(data) as container:
            stream = _video_stream(container)
            _, fps, _, _ = _check_header(container, stream, limits)
            if fps <= 0:
                raise MediaError("video has no frame rate")
            mod = max(1, int(limits.hash_seconds * fps))
            n = 0
            for frame in container.decode(stream):
                if n >= limits.max_hash_frames:
                    raise MediaError(f"video hashing stopped: more than {limits.max_hash_frames} frames")
                if n % mod == 0:
                    clock.check()
                    yield n, n / fps, frame.to_ndarray(format="rgb24")
                n += 1
            if n == 0:
                raise MediaError("video holds no decodable frame (corrupt or truncated stream)")
    except MediaError:
        raise
    except _errors() as exc:
        raise MediaError(f"undecodable video: {type(exc).__name__}: {_first_line(exc)}") from None


__all__ = ["MediaError", "VideoLimits", "VideoInfo", "SampledFrame", "sample_frames", "hash_frames", "choose_times",
           "stream_kinds"]
