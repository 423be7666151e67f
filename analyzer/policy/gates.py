"""Sign-off gates: a policy (analyzer/policy/policy_file.py) evaluated on a run after a removal strategy.

Every gate has a status: ``pass``, ``fail`` or ``inconclusive`` (the data cannot say: coverage under the policy's
floor, uncalibrated thresholds, too little data for R3, R2 not computed). The verdict is ``fail`` when any gate
fails, else ``inconclusive`` when any gate is, else ``pass``; exit codes 0 pass, 1 fail, 3 inconclusive (2 stays
bad input). The verdict names the dataset state it holds for (analyzer/policy/state.py).

``evaluate_policy(con, root, policy, config)`` returns the verdict, its headline, the dataset state and one entry
per gate with its status and figure. docs/risk-model.md documents every gate and policy key.
"""
from __future__ import annotations

from pathlib import Path

from analyzer.errors import InputError
from analyzer.policy.policy_file import GATE_DEFAULTS, default_policy_path, load_policy, parse_policy
from analyzer.policy.state import (APPLY_REPORT, current_sha256, dataset_state, headline, read_apply_report,
                                   remember_sha256, verify_applied)
from analyzer.recommend import MIN_MINOR, STRATEGY_DOC, build_strategies, mark_recommended
from analyzer.store.sql import run_query

__all__ = ["GATE_DEFAULTS", "build_recommendations", "choose_strategy", "default_policy_path", "evaluate_policy",
           "exit_code", "format_signoff", "load_policy", "parse_policy", "remember_sha256"]
RESIDUAL_GATES = ("r1_after_removal", "hash_matches", "r3_groups", "r4_exposure", "r2_bridges")
EXIT_CODES = {"pass": 0, "fail": 1, "inconclusive": 3}

# ---- evaluation ----------------------------------------------------------------------------------------

def _residual(con, strategy: str) -> dict:
    cur = con.execute("SELECT * FROM dataset_risk_by_strategy WHERE strategy = ?", [strategy])
    row = cur.fetchone()
    if row is None:
        raise InputError(f"expected a removal strategy among {strategy_names(con)}, got {strategy!r}")
    return dict(zip([d[0] for d in cur.description], row))


def strategy_names(con) -> list[str]:
    return [r[0] for r in con.execute(
        "SELECT strategy FROM dataset_risk_by_strategy ORDER BY strategy = 'none' DESC, strategy").fetchall()]


def _worst_group(con, strategy: str, kinds: list[str]):
    return con.execute(
        "SELECT group_kind, group_id, score, items FROM group_risk_by_strategy WHERE strategy = ? "
        "AND list_contains(?, group_kind) ORDER BY score DESC, items DESC, group_kind, group_id LIMIT 1",
        [strategy, kinds]).fetchone()


def residual_gates(con, strategy: str, gates: dict) -> list[dict]:
    """The gates that depend on the removal strategy: R1, hash matches, R3, R4, R2."""
    res, base = _residual(con, strategy), _residual(con, "none")
    out = []
    r1 = int(res["r1_items"] or 0)
    out.append(_gate("r1_after_removal", r1 <= gates["max_r1_after_removal"], r1, gates["max_r1_after_removal"],
                     f"{r1} R1 items left after `{strategy}` (of {int(base['r1_items'] or 0)} found)"))
    scope = gates["hash_matches_scope"]
    h = int((base if scope == "input" else res)["hash_items"] or 0)
    out.append(_gate("hash_matches", h <= gates["max_hash_matches"], h, gates["max_hash_matches"],
                     f"{h} known-hash matches {'in the scanned dataset' if scope == 'input' else 'left after removal'}"))
    out.append(r3_gate(con, strategy, gates))
    r4 = float(res["exposure_index"] or 0.0)
    out.append(_gate("r4_exposure", r4 <= gates["max_r4"], round(r4, 6), gates["max_r4"],
                     f"exposure index {r4:.4f} (R1 share {res['r1_share']:.2g}, group co-occurrence "
                     f"{res['group_cooccurrence']:.3g}, bridge share {res['bridge_share']:.2g})"))
    if gates["max_r2_bridges_after_removal"] is not None:
        b, limit = int(res["r2_bridges"] or 0), gates["max_r2_bridges_after_removal"]
        if not res["r2_available"]:
            out.append(_gate("r2_bridges", "inconclusive", b, limit,
                             "R2 not computed (the run kept no embeddings): bridges cannot be counted"))
        else:
            out.append(_gate("r2_bridges", b <= limit, b, limit, f"{b} R2 bridge items left"))
    return out


