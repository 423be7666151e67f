"""Sign-off: a policy file (YAML) of gates, evaluated on a run after a removal strategy.

A policy (see analyzer/policies/default.yaml and docs/risk-model.md)::

    policy: default
    strategy: auto            # auto = the removal strategy with the fewest removals that passes the residual
                              # gates; or a strategy name, or none
    gates:
      max_r1_after_removal: 0
      max_hash_matches: 0
      hash_matches_scope: input          # input (found in the scanned dataset) or after_removal
      max_r3_score: 0.02
      r3_group_kinds: [source, cluster]
      max_r4: 0.02
      max_r2_bridges_after_removal: null  # null = not gated
      max_failed_share: 0.01
      require_all_rows_accounted: true
      require_calibrated: false
      verify_input_hashes: true

``evaluate_policy(con, root, policy)`` returns the verdict and one entry per gate with its figure.
``load_policy`` raises :class:`InputError` (one line, exit 2) for anything malformed.
"""
from __future__ import annotations

import hashlib
import importlib.resources as resources
from pathlib import Path

import yaml

from analyzer.errors import InputError
from analyzer.recommend import MIN_MINOR, STRATEGY_DOC, build_strategies, mark_recommended

GATE_DEFAULTS = {
    "max_r1_after_removal": 0,
    "max_hash_matches": 0,
    "hash_matches_scope": "input",
    "max_r3_score": 0.02,
    "r3_group_kinds": ["source", "cluster"],
    "max_r4": 0.02,
    "max_r2_bridges_after_removal": None,
    "max_failed_share": 0.01,
    "require_all_rows_accounted": True,
    "require_calibrated": False,
    "verify_input_hashes": True,
}
TOP_KEYS = {"policy", "version", "description", "strategy", "gates"}
GROUP_KINDS = ("source", "shard", "cluster")
RESIDUAL_GATES = ("r1_after_removal", "hash_matches", "r3_groups", "r4_exposure", "r2_bridges")


def default_policy_path() -> Path:
    return Path(str(resources.files("analyzer") / "policies" / "default.yaml"))


