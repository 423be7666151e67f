"""Image-native evidence for ``adult_sexual``: NudeNet's ONNX detector (the ``nudenet`` package ships ``320n.onnx``,
MIT licence), run with onnxruntime on images and video frames.

``NudityDetector().score(images)`` returns, per RGB image, the detector's highest class score among the exposed
sexual body-part classes (:data:`EXPOSED`), 0..1. Preprocessing follows NudeNet's own: the image is padded to a
square at the bottom/right with black, resized to 320x320, scaled to 0..1, RGB, NCHW; the detector's anchors are
read directly (the highest class score over all anchors: no box decoding or non-maximum suppression is needed for
the maximum). Images are the scan's decoded ones (analyzer/ingest/images.py); NudeNet's own reader (OpenCV's
``imdecode`` on untrusted bytes) is not used, and the ``nudenet`` module itself is not imported (it imports OpenCV):
only its model file is read.

How the score enters ``adult_sexual`` (fused with a learned weight where labelled images were given, else a
documented uncalibrated rule) is in analyzer/concepts/modality_calibration.py.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from analyzer.errors import InputError

# NudeNet 3.4's class order (nudenet/nudenet.py)
LABELS = ("FEMALE_GENITALIA_COVERED", "FACE_FEMALE", "BUTTOCKS_EXPOSED", "FEMALE_BREAST_EXPOSED",
          "FEMALE_GENITALIA_EXPOSED", "MALE_BREAST_EXPOSED", "ANUS_EXPOSED", "FEET_EXPOSED", "BELLY_COVERED",
          "FEET_COVERED", "ARMPITS_COVERED", "ARMPITS_EXPOSED", "FACE_MALE", "BELLY_EXPOSED", "MALE_GENITALIA_EXPOSED",
          "ANUS_COVERED", "FEMALE_BREAST_COVERED", "BUTTOCKS_COVERED")
EXPOSED = ("FEMALE_GENITALIA_EXPOSED", "FEMALE_BREAST_EXPOSED", "MALE_GENITALIA_EXPOSED", "ANUS_EXPOSED",
           "BUTTOCKS_EXPOSED")
SIZE = 320
_SESSIONS: dict[str, object] = {}


def model_path() -> Path:
    """``320n.onnx`` inside the installed nudenet package (found without importing it)."""
    spec = importlib.util.find_spec("nudenet")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("expected the nudenet package for the image detector, got none; pip install nudenet "
                         "(or scan with the detector off)")
    path = Path(list(spec.submodule_search_locations)[0]) / "320n.onnx"
    if not path.is_file():
        raise InputError(f"expected NudeNet's model file {path}, got none; reinstall nudenet")
    return path


class NudityDetector:
    """NudeNet 320n as a batch scorer: ``score(images) -> float64 (n,)``."""

    name = "nudenet:320n"
    concept = "adult_sexual"

    def __init__(self, *, batch_size: int = 16, threads: int | None = None):
        self.batch_size = batch_size
        self.threads = threads
        self._path = model_path()
        self._fingerprint: str | None = None

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = hashlib.sha256(self._path.read_bytes()).hexdigest()
        return self._fingerprint

    def _session(self):
        key = f"{self._path}:{self.threads}"
        if key not in _SESSIONS:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = int(self.threads or max(1, min(8, os.cpu_count() or 1)))
            opts.log_severity_level = 3
            _SESSIONS[key] = ort.InferenceSession(str(self._path), sess_options=opts,
                                                  providers=["CPUExecutionProvider"])
        return _SESSIONS[key]

    def score(self, images: Sequence) -> np.ndarray:
        """Highest exposed-class score per RGB ``PIL.Image`` (0..1)."""
        n = len(images)
        out = np.zeros(n, dtype=np.float64)
        if n == 0:
            return out
        sess = self._session()
        name = sess.get_inputs()[0].name
        cols = [4 + LABELS.index(c) for c in EXPOSED]
        for s in range(0, n, self.batch_size):
            x = np.stack([_preprocess(im) for im in images[s:s + self.batch_size]])
            y = sess.run(None, {name: x})[0]  # (b, 4 + 18, anchors)
            out[s:s + len(x)] = y[:, cols, :].max(axis=(1, 2))
        return np.clip(out, 0.0, 1.0)


def _preprocess(img) -> np.ndarray:
    from PIL import Image

    img = img.convert("RGB")
    side = max(img.size)
    square = Image.new("RGB", (side, side), (0, 0, 0))
    square.paste(img, (0, 0))
    arr = np.asarray(square.resize((SIZE, SIZE), Image.BILINEAR), dtype=np.float32) / 255.0
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


__all__ = ["NudityDetector", "EXPOSED", "LABELS", "model_path"]
