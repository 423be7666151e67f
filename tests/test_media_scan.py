"""Scans of folders and webdataset shards mixing images, video and audio: every item counted, R1 through the
catalog for a video carrying both concepts (synthetic prototype frames), and the not-assessed reasons.

Generated benign media only (tests/media_fixtures.py): flat colour fields, random noise images, sine tones.
"""
from __future__ import annotations

import io
import json
import tarfile

import duckdb
import pyarrow.parquet as pq
import pytest

from analyzer.cli import main
from media_fixtures import BACKGROUND, colour_png, colour_video, noise_png, tone
from media_stubs import COLOUR_A, COLOUR_B, ColourEncoder, synthetic_concept_model

pytestmark = pytest.mark.slow  # the fast tier (make test-fast) leaves these end-to-end scans out

pytest.importorskip("av")


def _parts(run) -> list[dict]:
    rows = []
    for p in sorted((run / "parts" / "items").glob("*.parquet")):
        rows += pq.read_table(p).to_pylist()
    return rows


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    pytest.importorskip("open_clip")
    from tiny_clip import save_tiny_clip

    return save_tiny_clip(tmp_path_factory.mktemp("tinyclip_media"), "TinyClipMedia", seed=0)


def _media_files() -> dict[str, bytes]:
    video = colour_video([BACKGROUND] * 20)
    return {"a.png": noise_png(1), "b.jpg.png": noise_png(2), "clip.mp4": video, "clip.txt": b"a street at night",
            "film.webm": colour_video([BACKGROUND] * 15, fmt="webm"), "cut.mkv": colour_video([BACKGROUND] * 40,
                                                                                              fmt="mkv")[:1500],
            "song.wav": tone(1.5), "song.txt": b"a quiet tone", "noise.flac": tone(1.0, fmt="flac", noise=0.2),
            "talk.mp3": tone(1.0, fmt="mp3"), "notes.pdf": b"%PDF-1.4 not media"}


