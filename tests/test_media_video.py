"""Video in the tag stage: bounded frame sampling, per-video aggregation with the deciding frames' timestamps, R1
across frames and within one frame, corrupt/truncated/huge videos as error rows, and the limits.

Generated benign media only: every frame is a flat colour field (tests/media_fixtures.py); the test encoder
(tests/media_stubs.py) maps two colours to concept-prototype vectors and one to a SYNTHETIC both-prototype vector.
"""
from __future__ import annotations

import io
import json

import pyarrow as pa
import pytest
from PIL import Image

from analyzer.ingest.images import RowBuilder
from analyzer.ingest.video import MediaError, VideoLimits, choose_times, hash_frames, sample_frames
from analyzer.tagging.batch import tag_batch
from analyzer.tagging.media import MediaOptions
from media_fixtures import BACKGROUND, colour_video, tone
from media_stubs import COLOUR_A, COLOUR_AB, COLOUR_B, ColourEncoder, PrototypeModel

ALL_FRAMES = MediaOptions(video=VideoLimits(uniform_frames=64, max_frames=64), detector=None)


def _frames(n, planted: dict):
    """n background frames with ``planted[index] = colour``."""
    return [planted.get(i, BACKGROUND) for i in range(n)]


def _batch(rows: list[dict]) -> pa.RecordBatch:
    b = RowBuilder(0)
    for r in rows:
        b.add(file="f", **r)
    return b.flush()


def _png(colour) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(buf, "PNG")
    return buf.getvalue()


def _rows(items: pa.Table) -> dict:
    return {r["item_id"]: r for r in items.to_pylist()}


@pytest.mark.parametrize("fmt", ["mp4", "webm", "mkv", "mov"])
def test_every_container_is_sampled_with_timestamps(fmt):
    data = colour_video(_frames(50, {}), fmt=fmt, fps=10)
    info, frames = sample_frames(data, VideoLimits(uniform_frames=8, max_frames=12, max_keyframes=4))
    assert abs(info.duration_s - 5.0) < 0.15 and (info.width, info.height) == (64, 48)
    times = [f.time_s for f in frames]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert 8 <= len(frames) <= 12  # the uniform sample plus keyframes, capped
    assert any(f.keyframe for f in frames)
    assert times[0] < 0.5 and times[-1] > 4.3  # the sample spans the whole video
    assert max(f.image.size[0] for f in frames) <= 640


def test_sample_times_merge_keyframes_and_uniform_and_respect_the_cap():
    limits = VideoLimits(uniform_frames=4, max_keyframes=3, max_frames=5)
    times = choose_times(8.0, [0.0, 2.0, 4.0, 6.0], limits)
    assert len(times) <= 5 and [t for t, _ in times] == sorted(t for t, _ in times)
    assert sum(k for _, k in times) >= 2
    assert choose_times(8.0, [], VideoLimits(uniform_frames=4)) == [(1.0, False), (3.0, False), (5.0, False),
                                                                  (7.0, False)]


def test_per_video_score_is_the_most_flagged_frame_with_its_timestamp():
    enc, model = ColourEncoder(), PrototypeModel()
    planted = colour_video(_frames(50, {31: COLOUR_A, 32: COLOUR_A, 33: COLOUR_A}), fps=10)
    quiet = colour_video(_frames(50, {}), fps=10)
    items, emb = tag_batch(_batch([{"item_id": "planted", "image": planted}, {"item_id": "quiet", "image": quiet}]),
                           enc, model, media=ALL_FRAMES)
    rows = _rows(items)
    p, q = rows["planted"], rows["quiet"]
    assert p["status"] == "ok" and p["modality"] == "video"
    assert p["minor_score"] > 0.95 and p["minor_screen"] and not p["adult_sexual_screen"]
    assert q["minor_score"] < 0.05 and not q["minor_screen"]
    ev = json.loads(p["media_evidence"])
    assert ev["media"] == "video" and ev["frames_assessed"] == 50
    assert ev["deciding"]["minor"]["t"] == pytest.approx(3.1, abs=1e-6)  # the first planted frame
    assert ev["deciding"]["minor"]["score"] == pytest.approx(p["minor_score"], rel=1e-5)
    assert not ev["both_in_one_frame"]
    assert emb.num_rows == 2 and set(emb.column("item_id").to_pylist()) == {"planted", "quiet"}


def test_default_sampling_is_bounded_and_finds_a_signal_longer_than_the_uniform_spacing():
    # 16 uniform frames over 20 s: one every 1.25 s, so any 2-s span holds a sampled frame
    enc = ColourEncoder()
    data = colour_video(_frames(200, {i: COLOUR_B for i in range(120, 140)}), fps=10)  # signal at 12-14 s
    items, _ = tag_batch(_batch([{"item_id": "v", "image": data}]), enc, PrototypeModel(),
                         media=MediaOptions(detector=None))
    r = _rows(items)["v"]
    ev = json.loads(r["media_evidence"])
    assert enc.images_seen == ev["frames_assessed"] <= VideoLimits().max_frames
    assert r["adult_sexual_screen"] and 12.0 <= ev["deciding"]["adult_sexual"]["t"] < 14.0


