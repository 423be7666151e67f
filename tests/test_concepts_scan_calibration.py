"""A scan whose rows are scored as image embeddings says "uncalibrated" from the start: RUN/model.json,
summary.json and the report (the thresholds were fitted on text embeddings of labelled captions)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
SAMPLE = Path(__file__).resolve().parents[1] / "data-samples" / "laion_sample.parquet"


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    if not SAMPLE.is_file():
        pytest.skip("data-samples/laion_sample.parquet absent")
    p = tmp_path_factory.mktemp("cal") / "small.parquet"
    pq.write_table(pq.read_table(SAMPLE).slice(0, 60), p)  # the default encoder's vectors, one per row
    return p


def _scan(src, out, modality):
    import analyzer

    run = analyzer.scan(src, out=out, embedding_column="embedding", embedding_modality=modality,
                        quiet=True)  # the sample's vectors were made with the default encoder
    root = Path(run.path)
    run.close()
    return (json.loads((root / "model.json").read_text()), json.loads((root / "summary.json").read_text()),
            (root / "report.md").read_text(encoding="utf-8"))


def test_image_embeddings_scan_is_marked_uncalibrated_everywhere(small, tmp_path):
    model, summary, report = _scan(small, tmp_path / "run", "image")
    assert model["calibrated"] is False and model["modality"] == "image"
    assert model["calibration_note"].startswith("UNCALIBRATED")
    assert summary["calibrated"] is False
    assert "UNCALIBRATED" in summary["calibration_warning"] and "UNCALIBRATED" in summary["calibration_note"]
    assert "UNCALIBRATED" in report


def test_text_embeddings_scan_stays_calibrated(small, tmp_path):
    model, summary, report = _scan(small, tmp_path / "run", "text")
    assert model["calibrated"] is True and model["modality"] == "text"
    assert summary["calibrated"] is True and "calibration_warning" not in summary
    assert "UNCALIBRATED" not in report


def test_prepare_scan_asks_for_an_image_model_when_image_files_meet_an_image_encoder(tmp_path, monkeypatch):
    """Image files read by an encoder with an image tower -> fit_concept_model(..., modality="image"); captions
    only with the same encoder -> "text". (The model fit itself is stubbed: the chain from modality to
    model.json, summary.json and the report is the MiniLM test above.)"""
    pytest.importorskip("open_clip")
    pytest.importorskip("torch")
    import io

    import numpy as np
    import pyarrow as pa
    from PIL import Image
    from tiny_clip import save_tiny_clip

    import analyzer.concepts
    from analyzer.config import ScanConfig
    from analyzer.pipeline import prepare_scan

    asked = []
    monkeypatch.setattr(analyzer.concepts, "fit_concept_model",
                        lambda bank, encoder, seed=0, *, modality="text": asked.append(modality) or modality)
    enc_name = save_tiny_clip(tmp_path / "clip", "TinyClipCalibration", seed=0)
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8), "RGB").save(buf, "PNG")
        (images / f"img{i}.png").write_bytes(buf.getvalue())
    prepare_scan(ScanConfig(inputs=[str(images)], out=str(tmp_path / "run"), encoder=enc_name, quiet=True))
    cap = tmp_path / "caps.parquet"
    pq.write_table(pa.table({"text": ["a red kite", "a blue car"]}), cap)
    prepare_scan(ScanConfig(inputs=[str(cap)], out=str(tmp_path / "run2"), encoder=enc_name, quiet=True))
    assert asked == ["image", "text"]
