"""The fitted concept model: probe + keyword fusion, calibration and operating points, per encoder.

Scoring paths (docs/concepts.md):
- text path (a caption is present): per concept, a sign-constrained logistic fusion of the probe logit
  ``z = e @ w + b`` and keyword hits, with language interactions (keywords weigh more on non-English
  captions, where the English-only MiniLM probe is weak). Calibrated on cross-validated predictions.
- embedding path (no caption: image or precomputed vectors): one matrix product ``E @ W_emb + b_emb`` and a
  sigmoid. The affine map from probe logit to probability is fitted so that the text path's thresholds mean
  the same decisions on this path (screen and confirm are measured separately and stored in
  ``operating_points_embedding``).
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from analyzer.errors import InputError
from analyzer.concepts.bank import ConceptBank
from analyzer.concepts.calibration import (choose_operating_points, fit_fusion, fit_platt, logit, point_metrics,
                          sigmoid)
from analyzer.concepts.data import assemble, load_training_rows
from analyzer.concepts.evaluate import cv_report
from analyzer.concepts.keywords import KeywordTagger, detect_languages

MODEL_FORMAT = 4  # bump when fitting changes: invalidates the on-disk cache
FUSION_FEATURES = ["z_en", "z_non_en", "strong_en", "strong_non_en", "weak", "non_en", "minus_counter"]
FUSION_NONNEG = [True, True, True, True, False, False, True]
N_FOLDS = 5
_CHUNK_BYTES = 128 * 2**20  # float32 conversion buffer for float16 input


def _half_copier(E: np.ndarray):
    """A function copying a float16 block into a float32 buffer, as fast as this machine allows."""
    if E.dtype == np.float16 and E.flags.c_contiguous:
        try:
            import torch

            return lambda dst, src: torch.from_numpy(dst).copy_(torch.from_numpy(src))
        except Exception:  # noqa: BLE001 - torch missing or unusable: numpy fallback
            pass
    return lambda dst, src: np.copyto(dst, src, casting="unsafe")
_MEM_CACHE: dict[str, dict] = {}
_EMB_CACHE: dict[str, dict[str, np.ndarray]] = {}


def _non_en(langs: Sequence[str]) -> np.ndarray:
    return np.array([lang not in ("en", "und") for lang in langs], dtype=np.float64)


def fusion_features(z: np.ndarray, strong: np.ndarray, weak: np.ndarray, non_en: np.ndarray,
                    counter: np.ndarray) -> np.ndarray:
    """Text-path fusion inputs; with non-negative weights on all but ``weak`` and ``non_en`` the fused
    probability rises with the probe logit and strong keywords and falls with counter evidence."""
    en = 1.0 - non_en
    return np.column_stack([z * en, z * non_en, strong * en, strong * non_en, weak, non_en, -counter])


class ConceptModel:
    """Use :func:`fit_concept_model` to build one; ``from_dict`` restores one from ``to_dict`` (JSON)."""

    def __init__(self, state: dict, encoder=None):
        self._state = state
        self._encoder = encoder
        self.concept_ids: list[str] = list(state["concept_ids"])
        self.operating_points: dict = state["operating_points"]
        self.operating_points_embedding: dict = state["operating_points_embedding"]
        self.calibrated: bool = bool(state["calibrated"])
        self.calibration_note: str = state["calibration_note"]
        self.modality: str = state["modality"]
        self.encoder_name: str = state["encoder"]["name"]
        self.encoder_fingerprint: str = state["encoder"]["fingerprint"]
        self.dim: int = int(state["encoder"]["dim"])
        self.bank_fingerprint: str = state["bank"]["fingerprint"]
        self.bank_version: str = state["bank"]["version"]
        self.cv_report: dict = state.get("cv_report", {})
        self.W_ = np.asarray(state["W"], dtype=np.float32).reshape(self.dim, len(self.concept_ids))
        self.b_ = np.asarray(state["b"], dtype=np.float32)
        self.W_emb_ = np.asarray(state["W_emb"], dtype=np.float32).reshape(self.dim, len(self.concept_ids))
        self.b_emb_ = np.asarray(state["b_emb"], dtype=np.float32)
        self.fusion_ = {c: (np.asarray(v["coef"], dtype=np.float64), float(v["intercept"]))
                        for c, v in state["fusion"].items()}
        self.keywords_ = KeywordTagger(keywords=state["keywords"])  # compiled on first use: texts to tag

    # -- serialisation -------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = copy.deepcopy(self._state)
        d["calibrated"], d["calibration_note"] = self.calibrated, self.calibration_note
        return d

    @classmethod
    def from_dict(cls, d: dict, encoder=None) -> "ConceptModel":
        if not isinstance(d, dict) or d.get("format") != MODEL_FORMAT:
            got = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise InputError(f"expected a concept model dict of format {MODEL_FORMAT}, got format {got!r}; "
                             "refit with fit_concept_model")
        return cls(copy.deepcopy(d), encoder)

    # -- scoring -------------------------------------------------------------------------------------
    @property
    def encoder(self):
        if self._encoder is None:
            from analyzer.encoders import get_encoder

            enc = get_encoder(self.encoder_name)
            if enc.fingerprint != self.encoder_fingerprint:
                raise InputError(f"expected the encoder {self.encoder_name} the model was fitted with "
                                 f"(fingerprint {self.encoder_fingerprint[:12]}), got {enc.fingerprint[:12]}; "
                                 "refit the model")
            self._encoder = enc
        return self._encoder

    def logits(self, embeddings: np.ndarray, *, embedding_path: bool = False) -> np.ndarray:
        """(k, n) float32 linear scores, one contiguous row per concept: one matrix product.

        float32 input: a single BLAS call. float16 input: converted in cache-sized chunks (torch's vectorised
        half-to-float copy when available, numpy otherwise) straight into the matrix product, so the float32
        copy of the whole batch never exists.
        """
        W, b = (self.W_emb_, self.b_emb_) if embedding_path else (self.W_, self.b_)
        Wt = np.ascontiguousarray(W.T)
        E = embeddings
        if E.dtype == np.float32:
            out = np.matmul(Wt, E.T)
        else:
            n = E.shape[0]
            rows = max(1024, _CHUNK_BYTES // (4 * max(E.shape[1], 1)))  # big blocks: BLAS calls stay efficient
            out = np.empty((Wt.shape[0], n), dtype=np.float32)
            buf = np.empty((min(rows, max(n, 1)), E.shape[1]), dtype=np.float32)
            convert = _half_copier(E)
            for i in range(0, n, rows):
                m = min(rows, n - i)
                convert(buf[:m], E[i:i + m])
                np.matmul(Wt, buf[:m].T, out=out[:, i:i + m])
        out += b[:, None]
        return out

    def _check(self, texts, embeddings, modality):
        if modality not in ("text", "image"):
            raise InputError(f"expected modality 'text' or 'image', got {modality!r}")
        if texts is None and embeddings is None:
            raise InputError("expected texts or embeddings to score, got neither")
        if embeddings is not None:
            embeddings = np.asarray(embeddings)
            if embeddings.ndim != 2 or embeddings.shape[1] != self.dim:
                raise InputError(f"expected embeddings of shape (n, {self.dim}) from {self.encoder_name}, got "
                                 f"{embeddings.shape}; use the encoder the model was fitted with")
            if embeddings.dtype not in (np.float16, np.float32):
                embeddings = embeddings.astype(np.float32)
        if texts is not None:
            texts = list(texts)
            if embeddings is not None and len(texts) != embeddings.shape[0]:
                raise InputError(f"expected one text per embedding row, got {len(texts)} texts and "
                                 f"{embeddings.shape[0]} rows; align them by item id")
        return texts, embeddings

    def score(self, texts=None, embeddings=None, modality: str = "text") -> dict[str, np.ndarray]:
        """Calibrated probability per concept, float64 in [0, 1]."""
        texts, E = self._check(texts, embeddings, modality)
        self._note_modality(modality)
        has_text = np.zeros(0, dtype=bool)
        if texts is not None:
            has_text = np.array([bool(t) and bool(str(t).strip()) for t in texts], dtype=bool)
        if E is None:
            E = np.zeros((len(texts), self.dim), dtype=np.float32)
            if has_text.any():
                E[has_text] = self.encoder.encode_text([str(texts[i]) for i in np.nonzero(has_text)[0]])
        # embedding path for every row: one matmul + sigmoid
        zz = self.logits(E, embedding_path=True)
        np.clip(zz, -40, 40, out=zz)
        np.negative(zz, out=zz)
        np.exp(zz, out=zz)
        zz += 1.0
        np.reciprocal(zz, out=zz)
        out = {c: zz[j].astype(np.float64) for j, c in enumerate(self.concept_ids)}
        if texts is not None and has_text.any():
            sel = np.nonzero(has_text)[0]
            sub = [str(texts[i]) for i in sel]
            langs = detect_languages(sub)
            kw = self.keywords_.transform(sub, langs)
            non_en = _non_en(langs)
            z = self.logits(np.ascontiguousarray(E[sel]).astype(np.float32))
            for j, c in enumerate(self.concept_ids):
                coef, icpt = self.fusion_[c]
                F = fusion_features(z[j].astype(np.float64), kw[:, j, 0], kw[:, j, 1], non_en, kw[:, j, 2])
                out[c][sel] = sigmoid(F @ coef + icpt)
        return out

    def _note_modality(self, modality: str) -> None:
        """Scoring image rows with a model calibrated on text marks it uncalibrated (model.json, summary, report)."""
        if modality == "image" and self.modality != "image" and self.calibrated:
            self.calibrated = False
            self.calibration_note = (
                f"UNCALIBRATED for image embeddings: thresholds were fitted on {self.encoder_name} text "
                "embeddings of labelled captions; no labelled images exist for this encoder, so probabilities "
                "and the screen/confirm points on images are indicative only. " + self.calibration_note)

    def embedding_head(self, modality: str = "text") -> tuple[np.ndarray, np.ndarray]:
        """(W (dim, k) float32, b (k,) float32) of the embedding path: for unit rows U without captions,
        ``score(None, U, modality)[c] == sigmoid(U @ W + b)[:, j]``. Lets a caller fuse normalisation and
        scoring block by block (analyzer.tag.batch.score_embeddings)."""
        if modality not in ("text", "image"):
            raise InputError(f"expected modality 'text' or 'image', got {modality!r}")
        self._note_modality(modality)
        return self.W_emb_, self.b_emb_

    def decide(self, scores: dict[str, np.ndarray], point: str = "confirm") -> dict[str, np.ndarray]:
        return {c: scores[c] >= self.operating_points[c][point]["threshold"] for c in self.concept_ids}

    def detect_languages(self, texts):
        return detect_languages(texts)


# -- fitting -------------------------------------------------------------------------------------------
def _encode(encoder, texts: list[str]) -> np.ndarray:
    """Encode with a per-text in-process cache (a bank with a few new probe examples encodes only those)."""
    ns = encoder.name + ":" + encoder.fingerprint
    cache = _EMB_CACHE.setdefault(ns, {})
    missing = [t for t in dict.fromkeys(texts) if t not in cache]
    if missing:
        E = np.asarray(encoder.encode_text(missing), dtype=np.float32)
        cache.update(zip(missing, E))
    return np.stack([cache[t] for t in texts]) if texts else np.zeros((0, encoder.dim), np.float32)


def _code_fingerprint() -> str:
    """sha256 of the fitting code, so a changed fit never reuses a cached model."""
    h = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for name in ("model.py", "calibration.py", "data.py", "keywords.py", "taggers.py", "bank.py", "evaluate.py"):
        try:
            h.update((here / name).read_bytes())
        except OSError:
            h.update(name.encode())
    return h.hexdigest()


def _cache_dir() -> Path | None:
    if os.environ.get("ANALYZER_NO_MODEL_CACHE"):
        return None
    base = os.environ.get("ANALYZER_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "dataset-risk-analyzer")
    return Path(base) / "concept-models"


def fit_concept_model(bank: ConceptBank, encoder, seed: int = 0, *, modality: str = "text") -> ConceptModel:
    """Fit taggers, fusion, calibration and operating points for ``bank`` in ``encoder``'s space.

    Results are cached in memory and as JSON under ``~/.cache/dataset-risk-analyzer/concept-models`` (set
    ``ANALYZER_NO_MODEL_CACHE=1`` to disable), keyed by the bank, encoder weights, training data and seed.
    """
    if modality not in ("text", "image"):
        raise InputError(f"expected modality 'text' or 'image', got {modality!r}")
    rows = load_training_rows()
    key = hashlib.sha256(json.dumps([MODEL_FORMAT, _code_fingerprint(), bank.fingerprint, encoder.name,
                                     encoder.fingerprint, rows.sha256, int(seed)]).encode()).hexdigest()[:32]
    key = "model-" + key
    state = _cache_get(key)
    if state is None:
        state = _fit_state(bank, encoder, seed, rows)
        _cache_put(key, state)
    state = copy.deepcopy(state)
    state["modality"] = modality
    if modality == "image":
        state["calibrated"] = False
        state["calibration_note"] = (
            f"UNCALIBRATED: {encoder.name} has no labelled image data; probes were fitted on its text "
            "embeddings of labelled captions and transferred to image embeddings, so probabilities and "
            "thresholds on images are indicative only. Label a sample and run `analyzer probe fit`.")
    return ConceptModel(state, encoder)


def _cv_logits(X, y, seed, C):
    # scikit-learn is imported where a model is fitted: a scan that loads a fitted model never imports it (2 s)
    from sklearn.model_selection import StratifiedKFold

    from analyzer.concepts.taggers import ProbeTagger

    oof = np.zeros(len(y))
    skf = StratifiedKFold(n_splits=min(N_FOLDS, int(min(np.bincount(y)))), shuffle=True, random_state=seed)
    for tr, te in skf.split(X, y):
        oof[te] = ProbeTagger(C=C, random_state=seed).fit(X[tr], y[tr]).decision_function(X[te])
    return oof


def _cv_fusion(F, y, seed):
    from sklearn.model_selection import StratifiedKFold

    oof = np.zeros(len(y))
    skf = StratifiedKFold(n_splits=min(N_FOLDS, int(min(np.bincount(y)))), shuffle=True, random_state=seed + 1)
    for tr, te in skf.split(F, y):
        coef, icpt = fit_fusion(F[tr], y[tr], FUSION_NONNEG)
        oof[te] = sigmoid(F[te] @ coef + icpt)
    return oof


def _cache_get(name: str) -> dict | None:
    if name in _MEM_CACHE:
        return _MEM_CACHE[name]
    cdir = _cache_dir()
    if cdir is not None and (cdir / f"{name}.json").is_file():
        try:
            d = json.loads((cdir / f"{name}.json").read_text())
        except (OSError, ValueError):
            return None
        if isinstance(d, dict) and d.get("format") == MODEL_FORMAT:
            _MEM_CACHE[name] = d
            return d
    return None


def _cache_put(name: str, d: dict) -> None:
    _MEM_CACHE[name] = d
    cdir = _cache_dir()
    if cdir is None:
        return
    try:
        cdir.mkdir(parents=True, exist_ok=True)
        tmp = cdir / f".{name}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(d))
        os.replace(tmp, cdir / f"{name}.json")
    except OSError:
        pass


def _fit_concept(c, texts: list[str], y: np.ndarray, source: str, encoder, seed: int, kwt: KeywordTagger,
                 groups: list[str] | None = None) -> dict:
    """Probe, fusion, calibration and operating points of one concept on its labelled texts.

    ``groups``: the reporting group of each text (a training caption's labelled language, "prompt" for the
    bank's prompts and probe examples); the cross-validated figures are also reported per group."""
    if len(np.unique(y)) < 2 or min(np.bincount(y)) < 2:
        raise InputError(f"expected positive and negative examples for concept {c.id!r}, got "
                         f"{int(y.sum())} positives of {len(y)}; add prompts or probe examples")
    X = _encode(encoder, texts)
    langs = detect_languages(texts)
    jj = kwt.concept_ids_.index(c.id)
    kw = kwt.transform(texts, langs)[:, jj, :]
    from analyzer.concepts.taggers import ProbeTagger

    C = ProbeTagger().C
    z_oof = _cv_logits(X, y, seed, C)
    F = fusion_features(z_oof, kw[:, 0], kw[:, 1], _non_en(langs), kw[:, 2])
    p_oof = _cv_fusion(F, y, seed)
    coef, icpt = fit_fusion(F, y, FUSION_NONNEG)
    probe = ProbeTagger(C=C, random_state=seed).fit(X, y)
    w, b = probe.coef_[0].astype(np.float32), float(probe.intercept_[0])
    what = f"{N_FOLDS}-fold cross-validated predictions on {len(y)} examples ({source})"
    ops = choose_operating_points(p_oof, y, measured_on=what)
    # embedding path: affine map of the probe logit, matched to the text path thresholds
    a, c0 = fit_platt(z_oof, y)
    emb_pts = choose_operating_points(sigmoid(a * z_oof + c0), y, measured_on=what + ", embedding only")
    alpha, beta = _match_thresholds(emb_pts, ops, a, c0)
    q_mapped = sigmoid(alpha * z_oof + beta)
    ops_emb = {pt: dict(point_metrics(q_mapped, y, ops[pt]["threshold"]), measured_on=what + ", embedding only")
               for pt in ("screen", "confirm")}
    return {"format": MODEL_FORMAT, "w": w.tolist(), "b": b, "w_emb": (np.float32(alpha) * w).tolist(),
            "b_emb": float(alpha * b + beta),
            "fusion": {"coef": coef.tolist(), "intercept": icpt, "features": FUSION_FEATURES},
            "ops": ops, "ops_emb": ops_emb,
            "cv_report": cv_report(p_oof, q_mapped, y, np.array(groups or langs, dtype=object), ops, source,
                                   seed)}


def _fit_state(bank: ConceptBank, encoder, seed: int, rows) -> dict:
    kwt = KeywordTagger(bank).compile()
    context = [c.id for c in bank.concepts if c.id not in rows.labels]
    kw_caps = kwt.transform(rows.texts, detect_languages(rows.texts))
    kw_strong = {c: kw_caps[:, kwt.concept_ids_.index(c), 0] > 0 for c in context}
    pool, sets = assemble(bank, rows, kw_strong)
    k, d = len(bank.concepts), int(encoder.dim)
    W, b = np.zeros((d, k), np.float32), np.zeros(k, np.float32)
    W_emb, b_emb = np.zeros((d, k), np.float32), np.zeros(k, np.float32)
    fusion, ops, ops_emb, cv_report = {}, {}, {}, {}
    code = _code_fingerprint()
    lang_of: dict[str, str] = {}
    for t, lang in zip(rows.texts, rows.langs):
        lang_of.setdefault(t, lang)
    for j, c in enumerate(bank.concepts):
        cs = sets[c.id]
        texts = [pool[i] for i in cs.idx]
        groups = [lang_of.get(t, "prompt") for t in texts]
        key = "concept-" + hashlib.sha256(json.dumps(
            [MODEL_FORMAT, code, encoder.name, encoder.fingerprint, int(seed), c.id, c.keywords, texts,
             cs.y.tolist(), cs.label_source, groups]).encode()).hexdigest()[:32]
        res = _cache_get(key)
        if res is None:
            res = _fit_concept(c, texts, cs.y, cs.label_source, encoder, seed, kwt, groups)
            _cache_put(key, res)
        W[:, j], b[j] = np.asarray(res["w"], np.float32), res["b"]
        W_emb[:, j], b_emb[j] = np.asarray(res["w_emb"], np.float32), res["b_emb"]
        fusion[c.id], ops[c.id], ops_emb[c.id], cv_report[c.id] = (res["fusion"], res["ops"], res["ops_emb"],
                                                                    res["cv_report"])
    return {
        "format": MODEL_FORMAT, "concept_ids": bank.concept_ids,
        "roles": {c.id: c.role for c in bank.concepts},
        "encoder": {"name": encoder.name, "fingerprint": encoder.fingerprint, "dim": d},
        "bank": {"fingerprint": bank.fingerprint, "version": bank.version, "name": bank.name},
        "training": {"files": rows.files, "sha256": rows.sha256, "seed": int(seed),
                     "examples": {c: int(len(s.y)) for c, s in sets.items()},
                     "positives": {c: int(s.y.sum()) for c, s in sets.items()}},
        "W": W.ravel().tolist(), "b": b.tolist(), "W_emb": W_emb.ravel().tolist(), "b_emb": b_emb.tolist(),
        "fusion": fusion, "keywords": {c.id: c.keywords for c in bank.concepts},
        "operating_points": ops, "operating_points_embedding": ops_emb, "cv_report": cv_report,
        "calibrated": True, "modality": "text",
        "calibration_note": (
            f"Calibrated for {encoder.name} text: logistic fusion of probe and keyword signals fitted on "
            f"{N_FOLDS}-fold cross-validated predictions of the project's labelled captions (seed {seed}). "
            "Probabilities reflect the training mix of positives, not a dataset's prevalence; use the "
            "screen/confirm points, whose precision and recall are stored with them."),
    }


def _match_thresholds(emb_pts: dict, text_pts: dict, a: float, c0: float) -> tuple[float, float]:
    """Affine (alpha, beta) on the probe logit so that the embedding-only screen/confirm decisions land on
    the text path's thresholds; falls back to Platt (a, c0) shifted to the confirm threshold."""
    us, uc = logit(emb_pts["screen"]["threshold"]), logit(emb_pts["confirm"]["threshold"])
    ts, tc = logit(text_pts["screen"]["threshold"]), logit(text_pts["confirm"]["threshold"])
    zs, zc = (us - c0) / max(a, 1e-9), (uc - c0) / max(a, 1e-9)
    if zc - zs > 1e-6 and tc - ts > 1e-6:
        alpha = (tc - ts) / (zc - zs)
        if 0.05 * a <= alpha <= 20 * a:
            return float(alpha), float(ts - alpha * zs)
    alpha = max(a, 1e-3)
    return float(alpha), float(tc - alpha * zc)
