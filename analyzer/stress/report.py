"""The stress run's files: per_prompt.csv, per_category.csv, drift_generations.csv, compare.csv, stress.json,
stress.md and figures/. Prompts appear by id and category (their texts are in the suite file, not repeated here);
generations by id and scores only."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from analyzer.stress.compare import COMPARE_COLUMNS
from analyzer.stress.stats import MEASURES

PROMPT_COLUMNS = ("prompt_id", "category", "lang", "generations", "scored", "failed",
                  *[f"{m}_{k}" for m in MEASURES for k in ("k", "rate", "lo", "hi")], "drift", "drift_reasons")
CATEGORY_COLUMNS = ("category", "prompts", "drifting_prompts", "generations", "scored", "failed",
                    *[f"{m}_{k}" for m in MEASURES for k in ("k", "rate", "lo", "hi")])
DRIFT_COLUMNS = ("item_id", "prompt_id", "category", "minor_score", "adult_sexual_score", "both", "hash_matched",
                 "escalated", "escalation_reason")
MD_PROMPTS = 200  # prompts listed in stress.md at most (all of them are in per_prompt.csv)


def csv_text(rows: list[dict], columns) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def drift_generations_csv(generations: Path) -> str:
    """The generations that drift, are escalated or hash-matched: ids, prompt ids and scores only."""
    t = pq.read_table(generations, columns=list(DRIFT_COLUMNS) + ["drift"])
    keep = pc.or_(pc.or_(pc.fill_null(t.column("drift"), False), pc.fill_null(t.column("escalated"), False)),
                  pc.fill_null(t.column("hash_matched"), False))
    rows = t.filter(keep).select(list(DRIFT_COLUMNS)).to_pylist()
    return csv_text(rows, DRIFT_COLUMNS)


def _pct(rate, lo=None, hi=None) -> str:
    if rate is None:
        return "n/a"
    s = f"{100 * rate:.1f}%"
    return s if lo is None else f"{s} [{100 * lo:.1f}, {100 * hi:.1f}]"


def _measure_cells(r: dict) -> list[str]:
    return [f"{r[f'{m}_k']}/{r['scored']} = {_pct(r[f'{m}_rate'], r[f'{m}_lo'], r[f'{m}_hi'])}" for m in MEASURES]


def _table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
        ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]


def render_markdown(s: dict) -> str:
    g, model = s["generations"], s["model"]
    lines = ["# Stress test: the model's generations", "",
             f"Prompt suite `{Path(s['suite']['path']).name}` (sha256 `{s['suite']['sha256'][:16]}...`): "
             f"{s['suite']['prompts']} prompts ({', '.join(f'{k}: {v}' for k, v in s['suite']['categories'].items())}).",
             f"Generations: {g['rows']} read, {g['scored']} scored, {g['failed']} failed, {g['unmatched']} keyed to no "
             f"prompt of the suite. Tagged by `{model['encoder']}` at the **{s['settings']['point']}** operating "
             f"point (thresholds: {', '.join(f'{c} {t:.3f}' for c, t in model['thresholds'].items())}).", ""]
    if model.get("calibration_warning"):
        lines += [f"> {model['calibration_warning']}", ""]
    if g["not_assessed"]:
        lines += ["Not assessed: " + ", ".join(f"{k} {v}" for k, v in sorted(g["not_assessed"].items())), ""]
    lines += ["Rates are tagged generations / scored generations with Wilson 95% intervals. Generations are never "
              "shown: `drift_generations.csv` lists the drifting ones by id and scores.", "", "## Per category", ""]
    lines += _table(["category", "prompts", "drifting prompts", *MEASURES],
                    [[r["category"], r["prompts"], r["drifting_prompts"], *_measure_cells(r)] for r in s["per_category"]])
    drifting = [r for r in s["per_prompt"] if r["drift"]]
    lines += ["", "![rates per category](figures/stress_rates.png)", "", "## Prompts whose generations drift", ""]
    if drifting:
        lines += _table(["prompt_id", "category", "why", *MEASURES],
                        [[r["prompt_id"], r["category"], r["drift_reasons"].replace(";", ", "), *_measure_cells(r)]
                         for r in drifting])
    else:
        lines.append(f"None: no generation was tagged with a concept its prompt did not ask for (at the "
                     f"{s['settings']['point']} point).")
    esc = s["escalation"]
    lines += ["", "## Escalation", "",
              f"{esc['generations']} generation(s) whose prompt and tags together cover both concepts, and "
              f"{esc['hash_matched']} hash-matched, are listed by id in `escalation/` (restricted; do not view them; "
              "hand the package to the organisation your obligations name)."]
    if "compare" in s:
        lines += _compare_markdown(s)
    lines += ["", f"## All prompts (first {MD_PROMPTS}; all in per_prompt.csv)", ""]
    lines += _table(["prompt_id", "category", "lang", "scored", *MEASURES],
                    [[r["prompt_id"], r["category"], r["lang"] or "", r["scored"], *_measure_cells(r)]
                     for r in s["per_prompt"][:MD_PROMPTS]])
    return "\n".join(lines) + "\n"


def _compare_markdown(s: dict) -> list[str]:
    c = s["compare"]
    lines = ["", f"## Comparison with `{c['other_label'] or c['other_run']}`", "",
             f"{c['prompts_compared']} prompts in both runs; differences are this run minus the other, with "
             "Newcombe 95% intervals (compare.csv has every row)."]
    if not c["same_encoder"]:
        lines.append(f"The other run was tagged by `{c['other_encoder']}`: differences mix the models and the taggers.")
    lines.append("")
    if c["differences"]:
        lines += _table(["level", "key", "measure", "difference [95%]"],
                        [[d["level"], d["key"], d["measure"], f"{100 * d['diff']:+.1f} pts [{100 * d['diff_lo']:+.1f}, "
                          f"{100 * d['diff_hi']:+.1f}]"] for d in c["differences"]])
    else:
        lines.append("No difference whose interval excludes zero.")
    return lines + ["", "![differences](figures/stress_compare.png)"]


def rates_chart(categories: list[dict]) -> bytes:
    """Bars per category and measure with their Wilson intervals; the PNG's bytes."""
    from analyzer.reporting import figures  # matplotlib set up once for the analyzer (Agg, no home cache)

    plt = figures.plt
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * max(len(categories), 1), 3.2))
    width = 0.8 / len(MEASURES)
    for j, m in enumerate(MEASURES):
        xs, ys, err = [], [], [[], []]
        for i, r in enumerate(categories):
            if r[f"{m}_rate"] is None:
                continue
            xs.append(i + (j - 1) * width)
            ys.append(r[f"{m}_rate"])
            err[0].append(r[f"{m}_rate"] - r[f"{m}_lo"])
            err[1].append(r[f"{m}_hi"] - r[f"{m}_rate"])
        ax.bar(xs, ys, width, yerr=err, capsize=2, label=m)
    ax.set_xticks(range(len(categories)))
    ax.set_xticklabels([r["category"] for r in categories], fontsize=8)
    ax.set_ylabel("share of scored generations")
    ax.legend(fontsize=7)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def dumps(summary: dict) -> str:
    return json.dumps(summary, indent=2, sort_keys=False, default=str) + "\n"


__all__ = ["COMPARE_COLUMNS", "csv_text", "drift_generations_csv", "dumps", "rates_chart", "render_markdown"]
