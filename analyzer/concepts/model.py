"""The fitted concept model: probe + keyword fusion, calibration and operating points, per encoder.

A scikit-learn style estimator: ``ConceptModel(bank=..., encoder=..., seed=0, modality="text").fit()`` returns
the model with its learned state in attributes ending in ``_`` (``concept_ids_``, ``operating_points_``,
``calibrated_``, ``W_``, ``fusion_`` ...); ``to_dict`` / ``from_dict`` are its JSON form (RUN/model.json). The
read-only properties without the underscore (``concept_ids``, ``operating_points``, ``calibrated`` ...) are the
interface the other stages read. Fitting itself is in :mod:`analyzer.concepts.fitting`.

Scoring paths (docs/concepts.md):
- text path (a caption is present): per concept, a sign-constrained logistic fusion of the probe logit
  ``z = e @ w + b`` and keyword hits, with separate weights on English and non-English captions (the caption's
  language from analyzer/concepts/language.py). Calibrated on cross-validated predictions.
- embedding path (no caption: image or precomputed vectors): one matrix product ``E @ W_emb + b_emb`` and a
  sigmoid. The affine map from probe logit to probability is fitted so that the text path's thresholds mean
  the same decisions on this path (screen and confirm are measured separately and stored in
  ``operating_points_embedding``).
"""
from __future__ import annotations

import copy

import numpy as np

from analyzer.concepts.bank import ConceptBank
from analyzer.concepts.cache import FitCache
from analyzer.concepts.calibration import sigmoid
from analyzer.concepts.fitting import FUSION_FEATURES, MODEL_FORMAT, fit_state, fusion_features, non_en_mask
from analyzer.concepts.keywords import KeywordTagger
from analyzer.concepts.language import detect_languages
from analyzer.concepts.modality_calibration import calibrate_modalities, how_to_calibrate, mark_scan_modality
from analyzer.concepts.params import NotFittedError, ParamsMixin
from analyzer.config import cache_dir
from analyzer.errors import InputError
from analyzer.vectors import to_float32

MODALITIES = ("text", "image", "video", "audio")
# caption languages of a model dict written before the support rule existed (analyzer/concepts/support.py decides them
# at fit time since): the seven languages whose labelled captions were in the training data then
SUPPORTED_LANGUAGES = ("en", "de", "fr", "es", "it", "pt", "nl")
_CHUNK_BYTES = 128 * 2**20  # float32 block of float16 input widened at a time


