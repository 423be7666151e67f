"""Matplotlib figures of the report (Agg backend; PNG files under RUN/figures/): prevalence, score distributions,
sources, clusters (R3), R2 neighbourhood shares, coverage by modality and residual risk per removal strategy.

Readable on 20 rows and on 10M: one row per category (never labels placed at data points, which collide), long
labels shortened, legends outside the bars, counts with thousands separators; a figure with nothing to draw is an
empty state (a sentence saying why, no axes), never empty axes."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from analyzer.config import library_cache_dir


def _matplotlib_config_dir() -> None:
    """matplotlib writes its font cache and config under ~/.cache/matplotlib and ~/.config/matplotlib unless
    MPLCONFIGDIR says where: point it, before matplotlib is first imported, at ``CACHE_DIR/matplotlib`` with an
    explicit cache directory (--cache-dir / ANALYZER_CACHE_DIR), else at a temporary directory removed at exit (the
    font cache is then rebuilt once per process, about 0.3 s). A MPLCONFIGDIR the user set, or a matplotlib imported
    before this module (a notebook's own), is left as it is."""
    if "matplotlib" not in sys.modules and not os.environ.get("MPLCONFIGDIR"):
        os.environ["MPLCONFIGDIR"] = str(library_cache_dir("matplotlib"))


_matplotlib_config_dir()
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullLocator  # noqa: E402
import numpy as np  # noqa: E402

from analyzer.store.sql import run_query  # noqa: E402


def warm() -> None:
    """Draw and discard a small figure with what the report's figures use (text, a log axis, bars with error bars,
    a legend), so that matplotlib's one-time costs (font loading, the math-text parser of log tick labels: about
    0.5 s) are paid where this is called (the scan: the thread that imports this module while DuckDB builds the
    catalog) instead of by the report's first figure."""
    import io

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.hist([0.5], bins=[0.0, 1.0], weights=[10], log=True, label="a")
    ax.barh([0], [1], xerr=[[0.1], [0.1]], capsize=2, label="b")
    ax.set_title("warm-up")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(io.BytesIO(), format="png", dpi=110)
    plt.close(fig)


LABEL_CHARS = 40  # longer group labels are shortened with an ellipsis


def short(label: str, n: int = LABEL_CHARS) -> str:
    label = str(label)
    return label if len(label) <= n else label[:n - 1] + "\u2026"


def empty_state(path: Path, title: str, message: str) -> Path:
    """A figure that says why there is nothing to draw (no axes)."""
    fig = plt.figure(figsize=(7, 1.3))
    fig.text(0.5, 0.68, title, ha="center", va="center", fontsize=12, fontweight="bold")
    fig.text(0.5, 0.3, message, ha="center", va="center", fontsize=9, color="#555", wrap=True)
    return _save(fig, path, tight=False)


def _legend_outside(ax) -> None:
    """The legend right of the axes, where it can cover no bar."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)


def _save(fig, path: Path, *, tight: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight" if tight else None)
    plt.close(fig)
    return path


def prevalence_rows(summary: dict) -> list[tuple]:
    """The rows of queries/prevalence.sql (concept, scanned, then count, rate, Wilson 95% low and high at screen
    and at confirm) from the summary's concept counts, which build_summary has already taken in one pass: the
    query itself reads the stacked `tags` view, one pass per concept (1.2-1.9 s at 10M rows)."""
    from analyzer.concepts.calibration import wilson

    n = summary["items_scanned"]
    rows = []
    for c in sorted(summary["concepts"]):
        v = summary["concepts"][c]
        row = [c, n]
        for k in (v["screen"], v["confirm"]):
            row += [k, k / n if n else None, *(wilson(k, n) if n else (None, None))]
        rows.append(tuple(row))
    return rows


def prevalence(con, out: Path, rows: list[tuple] | None = None) -> Path:
    """Concept prevalence at both points; ``rows`` as queries/prevalence.sql returns them (else it is run)."""
    rows = run_query(con, "prevalence").fetchall() if rows is None else rows
    if not rows or not rows[0][1]:
        return empty_state(out / "prevalence.png", "Concept prevalence", "No item was scored: nothing to count.")
    names = [r[0] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.5))
    y = np.arange(len(names))
    for k, (rate_i, lo_i, hi_i, label, color) in enumerate([(3, 4, 5, "screen", "#f0a35e"), (7, 8, 9, "confirm", "#c0392b")]):
        rate = np.array([r[rate_i] or 0 for r in rows]) * 100
        lo = np.array([r[lo_i] or 0 for r in rows]) * 100
        hi = np.array([r[hi_i] or 0 for r in rows]) * 100
        ax.barh(y + (k - 0.5) * 0.38, rate, height=0.36, color=color, label=label,
                xerr=[np.maximum(rate - lo, 0), np.maximum(hi - rate, 0)], capsize=2)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel(f"% of the {rows[0][1]:,} scanned items (Wilson 95% interval)")
    ax.set_title("Concept prevalence")
    _legend_outside(ax)
    return _save(fig, out / "prevalence.png")


HIST_BINS = 40  # score histogram bins over [0, 1]


def score_distributions(con, out: Path, operating_points: dict) -> Path:
    """Histograms of the two primary concepts' scores (one pass over the scores) with the operating points."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    bins = np.linspace(0, 1, HIST_BINS + 1)
    both = histogram(con, "SELECT minor_score, adult_sexual_score FROM item_scores", bins)
    if not both.sum():
        plt.close(fig)
        return empty_state(out / "score_distributions.png", "Score distributions", "No item was scored.")
    for ax, c, counts in zip(axes, ("minor", "adult_sexual"), both):
        if not counts.sum():
            ax.set_axis_off()
            ax.text(0.5, 0.5, f"no {c} scores", ha="center", va="center", transform=ax.transAxes, color="#555")
            continue
        # the counts drawn as ax.hist draws the scores themselves (same bars), without every score in Python
        ax.hist(bins[:-1], bins=bins, weights=counts, color="#5b7fa6", log=True)
        ax.yaxis.set_minor_locator(NullLocator())  # decades only: minor log ticks were a third of the drawing time
        for point, style in (("screen", "--"), ("confirm", "-")):
            t = operating_points.get(c, {}).get(point, {}).get("threshold")
            if t is not None:
                ax.axvline(t, color="#c0392b", linestyle=style, label=f"{point} {t:.2f}")
        ax.set_title(f"{c} score ({int(counts.sum()):,} items)")
        ax.set_xlabel("calibrated probability")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("items (log)")
    return _save(fig, out / "score_distributions.png")


def histogram(con, sql: str, bins: np.ndarray, params: list | None = None, batch_rows: int = 1 << 20) -> np.ndarray:
    """``np.histogram`` counts of the numeric column ``sql`` (with DuckDB ``params``) returns, streamed in Arrow
    record batches (memory bounded by the batch, not the number of rows); nulls are left out. A query of several
    columns gives one row of counts per column (one pass over the rows for all of them)."""
    cur = con.cursor()  # its own result: the caller may hold a partly fetched one on ``con``
    try:
        rel = cur.sql(sql, params=params)
        counts = np.zeros((len(rel.columns), len(bins) - 1), dtype=np.int64)
        for batch in rel.to_arrow_reader(batch_rows):
            for k, col in enumerate(batch.columns):
                vals = col.drop_null().to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
                counts[k] += np.histogram(vals, bins=bins)[0]
    finally:
        cur.close()
    return counts[0] if len(counts) == 1 else counts


def sources(con, out: Path, top: int = 15) -> Path:
    rows = con.execute(
        "SELECT group_id, items, minor_rate, minor_rate_lo, minor_rate_hi, adult_sexual_rate, "
        "adult_sexual_rate_lo, adult_sexual_rate_hi, score, both_concepts FROM group_risk WHERE group_kind = 'source' "
        "ORDER BY rank LIMIT ?", [top]).fetchall()
    title = "Co-occurrence by source (most co-occurring items first)"
    if not any((r[2] or 0) + (r[5] or 0) for r in rows):
        why = ("No source has the minimum support of items to be ranked." if not rows else
               f"None of the {len(rows)} ranked sources holds minor or adult_sexual items at the screen threshold.")
        return empty_state(out / "sources.png", title, why)
    return rate_bars(rows, out / "sources.png", labels=[f"{short(r[0])} (n={r[1]:,}; both {r[9]:,}; score {r[8]:.2f})"
                                                   for r in rows],
                     xlabel="% of the source's items at screen (Wilson 95% interval)",
                     title=title)


def rate_bars(rows, path: Path, *, labels, xlabel: str, title: str) -> Path:
    """Paired minor / adult_sexual rate bars with Wilson error bars, one row per group.

    ``rows``: (group_id, items, minor_rate, lo, hi, adult_sexual_rate, lo, hi, score) tuples.
    """
    fig, ax = plt.subplots(figsize=(8, 0.42 * max(len(rows), 1) + 1.6))
    y = np.arange(len(rows))
    for k, (i, lo, hi, label, color) in enumerate([(2, 3, 4, "minor", "#3c8dbc"), (5, 6, 7, "adult_sexual", "#c0392b")]):
        rate = np.array([r[i] or 0 for r in rows]) * 100
        err = [np.maximum(rate - np.array([r[lo] or 0 for r in rows]) * 100, 0),
               np.maximum(np.array([r[hi] or 0 for r in rows]) * 100 - rate, 0)]
        ax.barh(y + (k - 0.5) * 0.38, rate, height=0.36, xerr=err, capsize=2, color=color, label=label)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    _legend_outside(ax)
    return _save(fig, path)


def clusters(con, out: Path, top: int = 15) -> Path | None:
    rows = con.execute(
        "SELECT group_id, items, minor_rate, minor_rate_lo, minor_rate_hi, adult_sexual_rate, adult_sexual_rate_lo, "
        "adult_sexual_rate_hi, score, both_concepts FROM group_risk WHERE group_kind = 'cluster' "
        "ORDER BY rank LIMIT ?", [top]).fetchall()
    if not any((r[2] or 0) + (r[5] or 0) for r in rows):
        return None  # the R3 section says why (no cluster ranked, or none holds either concept)
    return rate_bars(rows, out / "clusters.png",
                     labels=[f"cluster {r[0]} (n={r[1]:,}; both {r[9]:,}; score {r[8]:.2f})" for r in rows],
                     xlabel="% of the cluster's items at screen (Wilson 95% interval)",
                     title="Co-occurrence by embedding cluster (most co-occurring items first)")


def neighbourhoods(con, out: Path) -> Path | None:
    if not con.execute("SELECT count(*) FROM neighbourhood_risk").fetchall()[0][0]:
        return None
    bridge = con.execute("SELECT bridge_share FROM (SELECT CAST(json_extract_string(value, '$.bridge_share') AS DOUBLE) "
                         "AS bridge_share FROM runs WHERE key = 'risk_settings')").fetchone()
    fig, ax = plt.subplots(figsize=(7, 3.4))
    bins = np.linspace(0, 1, 21)
    for direction, color, label in (("adult_to_minor", "#c0392b", "adult_sexual items: minor share of neighbours"),
                                    ("minor_to_adult", "#3c8dbc", "minor items: adult_sexual share of neighbours")):
        # streamed counts, no per-item Python; r2 is a share in [0, 1], so every value falls in a bin
        counts = histogram(con, "SELECT r2 FROM neighbourhood_risk WHERE direction = ? AND r2 IS NOT NULL", bins,
                           params=[direction])
        if counts.sum():
            ax.hist(bins[:-1], bins=bins, weights=counts, alpha=0.6, color=color, label=label, log=True)
    if bridge and bridge[0] is not None:
        ax.axvline(bridge[0], color="#333", linestyle="--", label=f"bridge threshold {bridge[0]:.2f}")
    ax.set_xlabel("share of the k nearest neighbours carrying the other concept (R2)")
    ax.set_ylabel("items (log)")
    ax.set_title("R2 neighbourhoods")
    ax.legend(fontsize=8)
    return _save(fig, out / "neighbourhoods.png")


def tradeoff(con, out: Path, *, r3_limit: float | None = None, r4_limit: float | None = None) -> Path | None:
    """Residual risk per removal strategy, one row each (fewest removals first): the R4 exposure index and the
    highest R3 score after removal, with the policy's limits; the tick labels say what each removes."""
    rows = con.execute("""
        SELECT d.strategy, coalesce(s.items_removed, 0), d.exposure_index, d.r1_items,
               greatest(d.r3_max_source, d.r3_max_cluster), d.r2_bridges, coalesce(s.recommended, false), d.scanned
        FROM dataset_risk_by_strategy AS d LEFT JOIN strategies AS s USING (strategy)
        ORDER BY coalesce(s.items_removed, 0), d.strategy = 'none' DESC, d.strategy
    """).fetchall()
    if not rows:
        return None
    total = max(r[1] + (r[7] or 0) for r in rows if r[0] == "none") if any(r[0] == "none" for r in rows) else None
    labels = []
    for r in rows:
        removed = f"{r[1]:,}" + (f" ({100 * r[1] / total:.2g}%)" if total else "")
        labels.append(f"{'* ' if r[6] else ''}{short(r[0], 28)}\nremoves {removed}; R1 left {r[3]:,}")
    y = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(9, 0.62 * len(rows) + 1.8))
    r4 = np.array([r[2] or 0 for r in rows])
    r3 = np.array([r[4] or 0 for r in rows])
    ax.barh(y - 0.19, r4, height=0.36, color="#c0392b", label="R4 exposure index")
    ax.barh(y + 0.19, r3, height=0.36, color="#3c8dbc", label="max R3 score (source/cluster)")
    for limit, color, name in ((r4_limit, "#c0392b", "R4 limit"), (r3_limit, "#3c8dbc", "R3 limit")):
        if limit is not None:
            ax.axvline(limit, color=color, linestyle="--", linewidth=1, label=f"policy {name} {limit:g}")
    ax.set_yticks(y, labels, fontsize=8)
    for tick, r in zip(ax.get_yticklabels(), rows):
        if r[6]:
            tick.set_fontweight("bold")
    ax.invert_yaxis()
    top = max([*r4, *r3, r4_limit or 0, r3_limit or 0, 0.01])
    ax.set_xlim(0, top * 1.1)
    ax.set_xlabel("residual risk after the removal (0 = none left; * = recommended)")
    ax.set_title("Removal strategies: residual risk")
    _legend_outside(ax)
    return _save(fig, out / "tradeoff.png")


def coverage(cov: dict, out: Path) -> Path:
    """Assessed and not assessed items per modality (summary.json ``coverage``), as shares with counts."""
    rows = cov.get("by_modality") or []
    title = "Coverage by modality"
    if not rows:
        return empty_state(out / "coverage.png", title, "No items.")
    y = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(rows) + 1.5))
    n = np.array([max(r["items"], 1) for r in rows], dtype=float)
    a = np.array([r["assessed"] for r in rows]) / n * 100
    ax.barh(y, a, color="#1e7e34", label="assessed")
    ax.barh(y, 100 - a, left=a, color="#b7791f", label="not assessed")
    ax.set_yticks(y, [f"{short(r['modality'], 20)}: {r['items']:,} items,\n{r['assessed']:,} assessed" for r in rows])
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("% of the modality's items")
    ax.set_title(title)
    _legend_outside(ax)
    return _save(fig, out / "coverage.png")
