"""Figures of the composition analytics: clusters (R3), R2 neighbourhood shares, the removal trade-off curve."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from analyzer.reporting.figures import _save, histogram, plt, rate_bars


def clusters(con, out: Path, top: int = 15) -> Path | None:
    rows = con.execute(
        "SELECT group_id, items, minor_rate, minor_rate_lo, minor_rate_hi, adult_sexual_rate, adult_sexual_rate_lo, "
        "adult_sexual_rate_hi, score FROM group_risk WHERE group_kind = 'cluster' "
        "ORDER BY score DESC, minor + adult_sexual DESC, items DESC, group_id LIMIT ?", [top]).fetchall()
    if not rows:
        return None
    return rate_bars(rows, out / "clusters.png", labels=[f"cluster {r[0]} (n={r[1]}, score {r[8]:.2f})" for r in rows],
                     xlabel="% of the cluster's items at screen (Wilson 95% interval)",
                     title="Co-occurrence by embedding cluster (riskiest first)")


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


def tradeoff(con, out: Path) -> Path | None:
    rows = con.execute("""
        SELECT d.strategy, coalesce(s.items_removed, 0), d.exposure_index, d.r1_items,
               greatest(d.r3_max_source, d.r3_max_cluster), d.r2_bridges, coalesce(s.recommended, false)
        FROM dataset_risk_by_strategy AS d LEFT JOIN strategies AS s USING (strategy)
        ORDER BY coalesce(s.items_removed, 0), d.strategy = 'none' DESC
    """).fetchall()
    if not rows:
        return None
    x = np.array([r[1] for r in rows], dtype=float)
    fig, ax = plt.subplots(figsize=(9, 4.6))
    ax.plot(x, [r[2] for r in rows], "o-", color="#c0392b", label="R4 exposure index")
    ax.plot(x, [r[4] for r in rows], "s--", color="#3c8dbc", label="max R3 score (source/cluster)")
    for i, r in enumerate(rows):
        label = r[0] + (" *" if r[6] else "") + f"\nR1 {r[3]}, bridges {r[5]}"
        ax.annotate(label, (r[1], r[2]), textcoords="offset points", xytext=(4, 8 + 30 * (i % 3)), fontsize=7,
                    fontweight="bold" if r[6] else "normal", arrowprops={"arrowstyle": "-", "color": "#999", "lw": 0.5})
    rec = [r for r in rows if r[6]]
    if rec:
        ax.plot([rec[0][1]], [rec[0][2]], marker="*", markersize=14, color="#f0a35e", linestyle="none",
                label=f"recommended ({rec[0][0]})")
    ax.set_xlabel("items removed")
    ax.set_ylabel("residual risk")
    ax.set_title("Removal strategies: items removed vs residual risk")
    top = max([r[2] or 0 for r in rows] + [r[4] or 0 for r in rows] + [0.01])
    ax.set_ylim(0, top * 1.45)
    ax.set_xlim(-0.03 * max(x.max(), 1), x.max() * 1.25 + 1)
    ax.legend(loc="upper right", fontsize=8)
    return _save(fig, out / "tradeoff.png")
