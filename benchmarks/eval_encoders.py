"""Compare text encoders for the caption taggers (issue 14); prints one JSON document.

    .venv/bin/python benchmarks/eval_encoders.py [--encoders minilm,use-m3,e5-small,e5-small+use-m3] [--bootstrap 1000]
        [--speed-rows 1024] [--out FILE]

For each encoder:
- quality: a logistic probe (LogisticRegression C=PROBE_C of analyzer/concepts/fitting.py, class_weight balanced) on
  the project's training captions (analyzer/concepts/data/train_*.csv, the web languages' train_lang_<code>.csv included),
  5-fold stratified cross-validation (seed 0), AUROC per concept per labelled language with stratified percentile
  bootstrap 95% intervals (seed 0); then fitted on all training captions and measured on the held-out
  benchmarks/data/multilingual_eval.csv (never trained or tuned on). Screen threshold: the highest with pooled CV
  recall >= 0.99; confirm: best F1 among thresholds with pooled CV precision >= 0.95. "issue12" pools the twelve
  languages of the issue (pl sv tr ru ja zh ko id vi cs ar hi). Probe only: no keywords, no fusion.
- speed: captions/s at batch 256 after a warm-up batch, in a fresh process per encoder (so one library's thread
  pools do not slow another's), on real web alt-text (../shared/external LAION-style parquet, skipped when absent)
  and on the short project captions. The machine's load average is printed with each figure: on a shared 2-core
  machine it moves the figures by 2-5x, so compare encoders measured in the same run only.
Captions are never printed. Embeddings go through the concept-model text-embedding cache (FitCache) of\n$ANALYZER_CACHE_DIR when it is set (nothing is written without it).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT / "analyzer" / "concepts" / "data"
EVAL = ROOT / "benchmarks" / "data" / "multilingual_eval.csv"
LAION = ROOT.parent / "shared" / "external" / "laion_style_img2dataset_test_10000.parquet"
ISSUE12 = ("pl", "sv", "tr", "ru", "ja", "zh", "ko", "id", "vi", "cs", "ar", "hi")
CONCEPTS = ("minor", "adult_sexual")


def read_rows(paths) -> list[dict]:
    rows = []
    for p in paths:
        with open(p, encoding="utf-8") as f:
            rows += list(csv.DictReader(f))
    return rows


def training_rows() -> list[dict]:
    return read_rows(sorted(DATA.glob("train_*.csv")))


def cached_encode(name: str, texts: list[str]) -> np.ndarray:
    """Text embeddings through the project's text-embedding cache (analyzer.concepts.FitCache on
    ``analyzer.config.cache_dir()``), the one concept-model fits use: captions a fit already encoded are not encoded
    again. A concatenation (``a+b``) is built from its parts' rows, scaled to unit length as ConcatEncoder does."""
    from analyzer.concepts import FitCache
    from analyzer.config import cache_dir
    from analyzer.encoders import get_encoder
    from analyzer.encoders.base import l2_normalize

    if "+" in name:
        return l2_normalize(np.hstack([cached_encode(part, texts) for part in name.split("+")]))
    return FitCache(cache_dir()).encode(get_encoder(name), texts)


def auroc_ci(s, y, rng, B):
    from sklearn.metrics import roc_auc_score

    if len(set(y.tolist())) < 2:
        return None
    pos, neg = np.nonzero(y == 1)[0], np.nonzero(y == 0)[0]
    boot = [roc_auc_score(y[i], s[i]) for i in (np.r_[rng.choice(pos, len(pos)), rng.choice(neg, len(neg))]
                                                for _ in range(B))]
    return [round(float(roc_auc_score(y, s)), 4), round(float(np.percentile(boot, 2.5)), 4),
            round(float(np.percentile(boot, 97.5)), 4)]


def screen_threshold(s, y, target=0.99):
    pos = np.sort(s[y == 1])
    return float(pos[int(np.floor((1 - target) * len(pos)))]) - 1e-9


def confirm_threshold(s, y, min_precision=0.95):
    best, thr = -1.0, float(np.max(s)) + 1.0
    for t in np.unique(s):
        pred = s >= t
        tp, fp, fn = (pred & (y == 1)).sum(), (pred & (y == 0)).sum(), (~pred & (y == 1)).sum()
        p, r = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
        if tp and p >= min_precision and 2 * p * r / (p + r) > best:
            best, thr = 2 * p * r / (p + r), float(t)
    return thr


