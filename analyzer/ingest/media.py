"""Media types: which files and tar members are images, videos or audio, and how the tag stage tells them apart.

The readers carry an item's bytes in the standard ``image`` column whatever the media (an image, a video or an
audio file); the tag stage tells them apart from the bytes themselves (:func:`sniff`), never from a file name, so a
renamed file is assessed for what it is. Names only decide what a folder or a shard holds (:func:`media_kind`):

- images: ``analyzer.ingest.images.IMAGE_SUFFIXES`` (decoded by ``decode_image``);
- videos: mp4, m4v, mov, webm, mkv, avi (decoded with PyAV, analyzer/ingest/video.py);
- audio: wav, flac, mp3, ogg, oga, opus, m4a (decoded with PyAV, analyzer/ingest/audio.py).

Video and audio files may be larger than images: up to :data:`MAX_MEDIA_BYTES` (a larger file is an error row,
never read whole).
"""
from __future__ import annotations

from analyzer.ingest.images import IMAGE_SUFFIXES

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi")
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a")
MEDIA_SUFFIXES = IMAGE_SUFFIXES + VIDEO_SUFFIXES + AUDIO_SUFFIXES
MAX_MEDIA_BYTES = 256 * 2**20  # a video or audio file (item or tar member) larger than this is an error row
# webdataset member extensions in the order a sample's media is chosen (a video before its thumbnail image)
VIDEO_EXT_ORDER = tuple(s[1:] for s in VIDEO_SUFFIXES)
AUDIO_EXT_ORDER = tuple(s[1:] for s in AUDIO_SUFFIXES)


def media_kind(name: str) -> str | None:
    """``"image"``, ``"video"``, ``"audio"`` or None from a file or member name's suffix."""
    low = name.lower()
    if low.endswith(IMAGE_SUFFIXES):
        return "image"
    if low.endswith(VIDEO_SUFFIXES):
        return "video"
    if low.endswith(AUDIO_SUFFIXES):
        return "audio"
    return None


def max_bytes_for(name: str) -> int:
    """The size limit of a file by its kind: images keep the image decoder's limit, video and audio
    :data:`MAX_MEDIA_BYTES`."""
    from analyzer.ingest.images import MAX_BYTES

    return MAX_MEDIA_BYTES if media_kind(name) in ("video", "audio") else MAX_BYTES


def sniff(data) -> str | None:
    """``"av"`` when the bytes start like an audio/video container PyAV decodes (ISO BMFF/QuickTime, Matroska/WebM,
    AVI, WAVE, Ogg, FLAC, MP3, ADTS AAC), else None (an image, or not media at all: the image decoder says which).
    Whether a container holds a video or only audio is read from its streams (analyzer/ingest/video.py)."""
    if data is None:
        return None
    head = bytes(data[:16])
    if len(head) < 4:
        return None
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"):
        return "av"
    if head[:4] in (b"\x1a\x45\xdf\xa3", b"OggS", b"fLaC"):
        return "av"
    if head[:4] == b"RIFF" and head[8:12] in (b"AVI ", b"WAVE"):
        return "av"
    if head[:3] == b"ID3":
        return "av"
    if head[0] == 0xFF and (head[1] & 0xE0) == 0xE0:  # MPEG audio / ADTS frame sync (JPEG's FF D8 is not one)
        return "av"
    return None


__all__ = ["VIDEO_SUFFIXES", "AUDIO_SUFFIXES", "MEDIA_SUFFIXES", "MAX_MEDIA_BYTES", "VIDEO_EXT_ORDER",
           "AUDIO_EXT_ORDER", "media_kind", "max_bytes_for", "sniff"]
