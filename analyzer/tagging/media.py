"""Video and audio rows in the tag stage, and the image detector's evidence on images and video frames.

``tag_batch`` (analyzer/tagging/batch.py) hands this module the rows whose bytes are a video or audio container
(:func:`split_av`, by the bytes, never by a name) and the image rows it has scored:

- **video** (a container with a video stream): the sampled frames (analyzer/ingest/video.py: keyframes plus a uniform
  sample, capped per video) go through the image path: the encoder's image tower, the concept model with the row's
  caption (keyword fusion, as for an image), the image detector. The row's score per concept is its most-flagged
  frame's; the timestamps of the deciding frames (never the frames) are kept in ``media_evidence``. A video whose
  frames carry both concepts, in one frame or in different frames, has both at screen: the catalog's R1 rule
  (both primary concepts at screen on one item) sees it. Its embedding (neighbourhoods, clusters) is the normalised
  mean of its frames'. Without an image tower the frames cannot be looked at: a captioned video is scored from its
  caption and counted ``not_assessed = no_media_encoder``; without a caption it is an error row with that reason.
- **audio** (a container with an audio stream and no video): with an audio encoder (CLAP), the windows
  (analyzer/ingest/audio.py) are embedded and scored like frames (most-flagged window, its start time); without one,
  a captioned file (transcript, caption or metadata text) is scored from its text by the caption taggers (modality
  ``text``, assessed as text); with neither it is an error row, ``not_assessed = no_media_encoder``.
- **images**: the detector (``MediaOptions.detector``, NudeNet by default) adds its ``adult_sexual`` evidence to the
  probe's (analyzer/concepts/modality_calibration.py says how), recorded in ``media_evidence``.

``media_evidence`` is a small JSON object per row (null for rows without media evidence): media kind, duration,
frames or windows assessed, the deciding time and score per concept, whether both primary concepts were decided in
one frame, and the detector's highest score. It holds no pixels, samples, captions or URLs.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np

from analyzer.concepts.modality_calibration import apply_detector, detector_rule
from analyzer.ingest.audio import AudioLimits, decode_windows
from analyzer.ingest.images import decode_image
from analyzer.ingest.media import sniff
from analyzer.ingest.video import MediaError, VideoLimits, sample_frames, stream_kinds
from analyzer.vectors import to_float16, unit_rows

NO_MEDIA_ENCODER = "no encoder for this media"  # the start of the error of a video/audio row nobody can look at
MEDIA_REASON = "no_media_encoder"  # its not_assessed reason (analyzer/tagging/batch.py NOT_ASSESSED)
PRIMARY = ("minor", "adult_sexual")
DETECTORS = ("nudenet", None)
_DETECTOR: dict = {}


@dataclass(frozen=True)
class MediaOptions:
    """How video, audio and image evidence are gathered (recorded in the run's config as ``media``)."""

    video: VideoLimits = field(default_factory=VideoLimits)
    audio: AudioLimits = field(default_factory=AudioLimits)
    detector: str | None = "nudenet"  # the image detector on images and frames; None: off

    def as_dict(self) -> dict:
        return asdict(self)


DEFAULT_MEDIA = MediaOptions()


def media_options(options: dict | None = None) -> MediaOptions:
    """MediaOptions from flat options (``--media-option KEY=VALUE``): the fields of VideoLimits by name
    (``max_frames``, ``max_duration_s``, ...), those of AudioLimits prefixed ``audio_`` (``audio_max_windows``), and
    ``detector`` (``nudenet`` or ``none``). Unknown keys and bad values are InputErrors."""
    from analyzer.errors import InputError

    video, audio, detector = {}, {}, DEFAULT_MEDIA.detector
    for key, value in (options or {}).items():
        field_names = {"video": VideoLimits.__dataclass_fields__, "audio": AudioLimits.__dataclass_fields__}
        if key == "detector":
            if value not in ("nudenet", "none", None):
                raise InputError(f"expected --media-option detector=nudenet or none, got {value!r}")
            detector = None if value in ("none", None) else value
            continue
        kind, name = ("audio", key[len("audio_"):]) if key.startswith("audio_") else ("video", key)
        if name not in field_names[kind]:
            known = sorted(VideoLimits.__dataclass_fields__) + [f"audio_{k}" for k in AudioLimits.__dataclass_fields__]
            raise InputError(f"expected a media option among detector, {', '.join(known)}, got {key!r}")
        default = getattr(VideoLimits() if kind == "video" else AudioLimits(), name)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or value <= 0 or (isinstance(default, int) and not float(value).is_integer()):
            raise InputError(f"expected --media-option {key} to be a {'whole ' if isinstance(default, int) else ''}"
                             f"number > 0, got {value!r}")
        (video if kind == "video" else audio)[name] = type(default)(value)
    return MediaOptions(video=VideoLimits(**video), audio=AudioLimits(**audio), detector=detector)


def split_av(img_col, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows whose bytes are an audio/video container, the other rows) among ``rows`` of the ``image`` column."""
    av = np.array([sniff(img_col[int(i)].as_buffer()) == "av" for i in rows], dtype=bool)
    return rows[av], rows[~av]


def tag_av_rows(rows, img_col, texts, encoder, model, options: MediaOptions, *, put, fail, modality, evidence,
                preset) -> None:
    """Score each video/audio row (module docstring): ``put`` its scores and embedding, or ``fail`` it; fill
    ``modality``, ``evidence`` (row -> JSON) and ``preset`` (row -> not_assessed reason) for the caller."""
    for i in rows:
        i = int(i)
        data = img_col[i].as_buffer()
        caption = texts[i] if texts is not None and texts[i] and texts[i].strip() else None
        try:
            has_video, has_audio = stream_kinds(data)
            if has_video:
                modality[i] = "video"
                if encoder.supports_images:
                    s, vec, ev = _video(data, caption, encoder, model, options)
                else:
                    s, vec, ev = _caption_only(i, caption, encoder, model, "video", "an image tower "
                                               "(--encoder openclip:ARCH:PRETRAINED) for its frames", fail)
                    preset[i] = MEDIA_REASON
            elif has_audio:
                if encoder.supports_audio:
                    modality[i] = "audio"
                    s, vec, ev = _audio(data, caption, encoder, model, options)
                else:
                    modality[i] = "text"  # assessed from its transcript/caption by the caption taggers
                    s, vec, ev = _caption_only(i, caption, encoder, model, "audio", "an audio encoder "
                                               "(--encoder clap:PATH)", fail)
            else:
                raise MediaError("unsupported media type: the container holds no video or audio stream")
        except MediaError as exc:
            fail([i], str(exc)[:300])
            continue
        if s is None:
            continue
        put(np.array([i]), {c: np.array([v]) for c, v in s.items()}, None if vec is None else to_float16(vec[None]))
        evidence[i] = json.dumps(ev, sort_keys=True)


def _caption_only(i, caption, encoder, model, kind: str, needs: str, fail):
    if caption is None:
        article = "an" if kind[0] in "aeiou" else "a"
        fail([i], f"{NO_MEDIA_ENCODER}: {article} {kind} file without a caption needs {needs}; the {encoder.name} "
                  "encoder has none")
        return None, None, None
    unit, _ = unit_rows(encoder.encode_text([caption]))
    s = model.score([caption], unit, modality="text")
    return {c: float(p[0]) for c, p in s.items()}, unit[0], {"media": kind, "assessed_from": "caption"}


def _aggregate(s: dict, times: list[float], unit: np.ndarray) -> tuple[dict, np.ndarray, dict]:
    """Per concept the most-flagged frame/window: (scores, mean unit vector, deciding times and scores)."""
    best = {c: int(np.argmax(p)) for c, p in s.items()}
    deciding = {c: {"t": round(float(times[j]), 3), "score": round(float(s[c][j]), 6)} for c, j in best.items()}
    mean = unit.mean(axis=0)
    norm = float(np.linalg.norm(mean))
    vec = mean / norm if norm > 0 else unit[0]
    return {c: float(s[c][j]) for c, j in best.items()}, vec.astype(np.float32), deciding


def _video(data, caption, encoder, model, options: MediaOptions):
    info, frames = sample_frames(data, options.video)
    emb, errs = encoder.encode_images_safe([f.image for f in frames])
    good = [k for k, e in enumerate(errs) if e is None and np.any(emb[k])]
    if not good:
        raise MediaError(f"no sampled frame could be embedded ({next((e for e in errs if e), 'zero embedding')})")
    unit, _ = unit_rows(emb[good])
    head = "video" if model.modality_head("video") is not None else "image"
    s = model.score([caption] * len(good) if caption else None, unit, modality=head)
    times = [frames[k].time_s for k in good]
    ev = {"media": "video", "duration_s": round(info.duration_s, 3), "frames_assessed": len(good),
          "keyframes_assessed": sum(frames[k].keyframe for k in good), "size": f"{info.width}x{info.height}",
          "codec": info.codec}
    det = _detector(options)
    if det is not None and det.concept in s:
        d = det.score([frames[k].image for k in good])
        s = apply_detector(s, d, model, head, det.concept)
        j = int(np.argmax(d))
        ev["detector"] = {"name": det.name, "max": round(float(d[j]), 6), "t": round(float(times[j]), 3),
                          "rule": detector_rule(model, head)[0]}
    scores, vec, deciding = _aggregate(s, times, unit)
    ev["deciding"] = deciding
    ev["both_in_one_frame"] = _both_in_one(s, model)
    return scores, vec, ev


def _audio(data, caption, encoder, model, options: MediaOptions):
    duration, windows = decode_windows(data, options.audio, rate=encoder.audio_sample_rate,
                                       window_s=encoder.audio_window_s)
    emb = encoder.encode_audio([w for _, w in windows])
    good = [k for k in range(len(windows)) if np.isfinite(emb[k]).all() and np.any(emb[k])]
    if not good:
        raise MediaError("no audio window could be embedded (the encoder returned zero or non-finite vectors)")
    unit, _ = unit_rows(emb[good])
    s = model.score([caption] * len(good) if caption else None, unit, modality="audio")
    scores, vec, deciding = _aggregate(s, [windows[k][0] for k in good], unit)
    ev = {"media": "audio", "duration_s": round(duration, 3), "windows_assessed": len(good), "deciding": deciding,
          "both_in_one_window": _both_in_one(s, model)}
    return scores, vec, ev


def _both_in_one(s: dict, model) -> bool:
    """Whether one frame/window has both primary concepts at the screen point."""
    if not all(c in s for c in PRIMARY):
        return False
    at = [s[c] >= model.operating_points[c]["screen"]["threshold"] for c in PRIMARY]
    return bool(np.any(at[0] & at[1]))


def detect_images(rows, img_col, model, options: MediaOptions, scores: dict, evidence: list) -> None:
    """The image detector on scored image rows: folds its evidence into ``scores`` and records it in ``evidence``."""
    det = _detector(options)
    if det is None or det.concept not in scores or not len(rows):
        return
    images, kept = [], []
    for i in rows:
        img, err = decode_image(img_col[int(i)].as_py())
        if img is not None:
            images.append(img)
            kept.append(int(i))
    if not kept:
        return
    d = det.score(images)
    sub = {c: scores[c][kept] for c in scores}
    sub = apply_detector(sub, d, model, "image", det.concept)
    scores[det.concept][kept] = sub[det.concept]
    rule = detector_rule(model, "image")[0]
    for i, v in zip(kept, d):
        evidence[i] = json.dumps({"media": "image", "detector": {"name": det.name, "max": round(float(v), 6),
                                                                 "rule": rule}}, sort_keys=True)


def detector_fingerprint(options: MediaOptions) -> str | None:
    """sha256 of the image detector's weights, for the resume key (a scan resumed with other weights would mix two
    detectors' evidence); None when the detector is off or its package is not installed here (a scan that needs it
    then stops with that package's error)."""
    from analyzer.errors import InputError

    try:
        det = _detector(options)
    except InputError:
        return None
    return None if det is None else det.fingerprint


def _detector(options: MediaOptions):
    if options.detector is None:
        return None
    if options.detector not in DETECTORS:
        from analyzer.errors import InputError

        raise InputError(f"expected an image detector among nudenet or none, got {options.detector!r}")
    if options.detector not in _DETECTOR:
        from analyzer.encoders.nudity_detector import NudityDetector

        _DETECTOR[options.detector] = NudityDetector()
    return _DETECTOR[options.detector]


__all__ = ["MediaOptions", "DEFAULT_MEDIA", "NO_MEDIA_ENCODER", "MEDIA_REASON", "split_av", "tag_av_rows",
           "detect_images"]
