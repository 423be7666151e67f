"""Policy files: the YAML a sign-off is evaluated with (analyzer/policies/default.yaml; docs/risk-model.md).

A policy::

    policy: default
    strategy: auto            # auto = the removal strategy with the fewest removals that passes the residual
                              # gates; or a strategy name, or none
    gates:
      max_r1_after_removal: 0
      max_hash_matches: 0
      hash_matches_scope: input          # input (found in the scanned dataset) or after_removal
      max_r3_score: 0.02
      r3_group_kinds: [source, cluster]
      min_r3_ranked_share: 0.5           # R3 minimum support: else the R3 gate is INCONCLUSIVE
      max_r4: 0.02
      max_r2_bridges_after_removal: null  # null = not gated
      max_failed_share: 0.01
      min_assessed_share: 0.99           # coverage floor: else INCONCLUSIVE
      require_all_rows_accounted: true
      require_calibrated: true           # uncalibrated thresholds: INCONCLUSIVE (false: allowed, with a note)
      verify_input_hashes: true

``load_policy`` raises :class:`InputError` (one line, exit 2) for anything malformed.
"""
from __future__ import annotations

import hashlib
import importlib.resources as resources
from pathlib import Path

import yaml

from analyzer.errors import InputError

GATE_DEFAULTS = {
    "max_r1_after_removal": 0,
    "max_hash_matches": 0,
    "hash_matches_scope": "input",
    "max_r3_score": 0.02,
    "r3_group_kinds": ["source", "cluster"],
    "min_r3_ranked_share": 0.5,
    "max_r4": 0.02,
    "max_r2_bridges_after_removal": None,
    "max_failed_share": 0.01,
    "min_assessed_share": 0.99,
    "require_all_rows_accounted": True,
    "require_calibrated": True,
    "verify_input_hashes": True,
}
TOP_KEYS = {"policy", "version", "description", "strategy", "gates"}
GROUP_KINDS = ("source", "shard", "cluster")
SHARES = ("max_r3_score", "max_r4", "max_failed_share", "min_assessed_share", "min_r3_ranked_share")
FLAGS = ("require_all_rows_accounted", "require_calibrated", "verify_input_hashes")


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
    for key in SHARES:
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
    for key in FLAGS:
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
