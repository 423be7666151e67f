"""Bias audit: how often adults are tagged as minors, per group of adult descriptions.

The audit set (analyzer/concepts/data/bias_audit.csv, written for this project) holds adult descriptions
across ethnicity, body size, dress and age wording (college students, young adults, 19-year-olds, petite,
youthful-looking), 100 rows per group written in two batches (``batch`` column: the second batch was
written before the model ever scored it). Every row is an adult (minor = 0), so any minor tag is a false
positive. Rates come with Wilson 95% intervals. Targets: <= 2% overall and <= 2 percentage points between
groups, on the caption path (what a scan of captions uses).

``embedding_path`` reports the same rates when the captions' vectors are scored without their text (the
path of precomputed vectors and images: probe only, no keywords or counter evidence). It is informational:
no target is claimed for it (docs/concepts.md).
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from analyzer.config import cache_dir
from analyzer.errors import InputError
from analyzer.concepts.cache import FitCache
from analyzer.concepts.calibration import wilson
from analyzer.concepts.data import load_bias_rows

TARGET_RATE = 0.02
TARGET_GAP = 0.02


def _rate(flags: np.ndarray) -> dict:
    k, n = int(flags.sum()), int(len(flags))
    return {"n": n, "tagged": k, "rate": k / n if n else 0.0, "ci": wilson(k, n)}


def run_bias_audit(model, path: str | Path | None = None, concept: str = "minor", *,
                   sample_per_group: int | None = None, seed: int = 0) -> dict:
    """Minor-tag rates per group at screen and confirm, with Wilson intervals, gaps and target checks.

    ``sample_per_group`` keeps a seeded sample of that many rows per group (quick checks); None keeps all.
    """
    if path is None:
        rows = load_bias_rows()
    else:
        p = Path(path)
        if not p.is_file():
            raise InputError(f"expected a bias audit CSV (text, dimension, group), got {str(path)!r} which does not exist")
        with p.open(encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        if not rows or not {"text", "group"} <= set(rows[0]):
            raise InputError(f"expected columns text, group (and optionally dimension) in {p}, got "
                             f"{list(rows[0]) if rows else 'an empty file'}")
    if sample_per_group:
        rng = np.random.default_rng(seed)
        by: dict[str, list] = {}
        for r in rows:
            by.setdefault(r["group"], []).append(r)
        rows = [r for g in by.values()
                for r in (g if len(g) <= sample_per_group
                          else [g[i] for i in sorted(rng.choice(len(g), sample_per_group, replace=False))])]
    if concept not in model.concept_ids:
        raise InputError(f"expected a concept among {model.concept_ids}, got {concept!r}")
    texts = [r["text"] for r in rows]
    groups = np.array([r["group"] for r in rows], dtype=object)
    dims = np.array([r.get("dimension") or "all" for r in rows], dtype=object)
    batches = np.array([r.get("batch") or "1" for r in rows], dtype=object)
    # encoded through the fit cache: with a cache directory the 2,200 audit captions are encoded once per encoder
    E = FitCache(cache_dir()).encode(model.text_encoder(), texts) if texts else None
    p = model.score(texts, E, modality="text")[concept]
    q = model.score(None, E, modality="text")[concept] if texts else np.zeros(0)
    out = {"concept": concept, "n": len(rows), "targets": {"overall_rate_max": TARGET_RATE,
                                                            "group_gap_max": TARGET_GAP}, "points": {},
           "embedding_path": {}}
    for point in ("screen", "confirm"):
        t = model.operating_points[concept][point]["threshold"]
        out["points"][point] = {
            "threshold": t, **_summary(p >= t, groups, dims),
            "minor_recall_cv": model.operating_points[concept][point].get("recall"),
            "by_batch": {b: _rate((p >= t)[batches == b]) for b in dict.fromkeys(batches.tolist())},
            "flagged_examples": [texts[i] for i in np.nonzero(p >= t)[0][:10]],
        }
        out["embedding_path"][point] = {"threshold": t, **_summary(q >= t, groups, dims),
                                        "minor_recall_cv": model.operating_points_embedding[concept][point].get("recall")}
    return out


def _summary(flags: np.ndarray, groups: np.ndarray, dims: np.ndarray) -> dict:
    per_group = {}
    for g in dict.fromkeys(groups.tolist()):
        m = groups == g
        per_group[g] = {"dimension": str(dims[m][0]), **_rate(flags[m])}
    rates = [v["rate"] for v in per_group.values()]
    overall = _rate(flags)
    gap = max(rates) - min(rates) if rates else 0.0
    return {"overall": overall, "groups": per_group, "max_gap": gap,
            "meets_targets": bool(overall["rate"] <= TARGET_RATE and gap <= TARGET_GAP)}


def format_bias_audit(res: dict) -> str:
    lines = [f"bias audit: {res['concept']} tag rate on {res['n']} adult descriptions "
             f"(targets: <= {res['targets']['overall_rate_max']:.0%} overall, <= "
             f"{res['targets']['group_gap_max'] * 100:.0f} points between groups)"]
    for point, v in res["points"].items():
        o = v["overall"]
        lines.append(f"[{point}] threshold={v['threshold']:.3f} overall={o['rate']:.2%} "
                     f"({o['tagged']}/{o['n']}, 95% CI {o['ci'][0]:.2%}-{o['ci'][1]:.2%}) max gap="
                     f"{v['max_gap'] * 100:.1f} pts; CV minor recall={v['minor_recall_cv']:.3f}; "
                     f"{'meets targets' if v['meets_targets'] else 'MISSES targets'}")
        for g, r in v["groups"].items():
            lines.append(f"    {r['dimension']:<12} {g:<18} {r['rate']:6.2%}  ({r['tagged']}/{r['n']}, "
                         f"CI {r['ci'][0]:.2%}-{r['ci'][1]:.2%})")
    for point, v in res.get("embedding_path", {}).items():
        o = v["overall"]
        worst = [(g, r) for g, r in sorted(v["groups"].items(), key=lambda kv: -kv[1]["rate"])[:3] if r["tagged"]]
        lines.append(f"[embedding path, {point}] (vectors without captions; informational) overall={o['rate']:.2%} "
                     f"({o['tagged']}/{o['n']}) max gap={v['max_gap'] * 100:.1f} pts; highest: "
                     + (", ".join(f"{g} {r['rate']:.0%}" for g, r in worst) or "none tagged"))
    return "\n".join(lines)
