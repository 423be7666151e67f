"""A test encoder that maps generated colour fields and tones to concept-prototype vectors, and a concept model
scoring those vectors with fixed weights. SYNTHETIC: the frames are flat colours and the sounds sine tones; which
concept a colour or a tone "carries" is decided only here, by the mapping to prototype vectors (the project's rule:
an item that carries both concepts is a synthetic embedding from the concept prototypes)."""
from __future__ import annotations

import numpy as np

from analyzer.ingest.images import decode_image
from model_stubs import CoverageStub

DIM = 8
# prototype directions: axis 0 = minor, axis 1 = adult_sexual, axis 2 = neither (background)
PROTO = {"minor": np.eye(DIM, dtype=np.float32)[0], "adult_sexual": np.eye(DIM, dtype=np.float32)[1],
         "none": np.eye(DIM, dtype=np.float32)[2]}
# colours the encoder maps to a prototype (anything else: background). BOTH is a synthetic both-prototype vector.
COLOUR_A = (230, 30, 30)   # -> minor prototype
COLOUR_B = (30, 200, 40)   # -> adult_sexual prototype
COLOUR_AB = (230, 210, 30)  # -> (minor + adult_sexual) / sqrt(2): synthetic, both prototypes
TONE_A = 1000.0  # Hz -> minor prototype (audio tests); any other tone: background


def _nearest(rgb) -> np.ndarray:
    rgb = np.asarray(rgb, dtype=np.float64)
    for colour, vec in ((COLOUR_A, PROTO["minor"]), (COLOUR_B, PROTO["adult_sexual"]),
                        (COLOUR_AB, (PROTO["minor"] + PROTO["adult_sexual"]) / np.sqrt(2))):
        if np.abs(rgb - colour).max() < 40:
            return vec
    return PROTO["none"]


class ColourEncoder:
    """Images: the median colour of the frame -> its prototype; audio: the dominant frequency -> its prototype;
    texts: the background prototype."""

    name = "test:colour-prototypes"
    dim = DIM
    fingerprint = "0" * 64
    supports_images = True
    supports_audio = True
    audio_sample_rate = 16000
    audio_window_s = 1.0

    def __init__(self):
        self.images_seen = 0

    def encode_text(self, texts):
        return np.tile(PROTO["none"], (len(texts), 1))

    def encode_images(self, images):
        return self.encode_images_safe(images)[0]

    def encode_images_safe(self, images):
        out, errs = np.zeros((len(images), DIM), np.float32), []
        for i, img in enumerate(images):
            self.images_seen += 1
            img, err = decode_image(img)  # bytes or PIL, with the scan's decoder, as the real encoders do
            if img is None:
                errs.append(err)
                continue
            arr = np.asarray(img, dtype=np.float64).reshape(-1, 3)
            out[i] = _nearest(np.median(arr, axis=0))
            errs.append(None)
        return out, errs

    def encode_audio(self, waveforms):
        out = np.zeros((len(waveforms), DIM), np.float32)
        for i, w in enumerate(waveforms):
            spec = np.abs(np.fft.rfft(w))
            f = np.argmax(spec) * self.audio_sample_rate / len(w)
            out[i] = PROTO["minor"] if abs(f - TONE_A) < 50 else PROTO["none"]
        return out


class PrototypeModel(CoverageStub):
    """score = sigmoid(8 * (u . prototype_c) - 4): 0.98 on the concept's prototype, 0.02 off it, 0.80 on the
    synthetic both-prototype vector; screen 0.5, confirm 0.9."""

    concept_ids = ["minor", "adult_sexual"]
    operating_points = {c: {"screen": {"threshold": 0.5}, "confirm": {"threshold": 0.9}} for c in concept_ids}

    def __init__(self, calibrated=True):
        self.W = np.stack([PROTO["minor"], PROTO["adult_sexual"]], axis=1) * 8.0
        self.b = np.array([-4.0, -4.0], np.float32)
        self._calibrated = calibrated

    def score(self, texts, embeddings, modality="text"):
        z = np.asarray(embeddings, dtype=np.float64) @ self.W + self.b
        return {c: 1.0 / (1.0 + np.exp(-z[:, j])) for j, c in enumerate(self.concept_ids)}

    def embedding_head(self, modality="text"):
        return self.W.astype(np.float32), self.b

    def modality_head(self, modality):
        return None

    def calibrated_for(self, modality):
        return self._calibrated


def synthetic_concept_model(bank):
    """A real ConceptModel (``from_dict``) for ``bank`` whose embedding path scores the prototype directions like
    :class:`PrototypeModel` (minor, adult_sexual; the other concepts never fire): the whole pipeline, catalog and R1
    rule included, runs on it. Its weights are made up (SYNTHETIC), its thresholds 0.5 / 0.9; it says so."""
    from analyzer.concepts import ConceptModel
    from analyzer.concepts.fitting import FUSION_FEATURES, MODEL_FORMAT

    ids = bank.concept_ids
    W, b = np.zeros((DIM, len(ids)), np.float32), np.full(len(ids), -10.0, np.float32)
    for c in ("minor", "adult_sexual"):
        W[:, ids.index(c)] = PROTO[c] * 8.0
        b[ids.index(c)] = -4.0

    def point(t):
        return {"threshold": t, "precision": 1.0, "recall": 1.0, "f1": 1.0, "tp": 1, "fp": 0, "fn": 0, "tn": 1,
                "n": 2, "positives": 1, "precision_ci": [0.0, 1.0], "recall_ci": [0.0, 1.0], "target": "synthetic",
                "target_met": True, "measured_on": "synthetic test weights"}

    ops = {c: {"screen": point(0.5), "confirm": point(0.9)} for c in ids}
    state = {
        "format": MODEL_FORMAT, "concept_ids": ids, "roles": {c.id: c.role for c in bank.concepts},
        "encoder": {"name": ColourEncoder.name, "fingerprint": ColourEncoder.fingerprint, "dim": DIM},
        "bank": {"fingerprint": bank.fingerprint, "version": bank.version, "name": bank.name},
        "training": {"files": [], "sha256": "synthetic", "seed": 0, "examples": {}, "positives": {}},
        "W": W.ravel().tolist(), "b": b.tolist(), "W_emb": W.ravel().tolist(), "b_emb": b.tolist(),
        "fusion": {c: {"coef": [0.0] * len(FUSION_FEATURES), "intercept": -10.0, "features": FUSION_FEATURES}
                   for c in ids},
        "keywords": {c: {} for c in ids}, "operating_points": ops, "operating_points_embedding": ops,
        "cv_report": {}, "calibrated": True, "modality": "image",
        "calibration_note": "SYNTHETIC test model: prototype weights, not fitted on data",
        "calibrated_modalities": ["text", "image", "video", "audio"],
    }
    return ConceptModel.from_dict(state, encoder=ColourEncoder())
