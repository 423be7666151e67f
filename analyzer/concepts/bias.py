"""Bias audit: how often adults are tagged as minors, per group of adult descriptions.

The audit set (analyzer/concepts/data/bias_audit.csv, written for this project) holds adult descriptions
across ethnicity, body size, dress and age wording (college students, young adults, 19-year-olds, petite,
youthful-looking). Every row is an adult (minor = 0), so any minor tag is a false positive. Rates come with
Wilson 95% intervals. Targets: <= 2% overall and <= 2 percentage points between groups.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..errors import InputError
from .calibration import wilson
from .data import load_bias_rows

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
    p = model.score(texts, None, modality="text")[concept]
    out = {"concept": concept, "n": len(rows), "targets": {"overall_rate_max": TARGET_RATE,
                                                            "group_gap_max": TARGET_GAP}, "points": {}}
    for point in ("screen", "confirm"):
        t = model.operating_points[concept][point]["threshold"]
        flags = p >= t
        per_group = {}
        for g in dict.fromkeys(groups.tolist()):
            m = groups == g
            per_group[g] = {"dimension": str(dims[m][0]), **_rate(flags[m])}
        rates = [v["rate"] for v in per_group.values()]
        overall = _rate(flags)
        gap = max(rates) - min(rates) if rates else 0.0
        out["points"][point] = {
            "threshold": t, "overall": overall, "groups": per_group, "max_gap": gap,
            "meets_targets": bool(overall["rate"] <= TARGET_RATE and gap <= TARGET_GAP),
            "minor_recall_cv": model.operating_points[concept][point].get("recall"),
            "flagged_examples": [texts[i] for i in np.nonzero(flags)[0][:10]],
        }
    return out


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
    return "\n".join(lines)