class ConceptModel(ParamsMixin):
    """Per-concept probabilities for texts and embeddings in one encoder's space.

    Parameters (stored as given): ``bank`` (ConceptBank), ``encoder`` (the encoder whose space is fitted; None
    for a model restored with ``from_dict``: resolved by name when texts must be encoded), ``seed``, ``modality``
    ("text", or "image" when the rows to score are image embeddings: the model is then marked uncalibrated),
    ``cache`` (a :class:`FitCache` to reuse between fits; None: a new one on :func:`analyzer.config.cache_dir`,
    so fitted states are written only to an explicit cache directory).
    """

    def __init__(self, bank: ConceptBank | None = None, encoder=None, *, seed: int = 0, modality: str = "text",
                 cache: FitCache | None = None):
        self.bank = bank
        self.encoder = encoder
        self.seed = seed
        self.modality = modality
        self.cache = cache

    def fit(self, X=None, y=None) -> "ConceptModel":
        """Fit taggers, fusion, calibration and operating points on the project's labelled captions and the
        bank's prompts and probe examples (``X`` and ``y`` are not used: the training data ship with the package)."""
        _check_modality(self.modality)
        if self.bank is None or self.encoder is None:
            raise InputError("expected ConceptModel(bank=..., encoder=...) to fit, got "
                             f"bank={type(self.bank).__name__}, encoder={type(self.encoder).__name__}")
        cache = self.cache if self.cache is not None else FitCache(cache_dir())
        state = copy.deepcopy(fit_state(self.bank, self.encoder, int(self.seed), cache))
        state["modality"] = self.modality
        state = calibrate_modalities(state, self.bank, self.encoder, int(self.seed))  # labelled media in the bank
        if self.modality != "text":
            mark_scan_modality(state, self.modality, self.encoder.name)
        self._set_state(state)
        return self

    def _set_state(self, d: dict) -> None:
        dim, k = int(d["encoder"]["dim"]), len(d["concept_ids"])
        self.concept_ids_: list[str] = list(d["concept_ids"])
        self.roles_: dict = d["roles"]
        self.encoder_info_: dict = d["encoder"]  # name, fingerprint (of the weights), dim
        self.bank_info_: dict = d["bank"]  # fingerprint, version, name
        self.training_: dict = d["training"]
        self.n_features_in_ = dim
        self.W_ = np.asarray(d["W"], dtype=np.float32).reshape(dim, k)
        self.b_ = np.asarray(d["b"], dtype=np.float32)
        self.W_emb_ = np.asarray(d["W_emb"], dtype=np.float32).reshape(dim, k)
        self.b_emb_ = np.asarray(d["b_emb"], dtype=np.float32)
        self.fusion_ = {c: (np.asarray(v["coef"], dtype=np.float64), float(v["intercept"]))
                        for c, v in d["fusion"].items()}
        self.keyword_spec_: dict = d["keywords"]
        self.operating_points_: dict = d["operating_points"]
        self.operating_points_embedding_: dict = d["operating_points_embedding"]
        self.cv_report_: dict = d.get("cv_report", {})
        self.calibrated_ = bool(d["calibrated"])
        self.calibration_note_: str = d["calibration_note"]
        self.modality_: str = d["modality"]
        # the row modalities whose thresholds were measured on labelled data of that modality (captions: text)
        self.calibrated_modalities_: tuple = tuple(d.get("calibrated_modalities", ("text",)))
        # per media modality: the probe heads and operating points measured on labelled examples of it
        # (analyzer/concepts/modality_calibration.py)
        self.modality_heads_: dict = d.get("modality_heads", {})
        self._heads = {m: (np.asarray(h["W"], dtype=np.float32).reshape(dim, k), np.asarray(h["b"], dtype=np.float32))
                       for m, h in self.modality_heads_.items()}
        # caption languages with measured support (docs/concepts.md); captions in others are "not assessed"
        self.supported_languages_: tuple = tuple(d.get("supported_languages", SUPPORTED_LANGUAGES))
        # the rule and the cross-validated figures per language behind supported_languages_ (analyzer/concepts/support.py)
        self.language_support_: dict = d.get("language_support", {})
        self._keywords: KeywordTagger | None = None  # patterns compiled on first use: a scan without texts never does
        self._resolved_encoder = self.encoder

    # -- the fitted state, read by the other stages ---------------------------------------------------
    def _fitted(self, name: str):
        try:
            return getattr(self, name)
        except AttributeError:
            raise NotFittedError("expected a fitted ConceptModel, got an unfitted one; call fit() or "
                                 "ConceptModel.from_dict()") from None

    concept_ids = property(lambda self: self._fitted("concept_ids_"), doc="concept ids, in column order")
    operating_points = property(lambda self: self._fitted("operating_points_"),
                                doc="{concept: {'screen'|'confirm': {threshold, precision, recall, ...}}}")
    operating_points_embedding = property(lambda self: self._fitted("operating_points_embedding_"),
                                          doc="the same thresholds measured on the embedding-only path")
    cv_report = property(lambda self: self._fitted("cv_report_"), doc="cross-validated figures per concept")
    supported_languages = property(lambda self: list(self._fitted("supported_languages_")),
                                   doc="caption languages with measured support (analyzer/concepts/support.py)")
    language_support = property(lambda self: self._fitted("language_support_"),
                                doc="{rule, languages: {lang: {supported, reasons, figures}}, supported}")
    calibrated = property(lambda self: self._fitted("calibrated_"), doc="False for image rows or image modality")
    calibration_note = property(lambda self: self._fitted("calibration_note_"))
    dim = property(lambda self: int(self._fitted("encoder_info_")["dim"]))
    encoder_name = property(lambda self: self._fitted("encoder_info_")["name"])
    encoder_fingerprint = property(lambda self: self._fitted("encoder_info_")["fingerprint"])
    bank_fingerprint = property(lambda self: self._fitted("bank_info_")["fingerprint"])
    bank_version = property(lambda self: self._fitted("bank_info_")["version"])

    @property
    def keywords_(self) -> KeywordTagger:
        """The fitted KeywordTagger of the model's keyword lists (compiled on first use, about 0.15 s)."""
        if self._fitted("_keywords") is None:
            self._keywords = KeywordTagger(keywords=self.keyword_spec_).fit()
        return self._keywords

    def calibrated_for(self, modality: str) -> bool:
        """Whether rows of ``modality`` are scored against thresholds measured on labelled data of that modality."""
        return modality in self._fitted("calibrated_modalities_")

    def caption_languages(self, texts) -> list[str]:
        """The language of each caption (analyzer/concepts/language.py): an ISO 639-1 code where one exists, "und"
        when it cannot be told (no language scores >= 0.3), "zxx" when there is nothing to read (under 2 letters)."""
        return detect_languages(texts)

    def language_supported(self, lang: str) -> bool:
        """Whether captions in ``lang`` are assessed with measured support: ``lang`` passed the support rule on the
        cross-validated figures at fit time (``language_support``; analyzer/concepts/support.py)."""
        return lang in self._fitted("supported_languages_")

    def text_encoder(self):
        """The encoder the model was fitted with; for a model restored without one, resolved by name and checked
        against the fitted weights' fingerprint."""
        if self._fitted("_resolved_encoder") is None:
            from analyzer.encoders import get_encoder

            enc = get_encoder(self.encoder_name)
            if enc.fingerprint != self.encoder_fingerprint:
                raise InputError(f"expected the encoder {self.encoder_name} the model was fitted with "
                                 f"(fingerprint {self.encoder_fingerprint[:12]}), got {enc.fingerprint[:12]}; "
                                 "refit the model")
            self._resolved_encoder = enc
        return self._resolved_encoder

    # -- serialisation -------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The JSON form (RUN/model.json): every learned attribute, plain lists and numbers, no pickle."""
        d = {
            "format": MODEL_FORMAT, "concept_ids": self.concept_ids, "roles": self.roles_,
            "encoder": self.encoder_info_, "bank": self.bank_info_, "training": self.training_,
            "W": self.W_.ravel().tolist(), "b": self.b_.tolist(), "W_emb": self.W_emb_.ravel().tolist(),
            "b_emb": self.b_emb_.tolist(),
            "fusion": {c: {"coef": coef.tolist(), "intercept": icpt, "features": FUSION_FEATURES}
                       for c, (coef, icpt) in self.fusion_.items()},
            "keywords": self.keyword_spec_, "operating_points": self.operating_points_,
            "operating_points_embedding": self.operating_points_embedding_, "cv_report": self.cv_report_,
            "calibrated": self.calibrated_, "modality": self.modality_, "calibration_note": self.calibration_note_,
            "calibrated_modalities": list(self.calibrated_modalities_),
            "modality_heads": self.modality_heads_,
            "supported_languages": list(self.supported_languages_), "language_support": self.language_support_,
        }
        return copy.deepcopy(d)

    @classmethod
    def from_dict(cls, d: dict, encoder=None) -> "ConceptModel":
        if not isinstance(d, dict) or d.get("format") != MODEL_FORMAT:
            got = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise InputError(f"expected a concept model dict of format {MODEL_FORMAT}, got format {got!r}; "
                             "refit with fit_concept_model")
        model = cls(encoder=encoder, seed=int(d["training"]["seed"]), modality=d["modality"])
        model._set_state(copy.deepcopy(d))
        return model

    # -- scoring -------------------------------------------------------------------------------------
    def logits(self, embeddings: np.ndarray, *, embedding_path: bool = False, modality: str | None = None
               ) -> np.ndarray:
        """(k, n) float32 linear scores, one contiguous row per concept: one matrix product.

        float32 input: a single BLAS call. float16 input: widened block by block (``analyzer.vectors.to_float32``)
        straight into the matrix product, so the float32 copy of the whole batch never exists.
        """
        W, b = (self.W_emb_, self.b_emb_) if embedding_path else (self.W_, self.b_)
        if embedding_path and modality in self._heads:  # measured on labelled data of that modality
            W, b = self._heads[modality]
        Wt = np.ascontiguousarray(W.T)
        E = embeddings
        if E.dtype == np.float32:
            out = np.matmul(Wt, E.T)
        else:
            n = E.shape[0]
            rows = max(1024, _CHUNK_BYTES // (4 * max(E.shape[1], 1)))  # big blocks: BLAS calls stay efficient
            out = np.empty((Wt.shape[0], n), dtype=np.float32)
            for i in range(0, n, rows):
                m = min(rows, n - i)
                np.matmul(Wt, to_float32(E[i:i + m]).T, out=out[:, i:i + m])
        out += b[:, None]
        return out

    def _check(self, texts, embeddings, modality):
        _check_modality(modality)
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
                E[has_text] = self.text_encoder().encode_text([str(texts[i]) for i in np.nonzero(has_text)[0]])
        # embedding path for every row: one matmul + sigmoid
        zz = self.logits(E, embedding_path=True, modality=modality)
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
            non_en = non_en_mask(langs)
            z = self.logits(np.ascontiguousarray(E[sel]).astype(np.float32))
            for j, c in enumerate(self.concept_ids):
                coef, icpt = self.fusion_[c]
                F = fusion_features(z[j].astype(np.float64), kw[:, j, 0], kw[:, j, 1], non_en, kw[:, j, 2])
                fused = sigmoid(F @ coef + icpt)
                # a modality with a measured head keeps it: a caption can add evidence, never remove it
                out[c][sel] = np.maximum(fused, out[c][sel]) if modality in self._heads else fused
        return out

    def _note_modality(self, modality: str) -> None:
        """Scoring image rows with a model calibrated on text marks it uncalibrated (model.json, summary, report)."""
        if modality != "text" and not self.calibrated_for(modality) and self.calibrated_:
            self.calibrated_ = False
            self.calibration_note_ = (
                f"UNCALIBRATED for {modality} embeddings: thresholds were fitted on {self.encoder_name} text "
                f"embeddings of labelled captions; no labelled {modality} data exist for this encoder, so "
                f"probabilities and the screen/confirm points on {modality} rows are indicative only. "
                + how_to_calibrate(modality, self.encoder_name) + " " + self.calibration_note_)

    def embedding_head(self, modality: str = "text") -> tuple[np.ndarray, np.ndarray]:
        """(W (dim, k) float32, b (k,) float32) of the embedding path: for unit rows U without captions,
        ``score(None, U, modality)[c] == sigmoid(U @ W + b)[:, j]``. Lets a caller fuse normalisation and
        scoring block by block (analyzer.tagging.scoring.score_embeddings)."""
        _check_modality(modality)
        self._note_modality(modality)
        return self._heads.get(modality, (self.W_emb_, self.b_emb_))

    def modality_head(self, modality: str) -> dict | None:
        """The head fitted on labelled ``modality`` examples (W, b, operating_points, detector...), or None."""
        return self._fitted("modality_heads_").get(modality)

    def decide(self, scores: dict[str, np.ndarray], point: str = "confirm") -> dict[str, np.ndarray]:
        return {c: scores[c] >= self.operating_points[c][point]["threshold"] for c in self.concept_ids}

    def detect_languages(self, texts):
        return detect_languages(texts)


def _check_modality(modality) -> None:
    if modality not in MODALITIES:
        raise InputError(f"expected modality {', '.join(repr(m) for m in MODALITIES)}, got {modality!r}")


def fit_concept_model(bank: ConceptBank, encoder, seed: int = 0, *, modality: str = "text",
                      cache: FitCache | None = None) -> ConceptModel:
    """``ConceptModel(bank=bank, encoder=encoder, seed=seed, modality=modality, cache=cache).fit()``.

    Fitted states are reused from, and written to, ``CACHE_DIR/concept-models`` only when a cache directory is set
    (``--cache-dir`` / ``ANALYZER_CACHE_DIR``); keyed by the bank, encoder weights, training data, code and seed.
    """
    return ConceptModel(bank=bank, encoder=encoder, seed=seed, modality=modality, cache=cache).fit()