def r3_gate(con, strategy: str, gates: dict) -> dict:
    """Max residual R3 score over the policy's group kinds; inconclusive (when not failed) where, in a kind the
    run computed, less than ``min_r3_ranked_share`` of the items sit in groups large enough to rank
    (queries/r3_support.sql): an empty or tiny R3 table is not evidence of safety."""
    kinds, limit = gates["r3_group_kinds"], gates["max_r3_score"]
    worst = _worst_group(con, strategy, kinds)
    score = float(worst[2]) if worst else 0.0
    where = (f"{worst[0]} {worst[1]}, {worst[3]} items" if worst and score > 0
             else "no ranked group holds both concepts")
    detail = f"max R3 score {score:.4f} over {'/'.join(kinds)} groups ({where})"
    support = {r[0]: r for r in run_query(con, "r3_support", {"strategy": strategy}).fetchall()}
    thin, skipped = [], []
    for kind in kinds:
        _, computed, items, ranked, groups, ranked_groups, share = support[kind]
        if not computed:
            skipped.append(f"{kind}: not computed (no embeddings kept)")
        elif items and (share or 0.0) < gates["min_r3_ranked_share"]:
            thin.append(f"{kind}: {ranked} of {items} items in {ranked_groups} of {groups} groups large enough "
                        f"to rank ({share or 0:.0%})")
    if skipped:
        detail += "; " + "; ".join(skipped)
    if score > limit:
        return _gate("r3_groups", False, round(score, 6), limit, detail)
    if thin:
        return _gate("r3_groups", "inconclusive", round(score, 6), limit,
                     f"{detail}; too little data: {'; '.join(thin)}, under the policy's minimum "
                     f"{gates['min_r3_ranked_share']:.0%} (min_r3_ranked_share)")
    return _gate("r3_groups", True, round(score, 6), limit, detail)


def choose_strategy(con, policy: dict, *, applied: str | None = None) -> str:
    """The policy's strategy; for ``auto`` the ``applied`` one (a verified apply of this run), else the one with the
    fewest removals whose residual gates do not fail."""
    names = strategy_names(con)
    want = policy["strategy"]
    if want == "auto" and applied in names:
        return applied  # the dataset that now exists: the strategy applied and verified
    if want != "auto":
        if want not in names:
            raise InputError(f"expected the policy's strategy among auto, {', '.join(names)}, got {want!r}")
        return want
    order = {name: i for i, name in enumerate(STRATEGY_DOC)}
    rows = sorted(con.execute(
        "SELECT d.strategy, coalesce(s.items_removed, 0) AS removed, d.exposure_index "
        "FROM dataset_risk_by_strategy AS d LEFT JOIN strategies AS s USING (strategy) "
        "WHERE d.strategy <> 'none'").fetchall(), key=lambda r: (r[1], order.get(r[0], len(order)), r[0]))
    input_scope = policy["gates"]["hash_matches_scope"] == "input"
    for name, _, _ in rows:
        gates = residual_gates(con, name, policy["gates"])
        # hash matches found in the input fail every strategy alike: they do not steer the choice
        if all(g["status"] != "fail" for g in gates if not (input_scope and g["gate"] == "hash_matches")):
            return name
    return min(rows, key=lambda r: (r[2], r[1]))[0] if rows else "none"


def build_recommendations(con, store, *, bank_version: str, encoder_name: str, recommended: str = "auto",
                          policy: str | dict | None = None, min_minor: int = MIN_MINOR) -> str:
    """Strategies and their residual risk, the one the policy recommends (``recommended="auto"``: the policy's
    choice; a strategy name: that one) and the manifest; returns the recommended strategy's name."""
    build_strategies(con, min_minor=min_minor)
    if recommended == "auto":
        pol = policy if isinstance(policy, dict) else load_policy(policy)
        recommended = choose_strategy(con, {**pol, "strategy": "auto"} if pol["strategy"] == "none" else pol)
    return mark_recommended(con, store, recommended, bank_version=bank_version, encoder_name=encoder_name)


