"""Two stress runs side by side (two models or two checkpoints on the same prompt suite): per category and per
prompt, the difference of each rate (this run minus the other) with Newcombe's 95% interval, as a table
(``RUN/compare.csv``) and a chart (``RUN/figures/stress_compare.png``). Only counts are compared: no generation is
shown."""
from __future__ import annotations

from pathlib import Path

from analyzer.errors import InputError
from analyzer.stress.stats import MEASURES, newcombe

COMPARE_COLUMNS = ("level", "key", "category", "measure", "a_k", "a_n", "a_rate", "b_k", "b_n", "b_rate", "diff",
                   "diff_lo", "diff_hi", "excludes_zero")
CHART_ROWS = 30  # prompts drawn in the chart at most (categories always): those whose interval excludes zero first


def compare_rows(a: dict, b: dict) -> list[dict]:
    """Rows of COMPARE_COLUMNS from two stress summaries (``stress.json``); ``a`` is this run."""
    if a["settings"]["point"] != b["settings"]["point"]:
        raise InputError(f"expected runs tagged at the same operating point, got {a['settings']['point']} and "
                         f"{b['settings']['point']}; re-run one with --point {a['settings']['point']}")
    rows = []
    a_cat = {r["category"]: r for r in a["per_category"]}
    for r in b["per_category"]:
        if r["category"] in a_cat:
            rows += _rows("category", r["category"], r["category"], a_cat[r["category"]], r)
    a_pr = {r["prompt_id"]: r for r in a["per_prompt"]}
    for r in b["per_prompt"]:
        mine = a_pr.get(r["prompt_id"])
        if mine is None:
            continue
        if mine["category"] != r["category"]:
            raise InputError(f"expected the same prompt suite in both runs, got prompt {r['prompt_id']!r} as "
                             f"{mine['category']} here and {r['category']} in the other run")
        rows += _rows("prompt", r["prompt_id"], r["category"], mine, r)
    return rows


def _rows(level: str, key: str, category: str, a: dict, b: dict) -> list[dict]:
    out = []
    for m in MEASURES:
        d = newcombe(a[f"{m}_k"], a["scored"], b[f"{m}_k"], b["scored"])
        diff, lo, hi = d if d is not None else (None, None, None)
        out.append({"level": level, "key": key, "category": category, "measure": m, "a_k": a[f"{m}_k"],
                    "a_n": a["scored"], "a_rate": a[f"{m}_rate"], "b_k": b[f"{m}_k"], "b_n": b["scored"],
                    "b_rate": b[f"{m}_rate"], "diff": diff, "diff_lo": lo, "diff_hi": hi,
                    "excludes_zero": d is not None and (lo > 0 or hi < 0)})
    return out


def compare_summary(a: dict, b: dict, rows: list[dict], other: Path) -> dict:
    """The comparison's part of stress.json: the other run, prompts in one run only, differences whose interval
    excludes zero."""
    a_ids, b_ids = {r["prompt_id"] for r in a["per_prompt"]}, {r["prompt_id"] for r in b["per_prompt"]}
    return {"other_run": str(other), "other_label": b.get("label"), "other_encoder": b["model"]["encoder"],
            "same_encoder": a["model"]["encoder"] == b["model"]["encoder"],
            "prompts_compared": len(a_ids & b_ids), "only_here": sorted(a_ids - b_ids)[:50],
            "only_there": sorted(b_ids - a_ids)[:50],
            "differences": [{k: r[k] for k in ("level", "key", "category", "measure", "diff", "diff_lo", "diff_hi")}
                            for r in rows if r["excludes_zero"]]}


def compare_chart(rows: list[dict], *, label_a: str, label_b: str) -> bytes:
    """A forest plot per measure: categories, then up to CHART_ROWS prompts (those whose interval excludes zero
    first); a point and its 95% interval per row, zero marked. Returns the PNG's bytes."""
    import io

    from analyzer.reporting import figures  # matplotlib set up once for the analyzer (Agg, no home cache)

    plt = figures.plt
    cats = [r for r in rows if r["level"] == "category"]
    prompts = [r for r in rows if r["level"] == "prompt"]
    keys = list(dict.fromkeys(r["key"] for r in prompts if r["excludes_zero"]))
    keys += [k for k in dict.fromkeys(r["key"] for r in prompts) if k not in keys]
    keys = keys[:CHART_ROWS]
    labels = [("category", k) for k in dict.fromkeys(r["key"] for r in cats)] + [("prompt", k) for k in keys]
    index = {(r["level"], r["key"], r["measure"]): r for r in rows}
    fig, axes = plt.subplots(1, len(MEASURES), figsize=(4 * len(MEASURES), 1.2 + 0.28 * max(len(labels), 1)),
                             sharey=True, squeeze=False)
    for ax, m in zip(axes[0], MEASURES):
        for y, (level, key) in enumerate(labels):
            r = index.get((level, key, m))
            if r is None or r["diff"] is None:
                continue
            colour = "#c0392b" if r["excludes_zero"] else "#34495e"
            ax.errorbar([r["diff"]], [y], xerr=[[r["diff"] - r["diff_lo"]], [r["diff_hi"] - r["diff"]]], fmt="o",
                        color=colour, capsize=2, markersize=4)
        ax.axvline(0.0, color="#888888", linewidth=0.8)
        ax.set_title(f"{m}: {label_a} - {label_b}", fontsize=9)
        ax.set_xlabel("difference of rates (95% Newcombe)", fontsize=8)
    axes[0][0].set_yticks(range(len(labels)))
    axes[0][0].set_yticklabels([f"[{k}]" if level == "category" else k for level, k in labels], fontsize=7)
    axes[0][0].invert_yaxis()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
