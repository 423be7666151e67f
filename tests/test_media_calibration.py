"""Calibration for every modality on SYNTHETIC embeddings (concept-prototype directions plus noise, no content):
the fitted heads, the alignment to the text thresholds, the measured operating points, video's max-frame rule,
the detector rule, and the bank entry's round trip."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from analyzer.concepts.calibration import sigmoid
from analyzer.concepts.modality_calibration import (apply_detector, calibrate_modalities, decode_vector,
                                                    detector_rule, mark_scan_modality, parse_entries, probe_entry)
from analyzer.errors import InputError

DIM, IDS = 16, ["minor", "adult_sexual", "swimwear"]
ENC = SimpleNamespace(name="test:synthetic", fingerprint="a" * 64, dim=DIM)


def _state():
    rng = np.random.default_rng(0)
    W = rng.normal(0, 0.1, (DIM, len(IDS))).astype(np.float32)  # a weak "transferred" head
    pts = {c: {"screen": {"threshold": 0.2}, "confirm": {"threshold": 0.7}} for c in IDS}
    return {"concept_ids": IDS, "roles": {"minor": "primary", "adult_sexual": "primary", "swimwear": "context"},
            "encoder": {"name": ENC.name, "fingerprint": ENC.fingerprint, "dim": DIM},
            "W_emb": W.ravel().tolist(), "b_emb": [0.0] * len(IDS), "operating_points": pts,
            "calibrated": True, "calibration_note": "text"}


def _vectors(n, seed):
    """SYNTHETIC labelled vectors: 1/3 near the minor prototype (axis 0), 1/3 near adult_sexual (axis 1), 1/3 near
    neither (axis 2); no vector is labelled with both."""
    rng = np.random.default_rng(seed)
    X = rng.normal(0, 0.35, (n, DIM)).astype(np.float32)
    kind = np.arange(n) % 3
    X[np.arange(n), kind] += 1.0
    return X, {"minor": [int(k == 0) for k in kind], "adult_sexual": [int(k == 1) for k in kind]}


def _bank(*entries):
    return SimpleNamespace(raw={"modality_probes": list(entries)}, path="synthetic.yaml")


@pytest.mark.parametrize("modality", ["image", "audio"])
def test_a_labelled_modality_is_calibrated_on_the_text_thresholds(modality):
    X, labels = _vectors(90, seed=1)
    entry = probe_entry(modality=modality, encoder=ENC, source="labels.csv", source_sha256="0" * 64,
                        ids=[f"i{k}" for k in range(90)], labels=labels, embeddings=X)
    state = calibrate_modalities(_state(), _bank(entry), ENC, seed=0)
    assert state["calibrated_modalities"] == ["text", modality]
    head = state["modality_heads"][modality]
    assert set(head["operating_points"]) == {"minor", "adult_sexual"}  # swimwear: transferred, unlabelled
    W, b = np.asarray(head["W"]).reshape(DIM, -1), np.asarray(head["b"])
    Xt, yt = _vectors(300, seed=2)  # fresh synthetic vectors: the head separates them at the text thresholds
    U = Xt / np.linalg.norm(Xt, axis=1, keepdims=True)
    for j, c in enumerate(["minor", "adult_sexual"]):
        p = sigmoid(U @ W[:, j] + b[j])
        y = np.asarray(yt[c])
        assert (p[y == 1] >= 0.2).mean() > 0.9 and (p[y == 0] >= 0.7).mean() < 0.1
        m = head["operating_points"][c]["screen"]
        assert m["threshold"] == 0.2 and m["n"] == 90 and m["positives"] == 30
        assert "cross-validated" in m["measured_on"] and f"labelled {modality}" in m["measured_on"]
    marked = mark_scan_modality(state, modality, ENC.name)
    assert marked["calibrated"] and marked["operating_points"]["minor"] == head["operating_points"]["minor"]
    assert marked["operating_points"]["swimwear"] == _state()["operating_points"]["swimwear"]
    assert "Transferred from captions (not measured on " in marked["calibration_note"]


def test_video_head_is_an_affine_map_of_the_frame_head_chosen_on_max_frame_scores():
    rng = np.random.default_rng(3)
    videos, labels = [], {"minor": [], "adult_sexual": []}
    for v in range(24):  # SYNTHETIC frame vectors: background frames plus, for some videos, prototype frames
        frames = rng.normal(0, 0.3, (6, DIM)).astype(np.float32)
        frames[:, 2] += 1.0
        kind = v % 3
        if kind < 2:
            frames[v % 6, 2] -= 1.0
            frames[v % 6, kind] += 1.0
        videos.append(frames)
        labels["minor"].append(int(kind == 0))
        labels["adult_sexual"].append(int(kind == 1))
    X, img_labels = _vectors(90, seed=4)
    image = probe_entry(modality="image", encoder=ENC, source="img.csv", source_sha256="0" * 64,
                        ids=[str(k) for k in range(90)], labels=img_labels, embeddings=X)
    video = probe_entry(modality="video", encoder=ENC, source="vid.csv", source_sha256="0" * 64,
                        ids=[str(k) for k in range(24)], labels=labels, embeddings=videos)
    state = calibrate_modalities(_state(), _bank(video, image), ENC, seed=0)
    assert state["calibrated_modalities"] == ["text", "image", "video"]
    vh, ih = state["modality_heads"]["video"], state["modality_heads"]["image"]
    Wv, Wi = np.asarray(vh["W"]).reshape(DIM, -1), np.asarray(ih["W"]).reshape(DIM, -1)
    ratio = Wv[:, 0] / Wi[:, 0]
    assert np.allclose(ratio, ratio[0], rtol=1e-4) and ratio[0] > 0  # the image head, rescaled
    for j, c in enumerate(["minor", "adult_sexual"]):
        p = np.array([sigmoid((f / np.linalg.norm(f, axis=1, keepdims=True)) @ Wv[:, j] + vh["b"][j]).max()
                      for f in videos])
        m = vh["operating_points"][c]["screen"]
        y = np.asarray(labels[c])
        assert m["tp"] == int(((p >= 0.2) & (y == 1)).sum()) and m["fp"] == int(((p >= 0.2) & (y == 0)).sum())
        assert "max-frame scores of 24 labelled videos" in m["measured_on"]


def test_examples_of_another_encoder_leave_the_modality_uncalibrated_and_say_how():
    X, labels = _vectors(30, seed=5)
    other = SimpleNamespace(name="other", fingerprint="b" * 64, dim=DIM)
    entry = probe_entry(modality="image", encoder=other, source="l.csv", source_sha256="0" * 64,
                        ids=[str(k) for k in range(30)], labels=labels, embeddings=X)
    state = calibrate_modalities(_state(), _bank(entry), ENC, seed=0)
    assert state["calibrated_modalities"] == ["text"] and "another encoder" in state["modality_calibration_skipped"][0]
    note = mark_scan_modality(state, "image", ENC.name)["calibration_note"]
    assert note.startswith("UNCALIBRATED for image") and "analyzer probe fit LABELS --modality image" in note


def test_detector_rules():
    class M:
        def __init__(self, head, calibrated):
            self.head, self.calibrated = head, calibrated

        def modality_head(self, modality):
            return self.head

        def calibrated_for(self, modality):
            return self.calibrated

    d = np.array([0.1, 0.5, 0.9])
    base = {"adult_sexual": np.array([0.3, 0.3, 0.3])}
    out = apply_detector(dict(base), d, M(None, False), "image")
    assert detector_rule(M(None, False), "image") == ("max", None)
    assert np.allclose(out["adult_sexual"], [0.3, 0.5, 0.9])  # below the 0.2 detection floor: no evidence
    assert np.allclose(apply_detector(dict(base), d, M(None, True), "image")["adult_sexual"], 0.3)  # evidence only
    fused = apply_detector(dict(base), d, M({"detector": {"coef": 2.0, "concept": "adult_sexual"}}, True), "image")
    assert fused["adult_sexual"][0] == pytest.approx(0.3) and fused["adult_sexual"][2] > fused["adult_sexual"][1] > 0.3


def test_bank_entries_round_trip_and_bad_entries_are_refused():
    X, labels = _vectors(6, seed=6)
    entry = probe_entry(modality="image", encoder=ENC, source="l.csv", source_sha256="0" * 64,
                        ids=list("abcdef"), labels=labels, embeddings=X, detector_name="nudenet:320n",
                        detector_scores=np.linspace(0, 1, 6))
    parsed = parse_entries(_bank(entry))[0]
    assert np.allclose(parsed["X"], X, atol=2e-3) and parsed["detector"] == "nudenet:320n"
    assert parsed["labels"]["minor"] == labels["minor"] and np.allclose(parsed["d"], np.linspace(0, 1, 6))
    with pytest.raises(InputError, match="dimension 16"):
        decode_vector(entry["examples"][0]["embedding"][:-8], DIM, "x")
    bad = dict(entry, modality="smell")
    with pytest.raises(InputError, match="modality_probes\\[0\\].modality"):
        parse_entries(_bank(bad))
    few = probe_entry(modality="image", encoder=ENC, source="l.csv", source_sha256="0" * 64, ids=list("abc"),
                      labels={"minor": [1, 0, 0], "adult_sexual": [0, 1, 0]}, embeddings=X[:3])
    with pytest.raises(InputError, match="at least 2 positive and 2 negative"):
        calibrate_modalities(_state(), _bank(few), ENC, seed=0)