def applied_strategy(con, root, config) -> str | None:
    """The strategy of a verified RUN/apply_report.json (analyzer/policy/state.py), else None."""
    if root is None or not (Path(root) / APPLY_REPORT).is_file():
        return None
    report = read_apply_report(Path(root) / APPLY_REPORT)
    ok, _ = verify_applied(con, root, report, report["strategy"], config or {})
    return report["strategy"] if ok else None


def _gate(name, status, figure, limit, detail) -> dict:
    """One gate: ``status`` True/False (pass/fail) or "inconclusive"; ``passed`` is true only for pass."""
    status = status if isinstance(status, str) else ("pass" if status else "fail")
    return {"gate": name, "status": status, "passed": status == "pass", "figure": figure, "limit": limit,
            "detail": detail}


def coverage_gate(con, root: Path, config: dict, gates: dict) -> dict:
    """Inconclusive when the assessed share is under ``min_assessed_share``, the failed share over
    ``max_failed_share``, or (with ``require_all_rows_accounted``) an input row is not in the catalog. Items not
    assessed only because their modality is uncalibrated count as assessed when the policy allows uncalibrated
    thresholds (``require_calibrated: false``)."""
    total, failed, assessed, reasons, min_row, max_row = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE status <> 'ok'), count(*) FILTER (WHERE assessed), "
        "histogram(not_assessed) FILTER (WHERE NOT assessed), min(row_idx), max(row_idx) FROM items").fetchone()
    reasons = sorted((reasons or {}).items(), key=lambda kv: (-kv[1], kv[0]))
    uncal = dict(reasons).get("uncalibrated_modality", 0)
    if not gates["require_calibrated"]:
        assessed += uncal
    input_rows = _input_rows(config)
    contiguous = rows_contiguous(con, total, min_row, max_row)
    accounted = contiguous and (input_rows is None or input_rows == total)
    share = failed / total if total else 1.0
    covered = assessed / total if total else 0.0
    ok = (total > 0 and covered >= gates["min_assessed_share"] and share <= gates["max_failed_share"]
          and (accounted or not gates["require_all_rows_accounted"]))
    src = f"{input_rows} input rows" if input_rows is not None else "input rows not countable from metadata"
    why = ", ".join(f"{n} {r}" for r, n in reasons) or "none"
    return _gate("scan_coverage", True if ok else "inconclusive", round(covered, 6), gates["min_assessed_share"],
                 f"{assessed} of {total} items assessed ({covered:.2%}; not assessed: {why}); {total - failed} "
                 f"scanned + {failed} failed = {total} rows ({src}; row positions "
                 f"{'contiguous' if contiguous else 'NOT contiguous'}); failed share {share:.4f} "
                 f"(limit {gates['max_failed_share']})")


def calibration_gate(con, gates: dict) -> dict:
    cal = con.execute("SELECT value FROM runs WHERE key = 'calibrated'").fetchone()
    ok = bool(cal and cal[0] == "True")
    if ok:
        return _gate("calibration", True, True, True, "thresholds calibrated for this encoder/modality")
    if gates["require_calibrated"]:
        return _gate("calibration", "inconclusive", False, True, "thresholds are UNCALIBRATED for this "
                     "encoder/modality: the counts are indicative only (calibrate with `analyzer probe fit`)")
    return _gate("calibration", True, False, False, "thresholds are UNCALIBRATED; allowed by this policy "
                 "(require_calibrated: false): the counts are indicative only")


BITSET_ROWS = 1 << 28  # up to this many rows the distinct positions are counted in a bitset (32 MB a thread)