def test_folder_of_images_video_and_audio_counts_every_item(tmp_path, tiny_clip):
    data = tmp_path / "data"
    data.mkdir()
    for name, content in _media_files().items():
        (data / name).write_bytes(content)
    run = tmp_path / "run"
    assert main(["scan", str(data), "--out", str(run), "--encoder", tiny_clip, "--quiet"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    items = [n for n in _media_files() if not n.endswith(".txt")]
    assert summary["items_total"] == len(items) == 9
    rows = {r["item_id"]: r for r in _parts(run)}
    assert set(rows) == set(items)
    assert rows["clip.mp4"]["modality"] == "video" and rows["clip.mp4"]["status"] == "ok"
    assert json.loads(rows["clip.mp4"]["media_evidence"])["frames_assessed"] >= 1
    assert rows["film.webm"]["modality"] == "video"
    assert rows["cut.mkv"]["status"] == "error" and rows["cut.mkv"]["not_assessed"] == "failed"
    assert rows["song.wav"]["status"] == "ok" and rows["song.wav"]["modality"] == "text"  # from its caption
    for bare in ("noise.flac", "talk.mp3"):  # no caption and no audio encoder
        assert rows[bare]["not_assessed"] == "no_media_encoder" and "--encoder clap" in rows[bare]["error"]
    assert rows["notes.pdf"]["not_assessed"] == "unsupported_media"
    assert rows["a.png"]["modality"] == "image" and rows["a.png"]["not_assessed"] == "uncalibrated_modality"
    assert "--modality image" in summary["calibration_note"]  # the uncalibrated warning says exactly how


def test_webdataset_shard_mixing_images_video_and_audio(tmp_path, tiny_clip):
    shard = tmp_path / "shard-000.tar"
    members = [("s1.jpg", noise_png(3)), ("s1.txt", b"a red kite"), ("s2.mp4", colour_video([BACKGROUND] * 20)),
               ("s2.jpg", noise_png(4)), ("s2.txt", b"a clip of a road"), ("s3.wav", tone(1.0)),
               ("s3.txt", b"a tone"), ("s4.ogg", tone(1.0, fmt="ogg")), ("s5.webm",
                                                                          colour_video([BACKGROUND] * 10, fmt="webm")),
               ("s6.pdf", b"%PDF-1.4")]
    with tarfile.open(shard, "w") as tf:
        for name, content in members:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tf.addfile(info, io.BytesIO(content))
    run = tmp_path / "run"
    assert main(["scan", str(shard), "--out", str(run), "--encoder", tiny_clip, "--quiet"]) == 0
    rows = {r["item_id"]: r for r in _parts(run)}
    assert set(rows) == {"s1", "s2", "s3", "s4", "s5", "s6"}
    assert json.loads((run / "summary.json").read_text())["items_total"] == 6
    assert rows["s1"]["modality"] == "image"
    assert rows["s2"]["modality"] == "video"  # the video, not its thumbnail
    assert rows["s3"]["modality"] == "text" and rows["s3"]["status"] == "ok"
    assert rows["s4"]["not_assessed"] == "no_media_encoder"
    assert rows["s5"]["modality"] == "video" and rows["s5"]["status"] == "ok"
    assert rows["s6"]["not_assessed"] == "unsupported_media"


def test_a_video_with_both_concepts_across_frames_is_r1_in_the_catalog(tmp_path, monkeypatch):
    import analyzer.concepts
    import analyzer.encoders

    monkeypatch.setattr(analyzer.encoders, "get_encoder", lambda name=None, **kw: ColourEncoder())
    monkeypatch.setattr(analyzer.concepts, "fit_concept_model",
                        lambda bank, encoder, seed=0, *, modality="text", cache=None: synthetic_concept_model(bank))
    data = tmp_path / "data"
    data.mkdir()
    # half a second of each prototype colour (synthetic concept signals), longer than the sampling's spacing
    frames = [BACKGROUND] * 40
    frames[3:9], frames[28:34] = [COLOUR_A] * 6, [COLOUR_B] * 6
    (data / "both.mp4").write_bytes(colour_video(frames))
    only = [BACKGROUND] * 40
    only[10:16] = [COLOUR_A] * 6
    (data / "one.mp4").write_bytes(colour_video(only))
    (data / "plain.webm").write_bytes(colour_video([BACKGROUND] * 40, fmt="webm"))
    run = tmp_path / "run"
    assert main(["scan", str(data), "--out", str(run), "--encoder", "test", "--quiet"]) == 0
    con = duckdb.connect(str(run / "analysis.duckdb"), read_only=True)
    r1 = {r[0] for r in con.execute("SELECT item_id FROM item_risk_flagged WHERE r1").fetchall()}
    con.close()
    assert r1 == {"both.mp4"}
    ev = {r["item_id"]: json.loads(r["media_evidence"]) for r in _parts(run)}
    assert ev["both.mp4"]["deciding"]["minor"]["t"] < ev["both.mp4"]["deciding"]["adult_sexual"]["t"]
    assert ev["one.mp4"]["deciding"]["minor"]["score"] > 0.9


# ---- calibration for a modality: probe fit on labelled images, then a calibrated image scan ------------------

def _labelled_images(folder, n=12):
    """Generated colour fields with reviewed labels: reddish -> minor, greenish -> adult_sexual, others neither (no
    row is labelled with both)."""
    folder.mkdir()
    rows = []
    for k in range(n):
        for colour, minor, adult, tag in ((COLOUR_A, 1, 0, "a"), (COLOUR_B, 0, 1, "b"), (BACKGROUND, 0, 0, "c"),
                                          ((200, 200, 200), 0, 0, "d")):
            name = f"{tag}{k}.png"
            (folder / name).write_bytes(colour_png(colour, 100 * k + ord(tag), noise=12))
            rows.append({"item_id": name, "path": f"img/{name}", "minor": minor, "adult_sexual": adult})
    return rows


def test_probe_fit_on_labelled_embeddings_calibrates_an_image_scan(tmp_path, tiny_clip, capsys):
    import pyarrow as pa

    from analyzer.encoders import get_encoder

    rows = _labelled_images(tmp_path / "img")
    enc = get_encoder(tiny_clip)
    emb = enc.encode_images([(tmp_path / r["path"]).read_bytes() for r in rows])
    labels = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"item_id": [r["item_id"] for r in rows], "embedding": [list(map(float, e)) for e in emb],
                             "minor": [r["minor"] for r in rows], "adult_sexual": [r["adult_sexual"] for r in rows]}),
                   labels)
    bank = tmp_path / "bank.yaml"
    assert main(["probe", "fit", str(labels), "--modality", "image", "--encoder", tiny_clip, "--out", str(bank)]) == 0
    out = capsys.readouterr().out
    assert "image calibrated: True" in out and "minor" in out and "adult_sexual" in out
    scan_dir = tmp_path / "scan"
    scan_dir.mkdir()
    for k in range(3):
        (scan_dir / f"new{k}.png").write_bytes(colour_png((COLOUR_A, COLOUR_B, BACKGROUND)[k], 999 + k, noise=12))
    run = tmp_path / "run"
    assert main(["scan", str(scan_dir), "--out", str(run), "--encoder", tiny_clip, "--bank", str(bank),
                 "--quiet"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    model = json.loads((run / "model.json").read_text())
    assert summary["calibrated"] is True and model["calibrated"] is True
    assert summary["calibration_note"].startswith("Calibrated for image")
    assert "image" in model["calibrated_modalities"]
    measured = model["modality_heads"]["image"]["operating_points"]
    for c in ("minor", "adult_sexual"):
        for point in ("screen", "confirm"):
            m = model["operating_points"][c][point]
            assert m == measured[c][point] and m["n"] == len(rows) and "labelled image examples" in m["measured_on"]
    rows_out = {r["item_id"]: r for r in _parts(run)}
    assert all(r["assessed"] and r["not_assessed"] is None for r in rows_out.values())
    assert rows_out["new0.png"]["minor_screen"] and not rows_out["new2.png"]["minor_screen"]
    assert rows_out["new1.png"]["adult_sexual_screen"] and not rows_out["new2.png"]["adult_sexual_screen"]


@pytest.mark.slow
def test_probe_fit_on_labelled_image_files_fits_the_detector_weight(tmp_path, tiny_clip):
    import csv

    from analyzer.concepts import fit_concept_model, load_bank
    from analyzer.encoders import get_encoder

    rows = _labelled_images(tmp_path / "img", n=6)
    labels = tmp_path / "labels.csv"
    with open(labels, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["item_id", "path", "minor", "adult_sexual"])
        w.writeheader()
        w.writerows(rows)
    bank = tmp_path / "bank.yaml"
    assert main(["probe", "fit", str(labels), "--modality", "image", "--encoder", tiny_clip, "--out", str(bank)]) == 0
    loaded = load_bank(bank)
    entry = loaded.raw["modality_probes"][0]
    assert entry["detector"] == "nudenet:320n" and all("detector" in ex for ex in entry["examples"])
    model = fit_concept_model(loaded, get_encoder(tiny_clip), modality="image")
    det = model.modality_head("image")["detector"]
    assert det["concept"] == "adult_sexual" and det["coef"] >= 0.0  # fused with a non-negative learned weight
    # another encoder's scan is not calibrated by these examples (they are in this encoder's space)
    from analyzer.concepts.modality_calibration import calibrate_modalities

    class Other:
        name, fingerprint, dim = "other", "f" * 64, model.dim

    state = calibrate_modalities(model.to_dict(), loaded, Other(), 0)
    assert state["calibrated_modalities"] == ["text"] and state["modality_calibration_skipped"]


def test_probe_fit_refuses_bad_label_tables(tmp_path, tiny_clip):
    (tmp_path / "l.csv").write_text("item_id,path,minor\nx,missing.png,1\n")
    assert main(["probe", "fit", str(tmp_path / "l.csv"), "--modality", "image", "--encoder", tiny_clip,
                 "--out", str(tmp_path / "b.yaml")]) == 2
    (tmp_path / "m.csv").write_text("item_id,path,minor\nx,a.png,maybe\n")
    assert main(["probe", "fit", str(tmp_path / "m.csv"), "--modality", "image", "--encoder", tiny_clip,
                 "--out", str(tmp_path / "b.yaml")]) == 2
    assert not (tmp_path / "b.yaml").exists()


@pytest.mark.slow
def test_probe_fit_on_labelled_video_files_calibrates_video(tmp_path, tiny_clip, capsys):
    import yaml

    (tmp_path / "vid").mkdir()
    lines = ["item_id,path,minor,adult_sexual"]
    for k in range(4):
        for colour, minor, adult, tag in ((COLOUR_A, 1, 0, "a"), (COLOUR_B, 0, 1, "b"), (BACKGROUND, 0, 0, "c")):
            frames = [BACKGROUND] * 20
            frames[5 + k:12 + k] = [colour] * 7  # a generated colour span (synthetic concept signal for a and b)
            (tmp_path / "vid" / f"{tag}{k}.mp4").write_bytes(colour_video(frames))
            lines.append(f"{tag}{k},vid/{tag}{k}.mp4,{minor},{adult}")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    bank = tmp_path / "bank.yaml"
    assert main(["probe", "fit", str(tmp_path / "labels.csv"), "--modality", "video", "--encoder", tiny_clip,
                 "--out", str(bank)]) == 0
    assert "video calibrated: True" in capsys.readouterr().out
    entry = yaml.safe_load(bank.read_text())["modality_probes"][0]
    assert entry["modality"] == "video" and len(entry["examples"]) == 12
    assert all(len(ex["frames"]) >= 2 for ex in entry["examples"])  # each video's sampled frames
