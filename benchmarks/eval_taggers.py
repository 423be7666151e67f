"""Measure the concept taggers; prints one JSON document.

    .venv/bin/python benchmarks/eval_taggers.py [--encoder e5-small+use-m3] [--seed 0] [--skip-external]
        [--cc3m-limit N] [--flickr-limit N] [--laion-limit N] [--speed-rows N] [--bootstrap 1000] [--out FILE]

Figures:
- cv: cross-validated figures per concept and per language on the project's own training captions
  (by_language: the labelled language of each caption, "prompt" for the bank's prompts; AUROC and precision/recall
  with percentile-bootstrap 95% intervals); language_support: the measured-support rule and its decisions.
- heldout: benchmarks/data/multilingual_eval.csv (420 captions, 21 languages, written after the training captions and
  never trained or tuned on): AUROC (95% bootstrap CI) overall and on the issue's twelve languages (pl sv tr ru ja zh
  ko id vi cs ar hi), screen recall on those twelve, confirm false-positive rate on the hard negatives, per language
  AUROC and screen recall, and the language identification's accuracy on the set.
- dev: evaluate_labels on ../shared/eval/dev_captions.csv (measurement only: never trained or tuned on),
  per language, plus two baselines (keyword lists alone; plain MiniLM prompt similarity).
- cc3m: adult_sexual firing rate on the CC3M validation captions (target <= 0.05% at confirm).
- flickr8k: minor agreement with the human Flickr8k captions against two reference rules: ``words``, the human
  caption names a child with a fixed list of English child nouns (FLICKR_CHILD_WORDS, independent of the bank), and
  ``bank_patterns``, the bank's strict English minor patterns after exclusions (see docs/concepts.md).
- laion_style: firing rates on raw LAION-style alt-text (no labels; informational).
- bias: the bias audit summary (minor-tag rate on adult descriptions per group, per batch, and on the
  embedding path, i.e. the same captions' vectors scored without text).
- speed: embedding-path tagging of float16 512-d vectors against a float32 numpy matmul of the same shapes.
Flagged captions are never printed: only counts and rates.
Embeddings of the held-out, dev and external captions are cached under CACHE_DIR/bench-emb in chunks of 1,024
captions when a cache directory is set (ANALYZER_CACHE_DIR; an interrupted run keeps its finished chunks); without
one they are encoded on every run. With the default encoder the full external files take 30-60 minutes to encode on
the 2-core dev machine: ``--cc3m-limit``/``--flickr-limit`` take seeded samples, ``--laion-limit`` the first N.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"

from analyzer.concepts import (ConceptModel, KeywordTagger, evaluate_labels, fit_concept_model,  # noqa: E402
                               load_bank)
from analyzer.concepts.evaluate import evaluate_scores  # noqa: E402
from analyzer.concepts.bias import run_bias_audit  # noqa: E402
from analyzer.concepts.calibration import auroc  # noqa: E402
from analyzer.encoders import DEFAULT_ENCODER, get_encoder  # noqa: E402

ISSUE_LANGS = ("pl", "sv", "tr", "ru", "ja", "zh", "ko", "id", "vi", "cs", "ar", "hi")
FLICKR_CHILD_WORDS = re.compile(r"\b(child|children|kid|kids|boy|boys|girl|girls|baby|babies|toddler|toddlers|infant|"
                                r"infants|teen|teens|teenager|teenagers|youngster|youngsters|schoolboy|schoolboys|"
                                r"schoolgirl|schoolgirls|schoolchildren)\b", re.IGNORECASE)


def cached_encode(encoder, texts: list[str], tag: str, chunk: int = 1024) -> np.ndarray:
    """Text embeddings, cached under CACHE_DIR/bench-emb in chunks of ``chunk`` captions (an interrupted run keeps
    the chunks it finished); encoded on every run without a cache directory."""
    from analyzer.config import cache_dir

    base = cache_dir()
    if base is None:
        return encoder.encode_text(texts).astype(np.float32)
    d = base / "bench-emb"
    parts = []
    for i in range(0, len(texts), chunk):
        part = texts[i:i + chunk]
        h = hashlib.sha256((encoder.name + encoder.fingerprint + "\x00".join(part)).encode()).hexdigest()[:24]
        p = d / f"{tag}-{h}.npy"
        if p.is_file():
            parts.append(np.load(p, allow_pickle=False))
            continue
        E = encoder.encode_text(part).astype(np.float32)
        d.mkdir(parents=True, exist_ok=True)
        np.save(p, E, allow_pickle=False)
        parts.append(E)
    return np.concatenate(parts) if parts else np.zeros((0, encoder.dim), np.float32)


def prf(pred: np.ndarray, y: np.ndarray) -> dict:
    tp = int((pred & (y == 1)).sum())
    fp = int((pred & (y == 0)).sum())
    fn = int((~pred & (y == 1)).sum())
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0, "tp": tp, "fp": fp, "fn": fn}


def baselines(bank, encoder, texts, labels, E: np.ndarray) -> dict:
    """Keyword lists alone, and prompt similarity in ``encoder``'s space (``E``: the texts' embeddings)."""
    from analyzer.concepts import FitCache
    from analyzer.config import cache_dir

    kw = KeywordTagger(bank).compile()
    f = kw.transform(texts)
    cache = FitCache(cache_dir())  # the prompts are training texts: a fit with a cache directory encoded them
    out = {}
    for c, y in labels.items():
        j = kw.concept_ids_.index(c)
        s = f[:, j, 0] + 0.5 * f[:, j, 1]
        con = bank.get(c)
        P = cache.encode(encoder, list(con.positive_prompts))
        N = cache.encode(encoder, list(con.negative_prompts))
        sim = (E @ P.T).max(1) - (E @ N.T).max(1)
        out[c] = {"keywords": {"auroc": auroc(s, y), **prf(f[:, j, 0] > 0, y)},
                  "prompt_similarity": {"auroc": auroc(sim, y), **prf(sim > 0, y)}}
    return out


def read_dev() -> tuple[list[str], dict, list[str]] | None:
    p = SHARED / "eval" / "dev_captions.csv"
    if not p.is_file():
        return None
    with p.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return ([r["text"] for r in rows], {c: np.array([int(r[c]) for r in rows]) for c in ("minor", "adult_sexual")},
            [r.get("lang") or "en" for r in rows])


def read_tsv(name: str, col: int, limit: int | None = None) -> list[str] | None:
    p = SHARED / "external" / name
    if not p.is_file():
        return None
    lines = p.read_text(encoding="utf-8").splitlines()[1:]
    texts = [ln.split("\t")[col] for ln in lines if ln.strip()]
    if limit and limit < len(texts):
        rng = np.random.default_rng(0)
        texts = [texts[i] for i in sorted(rng.choice(len(texts), limit, replace=False))]
    return texts


def auroc_ci(p, y, seed=0, B=1000):
    from analyzer.concepts.evaluate import auroc_interval

    return {"auroc": auroc(p, y), "ci": auroc_interval(p, y, B, seed)}


def heldout(model, encoder, seed: int) -> dict | None:
    """The held-out multilingual set (module docstring)."""
    from analyzer.concepts.language import detect_languages

    p = ROOT / "benchmarks" / "data" / "multilingual_eval.csv"
    if not p.is_file():
        return None
    with p.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    texts = [r["text"] for r in rows]
    langs = np.array([r["lang"] for r in rows])
    hard = np.array([r["note"].startswith("hard") for r in rows])
    det = detect_languages(texts)
    s = model.score(texts, cached_encode(encoder, texts, "heldout"))
    m12 = np.isin(langs, ISSUE_LANGS)
    out = {"n": len(rows), "languages": len(set(langs)), "issue_languages": list(ISSUE_LANGS),
           "language_id_accuracy": float(np.mean([d == l for d, l in zip(det, langs)])), "concepts": {}}
    for c in ("minor", "adult_sexual"):
        y = np.array([int(r[c]) for r in rows])
        sc = s[c]
        ts, tc = (model.operating_points[c][pt]["threshold"] for pt in ("screen", "confirm"))
        hn = (y == 0) & hard
        per = {}
        for L in sorted(set(langs)):
            m = langs == L
            per[L] = {"auroc": auroc(sc[m], y[m]), "screen_recall": float((sc[m & (y == 1)] >= ts).mean()),
                      "confirm_recall": float((sc[m & (y == 1)] >= tc).mean()), "positives": int(y[m].sum())}
        out["concepts"][c] = {
            "all": auroc_ci(sc, y, seed), "issue_languages": auroc_ci(sc[m12], y[m12], seed),
            "screen_recall": float((sc[y == 1] >= ts).mean()),
            "screen_recall_issue_languages": float((sc[m12 & (y == 1)] >= ts).mean()),
            "confirm_recall": float((sc[y == 1] >= tc).mean()),
            "confirm_fpr_hard_negatives": float((sc[hn] >= tc).mean()), "hard_negatives": int(hn.sum()),
            "screen_fpr_hard_negatives": float((sc[hn] >= ts).mean()),
            "confirm_fp_hard_negatives_by_note": {n: int(((sc >= tc) & hn & (np.array([r["note"] for r in rows]) == n)).sum())
                                                  for n in sorted({r["note"] for r in rows if r["note"].startswith("hard")})},
            "by_language": per}
    return out


def rates(model, scores: dict) -> dict:
    out = {}
    for c in model.concept_ids:
        s = scores[c]
        out[c] = {pt: {"rate": float((s >= model.operating_points[c][pt]["threshold"]).mean()),
                       "count": int((s >= model.operating_points[c][pt]["threshold"]).sum())}
                  for pt in ("screen", "confirm")}
    return out


def speed(model, rows: int, dim: int = 512, repeats: int = 5) -> dict:
    rng = np.random.default_rng(0)
    state = model.to_dict()
    k = len(model.concept_ids)
    state["encoder"] = dict(state["encoder"], dim=dim, name="synthetic-512", fingerprint="synthetic")
    state["W"] = (rng.normal(size=(dim, k)) * 0.1).astype(np.float32).ravel().tolist()
    state["W_emb"] = state["W"]
    m = ConceptModel.from_dict(state)
    E16 = rng.normal(size=(rows, dim)).astype(np.float16)
    E32 = E16.astype(np.float32)
    W32 = np.asarray(state["W"], np.float32).reshape(dim, k)

    def best(fn, r=repeats):
        ts = []
        for _ in range(r):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        return min(ts)

    # interleave the contenders so a busy machine slows them alike; keep the best of each
    t16 = t32 = t_mm = float("inf")
    for _ in range(repeats):
        t_mm = min(t_mm, best(lambda: E32 @ W32, 1))
        t16 = min(t16, best(lambda: m.score(None, E16, modality="image"), 1))
        t32 = min(t32, best(lambda: m.score(None, E32, modality="image"), 1))
    return {"rows": rows, "dim": dim, "concepts": k, "numpy_float32_matmul_rows_per_s": rows / t_mm,
            "tag_float16_rows_per_s": rows / t16, "ratio_float16_vs_matmul": t_mm / t16,
            "tag_float32_rows_per_s": rows / t32, "ratio_float32_vs_matmul": t_mm / t32,
            "note": "score() includes the sigmoid and the float64 output arrays of every concept"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--encoder", default=DEFAULT_ENCODER)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--skip-external", action="store_true", help="skip CC3M, Flickr8k and LAION-style files")
    ap.add_argument("--cc3m-limit", type=int, default=None, help="sample this many CC3M captions (seeded)")
    ap.add_argument("--flickr-limit", type=int, default=None, help="sample this many Flickr8k captions (seeded)")
    ap.add_argument("--laion-limit", type=int, default=None, help="the first N LAION-style alt-texts (0: skip)")
    ap.add_argument("--speed-rows", type=int, default=500_000, help="rows for the speed figure (0: skip)")
    ap.add_argument("--out", help="also write the JSON here")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    bank = load_bank()
    encoder = get_encoder(a.encoder)
    model = fit_concept_model(bank, encoder, seed=a.seed)
    res: dict = {"encoder": encoder.name, "bank": {"version": bank.version, "fingerprint": bank.fingerprint},
                 "seed": a.seed, "fit_seconds": time.perf_counter() - t0}
    res["cv"] = {c: {"auroc": model.cv_report[c]["auroc"], "label_source": model.cv_report[c]["label_source"],
                     **{pt: {k: model.operating_points[c][pt][k] for k in
                             ("threshold", "precision", "recall", "f1", "precision_ci", "recall_ci", "n",
                              "positives")} for pt in ("screen", "confirm")},
                     "embedding_only": {pt: {k: model.operating_points_embedding[c][pt][k] for k in
                                             ("precision", "recall", "f1")} for pt in ("screen", "confirm")},
                     "by_language": model.cv_report[c]["by_language"]}
                 for c in model.concept_ids}
    res["language_support"] = model.language_support
    res["heldout"] = heldout(model, encoder, a.seed)
    dev = read_dev()
    if dev is not None:
        texts, labels, langs = dev
        E = cached_encode(encoder, texts, "dev")  # encoded once: fused, per language, baselines, embedding-only
        scores = model.score(texts, E)
        lang_arr = np.array(langs, dtype=object)
        res["dev"] = {"n": len(texts), "fused": evaluate_labels(model, texts, labels, seed=a.seed,
                                                                bootstrap=a.bootstrap, embeddings=E),
                      "by_language": {L: evaluate_scores(model, {c: v[lang_arr == L] for c, v in scores.items()},
                                                         {c: y[lang_arr == L] for c, y in labels.items()},
                                                         seed=a.seed, bootstrap=a.bootstrap)
                                      for L in sorted(set(langs))},
                      "baselines": baselines(bank, encoder, texts, labels, E)}
        emb = model.score(None, E)
        res["dev"]["embedding_only"] = {c: {"auroc": auroc(emb[c], y), **{
            pt: prf(emb[c] >= model.operating_points[c][pt]["threshold"], y) for pt in ("screen", "confirm")}}
            for c, y in labels.items()}
    if not a.skip_external:
        cc = read_tsv("cc3m_validation_captions.tsv", 0, a.cc3m_limit)
        if cc is not None:
            s = model.score(cc, cached_encode(encoder, cc, "cc3m"))
            r = rates(model, s)
            res["cc3m"] = {"n": len(cc), "adult_sexual": r["adult_sexual"], "minor": r["minor"],
                           "target_adult_sexual_confirm_rate_max": 0.0005,
                           "meets_target": r["adult_sexual"]["confirm"]["rate"] <= 0.0005}
        fl = read_tsv("flickr8k_captions.tsv", 1, a.flickr_limit)
        if fl is not None:
            refs = {"words": np.array([bool(FLICKR_CHILD_WORDS.search(t)) for t in fl]),
                    "bank_patterns": KeywordTagger(bank).compile().strict_match(fl, "minor", "en")}
            s = model.score(fl, cached_encode(encoder, fl, "flickr8k"))
            res["flickr8k"] = {
                "n": len(fl),
                "references": {"words": "the human caption holds an English child noun (FLICKR_CHILD_WORDS)",
                               "bank_patterns": "bank minor patterns (English) after exclusions, on the human caption"},
                "minor": {name: {"reference_positives": int(ref.sum()), **{
                    pt: prf(s["minor"] >= model.operating_points["minor"][pt]["threshold"], ref.astype(int))
                    for pt in ("screen", "confirm")}} for name, ref in refs.items()},
                "adult_sexual": rates(model, s)["adult_sexual"], "target_minor_f1_min": 0.95}
        ls = SHARED / "external" / "laion_style_img2dataset_test_10000.parquet"
        if ls.is_file() and a.laion_limit != 0:
            import pyarrow.parquet as pq

            from analyzer.concepts.language import detect_languages

            lt = [t or "" for t in pq.read_table(ls, columns=["TEXT"]).column("TEXT").to_pylist()][:a.laion_limit]
            s = model.score(lt, cached_encode(encoder, lt, "laion"))
            det = detect_languages(lt)
            res["laion_style"] = {"n": len(lt), "rates": rates(model, s),
                                  "languages": {L: det.count(L) for L in sorted(set(det), key=det.count, reverse=True)},
                                  "not_supported": sum(not model.language_supported(L) for L in det)}
    b = run_bias_audit(model)
    res["bias"] = {pt: {"overall": v["overall"], "max_gap_points": 100 * v["max_gap"],
                        "meets_targets": v["meets_targets"], "by_batch": v["by_batch"],
                        "groups": {g: {"rate": r["rate"], "ci": r["ci"], "n": r["n"]} for g, r in v["groups"].items()}}
                   for pt, v in b["points"].items()}
    res["bias"]["embedding_path"] = {
        pt: {"overall": v["overall"], "max_gap_points": 100 * v["max_gap"],
             "groups": {g: r["rate"] for g, r in v["groups"].items()}} for pt, v in b["embedding_path"].items()}
    if a.speed_rows:
        res["speed"] = speed(model, a.speed_rows)
    res["total_seconds"] = time.perf_counter() - t0
    doc = json.dumps(res, indent=1, default=float)
    print(doc)
    if a.out:
        Path(a.out).write_text(doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