def report(s, y, langs, hard, ts, tc, B):
    rng = np.random.default_rng(0)
    out = {}
    for g in sorted(set(langs.tolist())) + ["issue12", "all"]:
        m = np.isin(langs, ISSUE12) if g == "issue12" else np.ones(len(y), bool) if g == "all" else langs == g
        hn = m & (y == 0) & hard
        pos = m & (y == 1)
        out[g] = {"n": int(m.sum()), "positives": int(pos.sum()), "auroc": auroc_ci(s[m], y[m], rng, B),
                  "screen_recall": round(float((s[pos] >= ts).mean()), 3) if pos.any() else None,
                  "confirm_recall": round(float((s[pos] >= tc).mean()), 3) if pos.any() else None,
                  "confirm_fpr_hard_negatives": round(float((s[hn] >= tc).mean()), 3) if hn.any() else None}
    return out


def quality(name: str, bootstrap: int) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    from analyzer.concepts.fitting import PROBE_C

    train, ev = training_rows(), read_rows([EVAL])
    Xt = cached_encode(name, [r["text"] for r in train])
    Xe = cached_encode(name, [r["text"] for r in ev])
    tl, el = (np.array([r["lang"] or "en" for r in rows]) for rows in (train, ev))
    th, eh = (np.array([r["note"].startswith("hard") for r in rows]) for rows in (train, ev))
    res = {"n_train": len(train), "n_eval": len(ev)}
    for c in CONCEPTS:
        y, ye = np.array([int(r[c]) for r in train]), np.array([int(r[c]) for r in ev])
        oof = np.zeros(len(y))
        for tr, te in StratifiedKFold(5, shuffle=True, random_state=0).split(Xt, y):
            probe = LogisticRegression(C=PROBE_C, class_weight="balanced", max_iter=5000).fit(Xt[tr], y[tr])
            oof[te] = probe.decision_function(Xt[te])
        ts, tc = screen_threshold(oof, y), confirm_threshold(oof, y)
        se = LogisticRegression(C=PROBE_C, class_weight="balanced", max_iter=5000).fit(Xt, y).decision_function(Xe)
        res[c] = {"cv": report(oof, y, tl, th, ts, tc, bootstrap), "eval": report(se, ye, el, eh, ts, tc, bootstrap)}
    return res


def speed(name: str, rows: int) -> dict:
    """Runs in its own process (see --speed-only)."""
    from analyzer.encoders import get_encoder

    sets = {"short_captions": [r["text"] for r in training_rows()][:rows]}
    if LAION.is_file():
        import pyarrow.parquet as pq

        alt = [t for t in pq.read_table(LAION, columns=["TEXT"]).column("TEXT").to_pylist() if t]
        sets["web_alt_text"] = alt[1000:1000 + rows]
    enc = get_encoder(name, batch_size=256)
    enc.encode_text(sets["short_captions"][:256])  # warm-up: load weights, first batch
    out = {}
    for label, texts in sets.items():
        t0 = time.perf_counter()
        for i in range(0, len(texts), 256):
            enc.encode_text(texts[i:i + 256])
        out[label] = {"captions_per_s": round(len(texts) / (time.perf_counter() - t0), 1), "n": len(texts),
                      "load_average_1min": round(os.getloadavg()[0], 2)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--encoders", default="minilm,use-m3,e5-small,e5-small+use-m3")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--speed-rows", type=int, default=1024, help="captions per speed set (0: skip speed)")
    ap.add_argument("--speed-only", help=argparse.SUPPRESS)
    ap.add_argument("--out")
    a = ap.parse_args()
    if a.speed_only:
        print(json.dumps(speed(a.speed_only, a.speed_rows)))
        return
    out = {"encoders": {}}
    for name in [e.strip() for e in a.encoders.split(",") if e.strip()]:
        res = {"quality": quality(name, a.bootstrap)}
        if a.speed_rows:
            run = subprocess.run([sys.executable, __file__, "--speed-only", name, "--speed-rows", str(a.speed_rows)],
                                 capture_output=True, text=True, check=True)
            res["speed"] = json.loads(run.stdout.strip().splitlines()[-1])
        out["encoders"][name] = res
    text = json.dumps(out, indent=1)
    if a.out:
        Path(a.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