def rows_contiguous(con, total: int, min_row, max_row) -> bool:
    """Whether the row positions of ``items`` are exactly 0 .. total - 1, each once: ``total`` distinct values in
    [0, total - 1]. The distinct values are counted with a bitset over that range (``bitstring_agg``: 0.2 s at 10M
    rows, against 1.7 s for ``count(DISTINCT row_idx)``'s hash table), or with count(DISTINCT) past BITSET_ROWS."""
    if total == 0:
        return True
    if min_row != 0 or max_row != total - 1:
        return False
    if total <= BITSET_ROWS:
        distinct = con.execute("SELECT bit_count(bitstring_agg(row_idx, 0, $last)) FROM items",
                               {"last": int(max_row)}).fetchone()[0]
    else:
        distinct = con.execute("SELECT count(DISTINCT row_idx) FROM items").fetchone()[0]
    return distinct == total


def _input_rows(config: dict) -> int | None:
    import pyarrow.parquet as pq

    total = 0
    for inp in config.get("inputs", []):
        p = Path(inp.get("resolved") or inp.get("path", ""))
        if p.suffix.lower() not in (".parquet", ".pq") or not p.is_file():
            return None
        try:
            total += pq.ParquetFile(p).metadata.num_rows
        except Exception:  # noqa: BLE001 - an unreadable input: the fingerprints gate reports it
            return None
    return total if config.get("inputs") else None


def fingerprint_gate(config: dict, verify: bool) -> dict:
    inputs = config.get("inputs", [])
    missing = [k for k in ("analyzer_version",) if not config.get(k)]
    missing += [f"{k}.sha256" for k in ("bank", "encoder", "model") if not (config.get(k) or {}).get("sha256")]
    missing += [f"inputs[{i}].sha256" for i, x in enumerate(inputs) if not x.get("sha256")]
    changed = []
    if verify:
        for x in inputs:
            p = Path(x.get("resolved") or x.get("path", ""))
            if not p.is_file() or (x.get("sha256") and current_sha256(p) != x["sha256"]):
                changed.append(str(p))
    ok = bool(inputs) and not missing and not changed
    detail = (f"{len(inputs)} input file(s), bank, encoder, model and analyzer version recorded"
              + (" and input sha256 re-verified" if verify and not changed else ""))
    if missing:
        detail = f"missing fingerprints: {', '.join(missing)}"
    elif changed:
        detail = f"inputs changed or missing since the scan: {', '.join(changed[:3])}"
    return _gate("fingerprints", ok, len(changed) + len(missing), 0, detail)


def verdict_of(gates: list[dict]) -> str:
    statuses = {g["status"] for g in gates}
    return "fail" if "fail" in statuses else "inconclusive" if "inconclusive" in statuses else "pass"


def exit_code(verdict: str) -> int:
    """0 pass, 1 fail, 3 inconclusive (2 is bad input, raised before any verdict)."""
    return EXIT_CODES[verdict]


def evaluate_policy(con, root: Path, policy: dict, config: dict) -> dict:
    strategy = choose_strategy(con, policy, applied=applied_strategy(con, root, config))
    gates = policy["gates"]
    out = residual_gates(con, strategy, gates)
    out.append(coverage_gate(con, root, config, gates))
    out.append(calibration_gate(con, gates))
    out.append(fingerprint_gate(config, gates["verify_input_hashes"]))
    removed = con.execute("SELECT count(DISTINCT item_id) FROM recommendations WHERE strategy = ?",
                          [strategy]).fetchone()[0]
    state = dataset_state(con, root, strategy, int(removed), config)
    if state["applied_strategy"] == strategy:  # an apply of this strategy is on record: it must prove the removal
        out.append(_gate("applied_output", state["verified"], state["verified"], True, state["detail"]))
    verdict = verdict_of(out)
    return {"verdict": verdict, "headline": headline(verdict, state), "dataset_state": state,
            "policy": policy["policy"], "policy_path": policy["path"], "policy_sha256": policy["sha256"],
            "strategy": strategy, "items_removed": int(removed), "gates": out}


def format_signoff(res: dict) -> str:
    lines = [f"policy {res['policy']} ({res['policy_path']}); strategy {res['strategy']} "
             f"({res['items_removed']} items removed)"]
    for g in res["gates"]:
        lines.append(f"{g['status'].upper():<4}  {g['gate']:<17} {g['figure']!s:>10} "
                     f"(limit {g['limit']})  {g['detail']}")
    lines.append(f"verdict: {res['verdict'].upper()}: {res['headline']}")
    return "\n".join(lines)
