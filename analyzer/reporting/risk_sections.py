"""The report's risk sections: the executive summary (analyzer/reporting/executive.py), coverage, sign-off,
residual risk per strategy, R4, R2 bridges, R3 groups, languages, and their figures.

Called by :func:`analyzer.reporting.write_report`. Adds to ``summary``: ``verdict`` (pass / fail / inconclusive),
``signoff`` (policy, strategy, gates), ``r2``, ``r3``, ``clusters``, ``media_decided`` and the residual figures of
each strategy (written to ``RUN/signoff.json`` by write_report). Items appear by id and scores only, never by
caption. The executive block leads the returned Markdown; render_markdown puts it first in the report.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from analyzer.reporting import figures
from analyzer.reporting.coverage import coverage_section
from analyzer.reporting.executive import executive_section, gate_status, state_label
from analyzer.reporting.render import count_pct, pct, table


def _rows(con, sql: str, params=None) -> list[dict]:
    cur = con.execute(sql, params or [])
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def signoff_result(con, root: Path, policy) -> dict:
    from analyzer.policy.gates import evaluate_policy, load_policy

    pol = policy if isinstance(policy, dict) else load_policy(policy)
    config = {}
    cfg_path = root / "config.resolved.yaml"
    if cfg_path.exists():
        config = yaml.safe_load(cfg_path.read_text()) or {}
    res = evaluate_policy(con, root, pol, config)
    if policy is None:
        res["policy"] = f"{res['policy']} (packaged; pass --policy FILE to choose)"
    return res


def risk_sections(con, store, summary: dict, policy, *, figdir: Path | None = None) -> dict:
    """``{"markdown": str, "figures": [Path]}``; adds verdict, signoff, r2, r3, clusters and the strategies'
    residual figures to ``summary`` (write_report writes ``summary["signoff"]`` to RUN/signoff.json). Figures go to
    ``figdir`` (default RUN/figures; write_report passes its staging directory)."""
    from analyzer.risk import risk_settings

    root = store.root
    res = signoff_result(con, root, policy)
    summary["verdict"] = res["verdict"]
    summary["signoff"] = res
    summary["dataset_state"] = res["dataset_state"]  # the state the verdict is about (analyzer/policy/state.py)

    settings = risk_settings(con)
    d = _rows(con, "SELECT * FROM dataset_risk")[0]
    bridges = _rows(con, "SELECT item_id, direction, k, neighbours, r2, lift, mean_similarity FROM neighbourhood_risk "
                         "WHERE bridge ORDER BY r2 DESC, item_id LIMIT 20")
    summary["r2"] = {"available": bool(d["r2_available"]), "k": settings["k"], "bridge_share": settings["bridge_share"],
                     "items": d["r2_items"], "bridges": d["r2_bridges"], "adult_bridges": d["adult_bridges"],
                     "minor_bridges": d["minor_bridges"],
                     "top_bridges": [{k: b[k] for k in ("item_id", "direction", "r2")} for b in bridges]}
    from analyzer.index.build import index_info  # how the neighbours were searched (exact or sampled), in summary.json

    summary["r2"]["index"] = index_info(con)
    groups = {}
    for kind in ("source", "shard", "cluster"):
        groups[kind] = _rows(con, "SELECT group_id, items, minor, adult_sexual, both_concepts, minor_rate, minor_rate_lo, "
                                  "minor_rate_hi, adult_sexual_rate, adult_sexual_rate_lo, adult_sexual_rate_hi, "
                                  "cooccurrence_share, cooccurrence_share_lo, cooccurrence_share_hi, score, rank "
                                  "FROM group_risk WHERE group_kind = ? ORDER BY rank LIMIT 10", [kind])
    summary["r3"] = {"min_items": settings["min_items"], "point": settings["point"], "top": groups}
    summary["clusters"] = {"k": con.execute("SELECT count(DISTINCT cluster) FROM clusters").fetchone()[0]}
    strat = {r["strategy"]: r for r in _rows(con, "SELECT * FROM strategies")}
    for s in summary.get("strategies", []):
        row = strat.get(s["strategy"], {})
        for key in ("quarantined", "residual_r1", "residual_hash", "residual_r3_max", "residual_r2_bridges",
                    "residual_r4", "description"):
            s[key] = row.get(key)

    figdir = figdir or root / "figures"
    limits = {g["gate"]: g["limit"] for g in res["gates"]}
    figs = [f for f in (figures.coverage(summary["coverage"], figdir),
                        figures.tradeoff(con, figdir, r3_limit=limits.get("r3_groups"),
                                         r4_limit=limits.get("r4_exposure")),
                        figures.clusters(con, figdir), figures.neighbourhoods(con, figdir)) if f is not None]
    markdown = "\n\n".join([executive_section(root, summary), coverage_section(con, summary),
                             _markdown(res, d, settings, bridges, groups, summary, history_markdown(root)),
                             _language_markdown(root, summary)])  # analyzer/reporting/languages.py
    return {"markdown": markdown, "figures": figs}


def _language_markdown(root: Path, summary: dict) -> str:
    import json

    from analyzer.reporting.languages import language_section

    model_path = root / "model.json"
    return language_section(summary, json.loads(model_path.read_text()) if model_path.exists() else {})


HISTORY_ROWS = 10  # sign-offs listed in the report, newest first (all are in RUN/signoffs.jsonl)


def history_markdown(root: Path) -> str:
    """The sign-off history (RUN/signoffs.jsonl, analyzer/policy/history.py), newest first."""
    from analyzer.policy.history import read_history

    records = read_history(root)[::-1]
    lines = ["### Sign-off history", ""]
    if not records:
        return "\n".join(lines + ["No sign-off recorded yet: `analyzer signoff RUN --signer NAME` appends one to "
                                  "`RUN/signoffs.jsonl` (never overwritten)."])
    lines += [f"{len(records)} sign-off{'s' if len(records) != 1 else ''} recorded in `RUN/signoffs.jsonl`, newest "
              "first"
              + (f" ({HISTORY_ROWS} shown)" if len(records) > HISTORY_ROWS else "") + ".", "",
              table(["time (UTC)", "signer", "verdict", "dataset state", "strategy", "policy (sha256)",
                     "run fingerprint"],
                    [[r.get("time"), r.get("signer"), f"**{str(r.get('verdict', '')).upper()}**",
                      state_label(r["dataset_state"]) if r.get("dataset_state") else "",
                      r.get("strategy"), f"{r.get('policy')} ({str(r.get('policy_sha256') or '')[:12]})",
                      str(r.get("run_fingerprint") or "")[:12]] for r in records[:HISTORY_ROWS]])]
    return "\n".join(lines)


def _markdown(res, d, settings, bridges, groups, summary, history: str) -> str:
    gates = [[f"**{gate_status(g).upper()}**", g["gate"], g["figure"], g["limit"], g["detail"]] for g in res["gates"]]
    total = summary["items_total"]
    lines = [
        "## Sign-off", "",
        f"**Verdict: {summary['verdict'].upper()}** for the dataset {state_label(summary['dataset_state'])}, "
        "under policy "
        f"`{res['policy']}` (strategy `{res['strategy']}`, {count_pct(res['items_removed'], total)} items removed). "
        f"Re-check with `analyzer signoff RUN --policy FILE`; write the filtered dataset with "
        f"`analyzer apply RUN --strategy {res['strategy']} --out DIR`.", "",
        table(["", "gate", "figure", "limit", "detail"], gates), "", history, "",
        "## Residual risk per strategy (R1 to R4 recomputed after removal)", "",
        table(["strategy", "removed", "R1 left", "max R3", "R2 bridges", "R4", "recommended"],
               [[s["strategy"], count_pct(s["items_removed"], total), s.get("residual_r1"), s.get("residual_r3_max"),
                 s.get("residual_r2_bridges"), s.get("residual_r4"), "yes" if s["recommended"] else ""]
                for s in summary.get("strategies", [])]), "",
        "## R4: compositional exposure index", "",
        f"exposure index = min(1, 100 x R1 share + group co-occurrence + 10 x bridge share) = "
        f"min(1, 100 x {d['r1_share']:.4g} + {d['group_cooccurrence']:.4g} + 10 x {d['bridge_share']:.4g}) = "
        f"**{d['exposure_index']:.4f}** (group co-occurrence: sources {d['source_cooccurrence']:.4g}, clusters "
        f"{d['cluster_cooccurrence']:.4g}; see docs/risk-model.md)", "",
        "## R2 neighbourhood bridges", "",
        f"k = {settings['k']} nearest neighbours; an item is a bridge when at least {settings['bridge_share']:.0%} of "
        "them carry the other concept. Ids and scores only.", "",
    ]
    if d["r2_available"]:
        from analyzer.index.build import describe_search

        lines += [describe_search(summary["r2"].get("index") or {}), ""]
    if not d["r2_available"]:
        lines += ["Not computed: the run kept no embeddings.", ""]
    elif bridges:
        lines += [f"{d['r2_bridges']} bridge items ({d['adult_bridges']} adult_sexual items with a minor-heavy "
                  f"neighbourhood, {d['minor_bridges']} minor items with an adult_sexual-heavy one).", "",
                  table(["item_id", "direction", "neighbours", "share", "lift", "mean similarity"],
                         [[b["item_id"], b["direction"], b["neighbours"], b["r2"], b["lift"], b["mean_similarity"]]
                          for b in bridges]), ""]
    else:
        lines += ["No bridge items.", ""]
    lines += ["## R3 groups", "",
              f"Groups of at least {settings['min_items']} items, most co-occurring items first. Rates at the "
              f"{settings['point']} threshold and each group's share of the dataset's co-occurring items (items "
              "carrying both concepts), with Wilson 95% intervals.", ""]
    for kind, rows in groups.items():
        lines += [f"### By {kind}", ""]
        if not rows:
            lines += [f"No {kind} has the minimum support of {settings['min_items']} items: no {kind} is ranked.", ""]
            continue
        lines += [table([kind, "items", "minor", "adult_sexual", "both", "minor rate [95% CI]",
                         "adult_sexual rate [95% CI]", "share of co-occurring items [95% CI]", "score"],
                        [[r["group_id"], r["items"], r["minor"], r["adult_sexual"], r["both_concepts"],
                          _pct_ci(r["minor_rate"], r["minor_rate_lo"], r["minor_rate_hi"]),
                          _pct_ci(r["adult_sexual_rate"], r["adult_sexual_rate_lo"], r["adult_sexual_rate_hi"]),
                          _pct_ci(r["cooccurrence_share"], r["cooccurrence_share_lo"], r["cooccurrence_share_hi"])
                          if r["cooccurrence_share"] is not None else "none in the dataset", r["score"]]
                         for r in rows]), ""]
    return "\n".join(lines)


def _pct_ci(v, lo, hi) -> str:
    """A share and its interval as percentages: "16.7% [7.9%, 31.9%]"."""
    if v is None:
        return ""
    return f"{pct(v, 1)} [{pct(lo or 0, 1)}, {pct(min(hi or 0, 1), 1)}]"