def test_both_concepts_across_frames_and_in_one_frame_are_both_at_screen():
    across = colour_video(_frames(40, {5: COLOUR_A, 30: COLOUR_B}), fps=10)
    one = colour_video(_frames(40, {20: COLOUR_AB}), fps=10)  # synthetic both-prototype frame
    items, _ = tag_batch(_batch([{"item_id": "across", "image": across}, {"item_id": "one", "image": one}]),
                         ColourEncoder(), PrototypeModel(), media=ALL_FRAMES)
    rows = _rows(items)
    for key in ("across", "one"):  # the catalog's R1 rule: minor_screen AND adult_sexual_screen on one item
        assert rows[key]["minor_screen"] and rows[key]["adult_sexual_screen"], key
    ev_a, ev_o = json.loads(rows["across"]["media_evidence"]), json.loads(rows["one"]["media_evidence"])
    assert ev_a["deciding"]["minor"]["t"] == pytest.approx(0.5) and ev_a["deciding"]["adult_sexual"]["t"] == \
        pytest.approx(3.0)
    assert not ev_a["both_in_one_frame"] and ev_o["both_in_one_frame"]
    assert ev_o["deciding"]["minor"]["t"] == ev_o["deciding"]["adult_sexual"]["t"] == pytest.approx(2.0)


def test_mixed_batch_images_video_audio_and_broken_media():
    full = colour_video(_frames(60, {}), fps=10, fmt="mkv")
    rows = [
        {"item_id": "img", "image": _png(COLOUR_A)},
        {"item_id": "vid", "image": colour_video(_frames(20, {}), fmt="webm")},
        {"item_id": "cut", "image": full[: len(full) // 3]},
        {"item_id": "junk", "image": b"\x00\x00\x00\x18ftypisom" + bytes(500)},
        {"item_id": "tone", "image": tone(2.0, freq=1000.0)},
        {"item_id": "tone-cut", "image": tone(3.0)[:20000]},
        {"item_id": "text-only", "text": "a red bicycle"},
    ]
    items, _ = tag_batch(_batch(rows), ColourEncoder(), PrototypeModel(), media=ALL_FRAMES)
    r = _rows(items)
    assert items.num_rows == len(rows)  # every item counted
    assert r["img"]["modality"] == "image" and r["img"]["minor_screen"]
    assert r["vid"]["modality"] == "video" and r["vid"]["status"] == "ok"
    assert r["cut"]["status"] == "error" and "truncated" in r["cut"]["error"]
    assert r["junk"]["status"] == "error" and "undecodable" in r["junk"]["error"]
    assert r["tone"]["modality"] == "audio" and r["tone"]["minor_screen"]
    assert json.loads(r["tone"]["media_evidence"])["deciding"]["minor"]["t"] == 0.0
    assert r["tone-cut"]["status"] == "error" and "truncated" in r["tone-cut"]["error"]
    assert r["text-only"]["modality"] == "text" and r["text-only"]["status"] == "ok"
    for key in ("cut", "junk", "tone-cut"):
        assert r[key]["not_assessed"] == "failed" and r[key]["minor_score"] is None


def test_video_without_an_image_tower_is_not_assessed():
    class TextOnly(ColourEncoder):
        supports_images = False
        supports_audio = False

    data = colour_video(_frames(20, {}))
    items, _ = tag_batch(_batch([{"item_id": "bare", "image": data},
                                 {"item_id": "captioned", "image": data, "text": "a street at night"},
                                 {"item_id": "audio-captioned", "image": tone(1.0), "text": "a quiet tone"},
                                 {"item_id": "audio-bare", "image": tone(1.0)}]),
                         TextOnly(), PrototypeModel(), media=ALL_FRAMES)
    r = _rows(items)
    assert r["bare"]["status"] == "error" and r["bare"]["not_assessed"] == "no_media_encoder"
    assert r["captioned"]["status"] == "ok" and r["captioned"]["not_assessed"] == "no_media_encoder"
    assert r["captioned"]["modality"] == "video" and r["captioned"]["minor_score"] is not None
    assert r["audio-captioned"]["status"] == "ok" and r["audio-captioned"]["assessed"]  # from its text
    assert r["audio-captioned"]["modality"] == "text"
    assert r["audio-bare"]["not_assessed"] == "no_media_encoder"


def test_limits_duration_frames_resolution_and_decoded_frames():
    data = colour_video(_frames(50, {}), fps=10)
    with pytest.raises(MediaError, match="too long"):
        sample_frames(data, VideoLimits(max_duration_s=2.0))
    with pytest.raises(MediaError, match="resolution refused"):
        sample_frames(data, VideoLimits(max_side=32))
    with pytest.raises(MediaError, match="frames decoded"):
        sample_frames(data, VideoLimits(max_decoded_frames=3))
    with pytest.raises(MediaError, match="decode time"):
        sample_frames(data, VideoLimits(max_decode_s=0.0))
    with pytest.raises(MediaError, match="more than 5 frames"):
        list(hash_frames(data, VideoLimits(max_hash_frames=5)))
    _, frames = sample_frames(data, VideoLimits(max_frames=3))
    assert len(frames) <= 3
    items, _ = tag_batch(_batch([{"item_id": "long", "image": data}]), ColourEncoder(), PrototypeModel(),
                         media=MediaOptions(video=VideoLimits(max_duration_s=2.0), detector=None))
    row = items.to_pylist()[0]
    assert row["status"] == "error" and "too long" in row["error"] and row["not_assessed"] == "failed"


def test_image_detector_evidence_on_images_and_frames():
    items, _ = tag_batch(_batch([{"item_id": "img", "image": _png(BACKGROUND)},
                                 {"item_id": "vid", "image": colour_video(_frames(10, {}))}]),
                         ColourEncoder(), PrototypeModel(calibrated=False),
                         media=MediaOptions(video=VideoLimits(uniform_frames=4, max_frames=4)))
    r = _rows(items)
    for key in ("img", "vid"):
        det = json.loads(r[key]["media_evidence"])["detector"]
        assert det["name"] == "nudenet:320n" and 0.0 <= det["max"] < 0.2 and det["rule"] == "max"
        assert r[key]["adult_sexual_score"] < 0.05  # a flat colour field: no detection, the probe's score stands
