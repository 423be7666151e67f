"""Audio: decoding and windowing with PyAV, the CLAP encoder on a tiny randomly initialised model saved in Hugging Face
format and loaded back (no download), and an audio scan. Generated benign sound only: sine tones and noise."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from analyzer.errors import InputError
from analyzer.ingest.audio import AudioLimits, decode_windows
from analyzer.ingest.video import MediaError
from media_fixtures import tone

pytestmark = pytest.mark.slow  # the fast tier (make test-fast) leaves these end-to-end scans out

pytest.importorskip("av")


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "ogg"])
def test_every_audio_format_decodes_to_mono_windows(fmt):
    duration, windows = decode_windows(tone(2.5, fmt=fmt), rate=16000, window_s=1.0)
    assert abs(duration - 2.5) < 0.1
    assert [round(s, 2) for s, _ in windows] == [0.0, 1.0, 2.0]
    assert len(windows[0][1]) == 16000 and windows[0][1].dtype == np.float32
    spec = np.abs(np.fft.rfft(windows[0][1]))
    assert abs(np.argmax(spec) - 440) <= 2  # the tone survives decoding and resampling (1 Hz bins)


def test_long_audio_is_windowed_evenly_and_limits_hold():
    _, windows = decode_windows(tone(30.0), AudioLimits(max_windows=3), rate=8000, window_s=2.0)
    assert [round(s) for s, _ in windows] == [0, 14, 28]
    with pytest.raises(MediaError, match="too long"):
        decode_windows(tone(3.0), AudioLimits(max_duration_s=1.0))
    with pytest.raises(MediaError, match="truncated"):
        decode_windows(tone(3.0)[:9000])
    with pytest.raises(MediaError, match="undecodable|no audio"):
        decode_windows(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(100))
    with pytest.raises(MediaError, match="decode time"):
        decode_windows(tone(3.0), AudioLimits(max_decode_s=0.0))


@pytest.fixture(scope="module")
def tiny_clap(tmp_path_factory):
    pytest.importorskip("transformers")
    from tiny_clap import save_tiny_clap

    folder = tmp_path_factory.mktemp("tinyclap")
    return save_tiny_clap(folder, seed=0), folder


def test_clap_checkpoint_round_trip_matches_the_model(tiny_clap):
    import torch
    from transformers import ClapFeatureExtractor, ClapModel

    from analyzer.encoders import get_encoder

    name, folder = tiny_clap
    enc = get_encoder(name)
    assert enc.supports_audio and not enc.supports_images and enc.dim == 16
    assert enc.fingerprint == hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert (enc.audio_sample_rate, enc.audio_window_s) == (48000, 10.0)
    _, windows = decode_windows(tone(3.0, noise=0.1), rate=48000, window_s=10.0)
    emb = enc.encode_audio([w for _, w in windows])
    assert emb.shape == (1, 16) and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    ref_model = ClapModel.from_pretrained(str(folder)).eval()
    feats = ClapFeatureExtractor.from_pretrained(str(folder))([windows[0][1]], sampling_rate=48000,
                                                              return_tensors="pt")
    with torch.no_grad():
        out = ref_model.get_audio_features(**feats)
    ref = (out if torch.is_tensor(out) else out.pooler_output).numpy()
    assert np.allclose(emb, ref / np.linalg.norm(ref, axis=1, keepdims=True), atol=1e-5)
    texts = enc.encode_text(["a sound of the sea", "noise"])
    assert texts.shape == (2, 16) and not np.allclose(texts[0], texts[1])
    with pytest.raises(InputError, match="image tower"):
        enc.encode_images_safe([b"x"])


def test_clap_sources_that_are_not_models_are_refused(tmp_path):
    from analyzer.encoders import get_encoder

    with pytest.raises(InputError, match="CLAP model directory"):
        get_encoder(f"clap:{tmp_path}")
    with pytest.raises(InputError, match="cached weights"):
        get_encoder("clap:laion/no-such-model-here")


@pytest.mark.slow
def test_audio_scan_with_clap_scores_windows(tmp_path, tiny_clap):
    from analyzer.cli import main

    name, _ = tiny_clap
    data = tmp_path / "audio"
    data.mkdir()
    (data / "long.wav").write_bytes(tone(21.0))
    (data / "noise.flac").write_bytes(tone(2.0, fmt="flac", noise=0.3))
    (data / "voice.mp3").write_bytes(tone(2.0, fmt="mp3", freq=220.0))
    (data / "cut.wav").write_bytes(tone(3.0)[:5000])
    run = tmp_path / "run"
    assert main(["scan", str(data), "--out", str(run), "--encoder", name, "--quiet"]) == 0
    rows = {}
    for p in sorted((run / "parts" / "items").glob("*.parquet")):
        rows.update({r["item_id"]: r for r in pq.read_table(p).to_pylist()})
    assert set(rows) == {"long.wav", "noise.flac", "voice.mp3", "cut.wav"}
    for key in ("long.wav", "noise.flac", "voice.mp3"):
        assert rows[key]["status"] == "ok" and rows[key]["modality"] == "audio"
        assert rows[key]["not_assessed"] == "uncalibrated_modality"  # no labelled audio for this encoder
    ev = json.loads(rows["long.wav"]["media_evidence"])
    assert ev["media"] == "audio" and ev["windows_assessed"] == 3 and abs(ev["duration_s"] - 21.0) < 0.1
    assert {d["t"] for d in ev["deciding"].values()} <= {0.0, 10.0, 20.0}
    assert rows["cut.wav"]["status"] == "error" and "truncated" in rows["cut.wav"]["error"]
    assert json.loads((run / "summary.json").read_text())["items_total"] == 4
