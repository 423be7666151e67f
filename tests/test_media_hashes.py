"""vPDQ (PDQ of one frame per second, Meta's frame-match rule) against hash lists, beside md5/sha of the bytes.
Generated benign media only: blocky random textures and flat colour fields (tests/media_fixtures.py)."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from analyzer.errors import InputError
from analyzer.hashes import HashMatcher, load_hash_lists
from analyzer.hashes.vpdq import VpdqFeatures, match_video, vpdq_hash
from media_fixtures import BACKGROUND, colour_video, reencode, textured_video, tone


@pytest.fixture(scope="module")
def videos():
    orig = textured_video(60, seed=1)  # 6 s, one new texture a second
    return {"orig": orig, "copy": reencode(orig, fmt="webm", scale=0.75), "copy_mp4": reencode(orig, fmt="mp4"),
            "other": textured_video(60, seed=2)}


def _write_csv(path, rows):
    path.write_text("video_id,pdq,quality\n" + "".join(f"{v},{h},{q}\n" for v, h, q in rows))


def test_vpdq_hashes_one_frame_per_second(videos):
    f = vpdq_hash(videos["orig"])
    assert list(f.frames) == [0, 10, 20, 30, 40, 50] and list(f.times) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert f.hashes.shape == (6, 32) and (f.quality >= 50).all()
    lines = f.to_text().splitlines()
    assert len(lines) == 6 and lines[1].split(",")[0] == "10" and len(lines[1].split(",")[2]) == 64


def test_a_reencoded_copy_matches_and_another_video_does_not(videos, tmp_path):
    listed = vpdq_hash(videos["orig"])
    _write_csv(tmp_path / "known.csv", [("known-1", h.tobytes().hex(), q) for h, q in zip(listed.hashes,
                                                                                       listed.quality)])
    (tmp_path / "known-2.txt").write_text(vpdq_hash(videos["other"]).to_text())  # vpdq's own format
    lists = load_hash_lists([f"vpdq:csvlist={tmp_path / 'known.csv'}", f"vpdq:txtlist={tmp_path / 'known-2.txt'}"])
    matcher = HashMatcher(lists)
    ids = ["copy", "copy_mp4", "other", "flat", "audio"]
    items = [videos["copy"], videos["copy_mp4"], videos["other"], colour_video([BACKGROUND] * 30), tone(1.0)]
    got = {(m["item_id"], m["list_name"]): m for m in matcher.match_batch(ids, None, items)}
    assert set(got) == {("copy", "csvlist"), ("copy_mp4", "csvlist"), ("other", "txtlist")}
    m = got[("copy", "csvlist")]
    assert m["hash_kind"] == "vpdq" and m["distance"] <= 31 and m["orientation"].startswith("vpdq:100%")
    assert m["orientation"].endswith(":known-1")
    # the rule itself: the copy's frames are within the radius of the listed ones, the other video's are not
    q = match_video(vpdq_hash(videos["copy"]), lists.lists[0])
    assert q["query_match_percent"] >= 80 and q["compared_match_percent"] >= 80
    assert match_video(vpdq_hash(videos["other"]), lists.lists[0]) is None


def test_video_bytes_still_match_md5_and_frames_match_pdq_image_lists(videos, tmp_path):
    (tmp_path / "md5.txt").write_text(hashlib.md5(videos["orig"]).hexdigest() + "\n")
    frame = vpdq_hash(videos["copy"])
    (tmp_path / "frames.txt").write_text(frame.hashes[3].tobytes().hex() + "\n")  # a listed still image
    matcher = HashMatcher(load_hash_lists([str(tmp_path / "md5.txt"), f"pdq:{tmp_path / 'frames.txt'}"]))
    got = {(m["item_id"], m["hash_kind"]): m for m in matcher.match_batch(["orig", "copy"], None,
                                                                          [videos["orig"], videos["copy"]])}
    assert ("orig", "md5") in got and ("copy", "md5") not in got
    assert got[("copy", "pdq")]["orientation"] == "frame@3.000s" and got[("copy", "pdq")]["distance"] == 0
    assert got[("orig", "pdq")]["orientation"] == "frame@3.000s"


def test_low_quality_frames_never_match_and_bad_lists_are_refused(tmp_path):
    flat = vpdq_hash(colour_video([BACKGROUND] * 30, bar=False))
    assert (flat.quality < 50).all()
    assert len(flat.usable()) == 0
    (tmp_path / "bad.csv").write_text("video_id,pdq\nv1,xyz\n")
    with pytest.raises(InputError, match="bad.csv:2: expected a 64-hex PDQ"):
        load_hash_lists([f"vpdq:{tmp_path / 'bad.csv'}"])
    (tmp_path / "cols.csv").write_text("name,hash_value\nv1,00\n")
    with pytest.raises(InputError, match="video_id and pdq"):
        load_hash_lists([f"vpdq:{tmp_path / 'cols.csv'}"])
    f = VpdqFeatures(np.zeros((1, 32), np.uint8), np.array([10]), np.array([0]), np.array([0.0]))
    (tmp_path / "low.txt").write_text(f.to_text())
    with pytest.raises(InputError, match="quality >= 50"):
        load_hash_lists([f"vpdq:{tmp_path / 'low.txt'}"])


def test_undecodable_video_is_a_hash_error_but_its_bytes_still_match(tmp_path):
    junk = b"\x00\x00\x00\x18ftypisom" + bytes(300)
    (tmp_path / "sha.txt").write_text(hashlib.sha256(junk).hexdigest() + "\n")
    matcher = HashMatcher(load_hash_lists([f"sha256:{tmp_path / 'sha.txt'}", f"pdq:p={tmp_path / 'sha.txt'}"]))
    matches, cols = matcher.scan_batch(["junk"], None, [junk])
    assert [m["hash_kind"] for m in matches] == ["sha256"]
    assert "undecodable" in cols["hash_error"][0]