def load_policy(path: str | Path | None = None) -> dict:
    """Read and validate a policy file (the packaged default when ``path`` is None)."""
    p = default_policy_path() if path is None else Path(path)
    if not p.is_file():
        raise InputError(f"expected a policy YAML file, got {str(path)!r} which does not exist; "
                         f"start from {default_policy_path()}")
    data = p.read_bytes()
    try:
        raw = yaml.safe_load(data.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise InputError(f"expected a valid YAML policy in {p}, got a parse error{where}; fix the file") from None
    return parse_policy(raw, where=str(p), sha256=hashlib.sha256(data).hexdigest())


def parse_policy(raw, *, where: str = "<policy>", sha256: str | None = None) -> dict:
    def bad(expected, got):
        raise InputError(f"expected {expected} in policy {where}, got {got}; fix the policy file "
                         "(see analyzer/policies/default.yaml)")

    if not isinstance(raw, dict):
        bad("a mapping with a 'gates' section", type(raw).__name__)
    unknown = set(raw) - TOP_KEYS
    if unknown:
        bad(f"only the keys {sorted(TOP_KEYS)}", f"unknown {sorted(map(str, unknown))}")
    gates_raw = raw.get("gates")
    if not isinstance(gates_raw, dict):
        bad("a 'gates' mapping", type(gates_raw).__name__ if gates_raw is not None else "none")
    unknown = set(gates_raw) - set(GATE_DEFAULTS)
    if unknown:
        bad(f"gate keys among {sorted(GATE_DEFAULTS)}", f"unknown {sorted(map(str, unknown))}")
    gates = dict(GATE_DEFAULTS)
    gates.update(gates_raw)
    for key in ("max_r1_after_removal", "max_hash_matches"):
        v = gates[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            bad(f"{key}: a whole number >= 0", repr(v))
    for key in ("max_r3_score", "max_r4", "max_failed_share"):
        v = gates[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
            bad(f"{key}: a number between 0 and 1", repr(v))
    v = gates["max_r2_bridges_after_removal"]
    if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
        bad("max_r2_bridges_after_removal: null or a whole number >= 0", repr(v))
    if gates["hash_matches_scope"] not in ("input", "after_removal"):
        bad("hash_matches_scope: input or after_removal", repr(gates["hash_matches_scope"]))
    kinds = gates["r3_group_kinds"]
    if not isinstance(kinds, list) or not kinds or any(k not in GROUP_KINDS for k in kinds):
        bad(f"r3_group_kinds: a non-empty list among {list(GROUP_KINDS)}", repr(kinds))
    for key in ("require_all_rows_accounted", "require_calibrated", "verify_input_hashes"):
        if not isinstance(gates[key], bool):
            bad(f"{key}: true or false", repr(gates[key]))
    strategy = raw.get("strategy", "auto")
    if not isinstance(strategy, str) or not strategy:
        bad("strategy: auto, none or a strategy name", repr(strategy))
    name = raw.get("policy", Path(where).stem)
    if not isinstance(name, (str, int, float)):
        bad("policy: a name", repr(name))
    return {"policy": str(name), "strategy": strategy, "gates": gates, "path": where, "sha256": sha256,
            "description": str(raw.get("description", ""))}


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
    worst = _worst_group(con, strategy, gates["r3_group_kinds"])
    score = float(worst[2]) if worst else 0.0
    where = (f"{worst[0]} {worst[1]}, {worst[3]} items" if worst and score > 0
             else "no ranked group holds both concepts")
    out.append(_gate("r3_groups", score <= gates["max_r3_score"], round(score, 6), gates["max_r3_score"],
                     f"max R3 score {score:.4f} over {'/'.join(gates['r3_group_kinds'])} groups ({where})"))
    r4 = float(res["exposure_index"] or 0.0)
    out.append(_gate("r4_exposure", r4 <= gates["max_r4"], round(r4, 6), gates["max_r4"],
                     f"exposure index {r4:.4f} (R1 share {res['r1_share']:.2g}, group co-occurrence "
                     f"{res['group_cooccurrence']:.3g}, bridge share {res['bridge_share']:.2g})"))
    if gates["max_r2_bridges_after_removal"] is not None:
        b = int(res["r2_bridges"] or 0)
        note = "" if res["r2_available"] else " (no embeddings kept: R2 not computed)"
        out.append(_gate("r2_bridges", b <= gates["max_r2_bridges_after_removal"] and bool(res["r2_available"]), b,
                         gates["max_r2_bridges_after_removal"], f"{b} R2 bridge items left{note}"))
    return out


def choose_strategy(con, policy: dict) -> str:
    """The policy's strategy; for ``auto`` the one with the fewest removals that passes the residual gates."""
    names = strategy_names(con)
    want = policy["strategy"]
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
        if all(g["passed"] for g in gates if not (input_scope and g["gate"] == "hash_matches")):
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


def _gate(name, passed, figure, limit, detail) -> dict:
    return {"gate": name, "passed": bool(passed), "figure": figure, "limit": limit, "detail": detail}


def coverage_gate(con, root: Path, config: dict, gates: dict) -> dict:
    total, failed, min_row, max_row = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE status <> 'ok'), min(row_idx), max(row_idx) FROM items"
    ).fetchone()
    input_rows = _input_rows(config)
    contiguous = rows_contiguous(con, total, min_row, max_row)
    accounted = contiguous and (input_rows is None or input_rows == total)
    share = failed / total if total else 1.0
    ok = share <= gates["max_failed_share"] and (accounted or not gates["require_all_rows_accounted"]) and total > 0
    src = f"{input_rows} input rows" if input_rows is not None else "input rows not countable from metadata"
    return _gate("scan_coverage", ok, round(share, 6), gates["max_failed_share"],
                 f"{total - failed} scanned + {failed} failed = {total} rows ({src}; row positions "
                 f"{'contiguous' if contiguous else 'NOT contiguous'}); failed share {share:.4f}")


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


# sha256 of input files hashed by this process moments ago (pipeline.finalize), keyed by (resolved path, size,
# mtime_ns): the scan's own sign-off does not read a 10 GB input twice; a changed size or mtime re-hashes.
_FRESH_SHA256: dict[tuple, str] = {}


def _stat_key(p: Path):
    try:
        st = Path(p).resolve().stat()
    except OSError:
        return None
    return (str(Path(p).resolve()), st.st_size, st.st_mtime_ns)


def remember_sha256(p, sha256: str) -> None:
    """Record the sha256 just computed for ``p`` (used by the scan's own sign-off, see fingerprint_gate)."""
    key = _stat_key(p)
    if key is not None and sha256:
        _FRESH_SHA256[key] = sha256


def _current_sha256(p: Path) -> str:
    from analyzer.ingest import file_sha256

    fresh = _FRESH_SHA256.get(_stat_key(p))
    return fresh if fresh else file_sha256(p)


def fingerprint_gate(config: dict, verify: bool) -> dict:
    inputs = config.get("inputs", [])
    missing = [k for k in ("analyzer_version",) if not config.get(k)]
    missing += [f"{k}.sha256" for k in ("bank", "encoder", "model") if not (config.get(k) or {}).get("sha256")]
    missing += [f"inputs[{i}].sha256" for i, x in enumerate(inputs) if not x.get("sha256")]
    changed = []
    if verify:
        for x in inputs:
            p = Path(x.get("resolved") or x.get("path", ""))
            if not p.is_file() or (x.get("sha256") and _current_sha256(p) != x["sha256"]):
                changed.append(str(p))
    ok = bool(inputs) and not missing and not changed
    detail = (f"{len(inputs)} input file(s), bank, encoder, model and analyzer version recorded"
              + (" and input sha256 re-verified" if verify and not changed else ""))
    if missing:
        detail = f"missing fingerprints: {', '.join(missing)}"
    elif changed:
        detail = f"inputs changed or missing since the scan: {', '.join(changed[:3])}"
    return _gate("fingerprints", ok, len(changed) + len(missing), 0, detail)


def evaluate_policy(con, root: Path, policy: dict, config: dict) -> dict:
    strategy = choose_strategy(con, policy)
    gates = policy["gates"]
    out = residual_gates(con, strategy, gates)
    out.append(coverage_gate(con, root, config, gates))
    if gates["require_calibrated"]:
        cal = con.execute("SELECT value FROM runs WHERE key = 'calibrated'").fetchone()
        ok = bool(cal and cal[0] == "True")
        out.append(_gate("calibration", ok, ok, True, "thresholds calibrated for this encoder/modality" if ok
                         else "thresholds are UNCALIBRATED for this encoder/modality"))
    out.append(fingerprint_gate(config, gates["verify_input_hashes"]))
    removed = con.execute("SELECT count(DISTINCT item_id) FROM recommendations WHERE strategy = ?",
                          [strategy]).fetchone()[0]
    return {"verdict": "pass" if all(g["passed"] for g in out) else "fail", "policy": policy["policy"],
            "policy_path": policy["path"], "policy_sha256": policy["sha256"], "strategy": strategy,
            "items_removed": int(removed), "gates": out}


def format_signoff(res: dict) -> str:
    lines = [f"policy {res['policy']} ({res['policy_path']}); strategy {res['strategy']} "
             f"({res['items_removed']} items removed)"]
    for g in res["gates"]:
        lines.append(f"{'PASS' if g['passed'] else 'FAIL'}  {g['gate']:<17} {g['figure']!s:>10} "
                     f"(limit {g['limit']})  {g['detail']}")
    lines.append(f"verdict: {res['verdict'].upper()}")
    return "\n".join(lines)
