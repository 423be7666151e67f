"""Coverage accounting from input to verdict: a media folder's images, video, audio and other files are all
counted, each item assessed or not assessed with its reason, and summary.json breaks coverage down by reason,
modality, source and file; the default policy does not PASS what it could not assess (exit 3).

Generated benign media only (tests/media_fixtures.py): noise images, flat colour video, sine tones.
"""
from __future__ import annotations

import json

import duckdb
import pytest

from analyzer.cli import main
from analyzer.store.sql import run_query
from media_fixtures import BACKGROUND, colour_video, noise_png, tone

pytestmark = pytest.mark.slow  # the fast tier (make test-fast) leaves these end-to-end scans out

pytest.importorskip("av")


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    pytest.importorskip("open_clip")
    from tiny_clip import save_tiny_clip

    return save_tiny_clip(tmp_path_factory.mktemp("tinyclip_coverage"), "TinyClipCoverage", seed=0)


FILES = {"photos/a.png": noise_png(1), "photos/b.png": noise_png(2),
         "clips/walk.mp4": colour_video([BACKGROUND] * 20), "clips/walk.txt": b"a street at night",
         "clips/cut.mkv": colour_video([BACKGROUND] * 40, fmt="mkv")[:1500],  # truncated: fails to decode
         "sounds/bare.flac": tone(1.0, fmt="flac"),  # no caption and no audio encoder
         "docs/notes.pdf": b"%PDF-1.4 not media", "docs/blob.bin": b"\x00\x01\x02"}


def test_every_file_of_a_media_folder_is_counted_and_the_default_policy_is_inconclusive(tmp_path, tiny_clip, capsys):
    data = tmp_path / "data"
    for name, content in FILES.items():
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        (data / name).write_bytes(content)
    run = tmp_path / "run"
    policy = tmp_path / "default.yaml"
    from analyzer.policy import default_policy_path

    policy.write_bytes(default_policy_path().read_bytes())
    code = main(["scan", str(data), "--out", str(run), "--encoder", tiny_clip, "--policy", str(policy), "--quiet"])
    out = capsys.readouterr().out
    items = [n for n in FILES if not n.endswith(".txt")]  # the caption sidecar is no item
    s = json.loads((run / "summary.json").read_text())
    cov = s["coverage"]
    assert s["items_total"] == cov["items_total"] == len(items) == 7  # nothing dropped
    reasons = {r["reason"]: r["items"] for r in cov["by_reason"]}
    assert reasons["unsupported_media"] == 2 and reasons["no_media_encoder"] == 1 and reasons["failed"] == 1
    # the two images and the video: scored through the image tower, whose thresholds were never calibrated
    assert reasons["uncalibrated_modality"] == 3
    assert sum(reasons.values()) == 7 and cov["items_assessed"] == reasons.get("assessed", 0) == 0
    modalities = {r["modality"]: r for r in cov["by_modality"]}
    assert modalities["unsupported"]["items"] == 2 and modalities["image"]["items"] == 2
    assert modalities["video"]["not_assessed_by_reason"].get("uncalibrated_modality") == 1
    assert modalities["image"]["not_assessed_by_reason"] == {"uncalibrated_modality": 2}
    assert sum(r["items"] for r in cov["by_modality"]) == 7
    by_source = {r["source"]: r["items"] for r in cov["by_source"]}
    assert by_source == {"photos": 2, "clips": 2, "sounds": 1, "docs": 2} and cov["sources_total"] == 4
    assert cov["files_total"] == 7
    # the sign-off: not enough assessed, thresholds uncalibrated -> INCONCLUSIVE, exit 3 (it used to pass, exit 0)
    gates = {g["gate"]: g for g in s["signoff"]["gates"]}
    assert code == 3 and s["verdict"] == "inconclusive" and "verdict: INCONCLUSIVE" in out
    assert gates["scan_coverage"]["status"] == "inconclusive" and gates["calibration"]["status"] == "inconclusive"
    assert "2 unsupported_media" in gates["scan_coverage"]["detail"]


def test_coverage_queries_count_every_item_once(tmp_path):
    from catalog_helpers import item, make_store

    rows = [item(f"k{i}", "a.example" if i % 2 else "b.example", 0.0, 0.0) for i in range(30)]
    rows[0]["status"] = "error"
    store = make_store(tmp_path / "run", rows)
    con = duckdb.connect(str(store.db_path), read_only=True)
    by_reason = run_query(con, "coverage_by_reason").fetchall()
    assert by_reason == [("assessed", 29, 29 / 30), ("failed", 1, 1 / 30)]
    src = run_query(con, "coverage_by_source", {"limit": 1}).fetchall()
    assert len(src) == 1 and src[0][0] == "b.example" and src[0][3] == 1 and src[0][-1] == 2  # most not assessed
    files = run_query(con, "coverage_by_file", {"limit": 5}).fetchall()
    assert [(f[0], f[1]) for f in files] == [("f.parquet", 30)]
    modality = run_query(con, "coverage_by_modality").fetchall()
    assert {(m[0], m[1], m[2]) for m in modality} == {("text", 29, 29), ("unknown", 1, 0)}
    con.close()
