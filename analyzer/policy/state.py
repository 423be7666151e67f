"""The dataset state a verdict is about: as scanned, after removing a strategy's items, or that removal applied.

- ``as_scanned``: the strategy removes nothing; the verdict is about the input as it is.
- ``after_removal``: the strategy removes items but no cleaned dataset has been checked: a PASS holds only once the
  removal is applied (``analyzer apply RUN --strategy S --out DIR``, then ``analyzer signoff RUN --applied DIR``).
- ``applied``: ``RUN/apply_report.json`` (copied there from ``DIR`` by ``signoff --applied DIR``) is for this run and
  this strategy, reconciled, removed exactly the strategy's item ids (the order-free id digest of the catalog's
  removals equals the report's), and every output file still has the sha256 the apply recorded.
"""
from __future__ import annotations

import json
from pathlib import Path

from analyzer.errors import InputError
from analyzer.ingest import file_sha256
from analyzer.recommend.apply import id_digest  # the apply report's order-free id digest

APPLY_REPORT = "apply_report.json"
STATES = ("as_scanned", "after_removal", "applied")


# sha256 of files hashed by this process moments ago (the scan's inputs, pipeline.finalize; an apply's outputs,
# checked by one sign-off's two evaluations), keyed by (resolved path, size, mtime_ns): a 10 GB file is not read
# twice; a changed size or mtime re-hashes.
_FRESH_SHA256: dict[tuple, str] = {}


def _stat_key(p):
    try:
        st = Path(p).resolve().stat()
    except OSError:
        return None
    return (str(Path(p).resolve()), st.st_size, st.st_mtime_ns)


def remember_sha256(p, sha256: str) -> None:
    """Record the sha256 just computed for ``p``."""
    key = _stat_key(p)
    if key is not None and sha256:
        _FRESH_SHA256[key] = sha256


def current_sha256(p) -> str:
    """The sha256 of ``p``: remembered when this process hashed the same file (size, mtime) before."""
    fresh = _FRESH_SHA256.get(_stat_key(p))
    if fresh:
        return fresh
    sha = file_sha256(p)
    remember_sha256(p, sha)
    return sha


def read_apply_report(path: Path) -> dict:
    """DIR/apply_report.json (or the file itself); InputError when it is missing or not an apply report."""
    p = Path(path)
    p = p / APPLY_REPORT if p.is_dir() else p
    if not p.is_file():
        raise InputError(f"expected the output directory of `analyzer apply` holding {APPLY_REPORT}, got {path}; "
                         "run `analyzer apply RUN --strategy NAME --out DIR` first")
    try:
        report = json.loads(p.read_text())
    except (ValueError, UnicodeDecodeError):
        report = None
    if not isinstance(report, dict) or not {"run", "strategy", "reconciled", "files", "id_digest"} <= set(report):
        raise InputError(f"expected an apply report written by `analyzer apply`, got {p} which is not one")
    return report


def verify_applied(con, root: Path, report: dict, strategy: str, config: dict) -> tuple[bool, str]:
    """Whether ``report`` proves that ``strategy``'s removal was applied to this run's inputs: (ok, why)."""
    if Path(report["run"]).resolve() != Path(root).resolve():
        return False, f"the apply report is for another run ({report['run']})"
    if report["strategy"] != strategy:
        return False, f"the apply report is for strategy `{report['strategy']}`, the verdict for `{strategy}`"
    if not report.get("reconciled") or not all((report.get("checks") or {}).values()):
        return False, "the apply report is not reconciled"
    ids = [r[0] for r in con.execute("SELECT DISTINCT item_id FROM recommendations WHERE strategy = ?",
                                     [strategy]).fetchall()]
    if report.get("manifest_ids") != len(ids) or report.get("manifest_ids_missing"):
        return False, f"the apply report removed {report.get('manifest_ids')} ids, the strategy {len(ids)}"
    digests = report.get("id_digest") or {}
    if f"{id_digest(ids):016x}" != digests.get("removed_ids", digests.get("removed")):  # older reports: rows
        return False, "the ids the apply removed differ from the strategy's removals"
    scanned = {str(Path(x.get("resolved") or x.get("path", "")).resolve()): x.get("sha256")
               for x in config.get("inputs", [])}
    for f in report["files"]:
        if scanned.get(str(Path(f["input"]).resolve()), f.get("input_sha256")) != f.get("input_sha256"):
            return False, f"the apply read {f['input']} with another sha256 than the scan"
        out = Path(f["output"])
        if not out.is_file() or current_sha256(out) != f.get("output_sha256"):
            return False, f"{out} is missing or changed since the apply (sha256)"
    return True, f"{len(ids)} ids removed and {len(report['files'])} output file(s) verified by id and sha256"


def dataset_state(con, root: Path, strategy: str, items_removed: int, config: dict) -> dict:
    """The state the verdict is about (module docstring), with a ``detail`` sentence."""
    out = {"state": "as_scanned", "strategy": strategy, "items_removed": int(items_removed), "applied_dir": None,
           "applied_strategy": None, "verified": False, "detail": "the dataset as scanned (the strategy removes nothing)"}
    if items_removed == 0:
        return out
    out["state"] = "after_removal"
    path = Path(root) / APPLY_REPORT
    if not path.is_file():
        out["detail"] = (f"after removing {items_removed} items (strategy {strategy}); not applied yet: run `analyzer "
                         f"apply RUN --strategy {strategy} --out DIR`, then `analyzer signoff RUN --applied DIR`")
        return out
    report = read_apply_report(path)
    ok, why = verify_applied(con, root, report, strategy, config)
    out["applied_dir"] = str(Path(report["files"][0]["output"]).parent) if report["files"] else None
    out["applied_strategy"] = report["strategy"]
    if ok:
        out.update(state="applied", verified=True, detail=f"the cleaned dataset in {out['applied_dir']}: {why}")
    else:
        out["detail"] = f"after removing {items_removed} items (strategy {strategy}); the applied output is NOT verified: {why}"
    return out


def headline(verdict: str, state: dict) -> str:
    """One sentence: the verdict and the dataset state it holds for."""
    v, n, s = verdict.upper(), state["items_removed"], state["strategy"]
    if state["state"] == "as_scanned":
        return f"{v} for the dataset as scanned"
    if state["state"] == "applied":
        return f"{v} for the cleaned dataset in {state['applied_dir']} ({n} items removed by strategy {s}, verified)"
    tail = ("NOT YET APPLIED: run `analyzer apply RUN --strategy {s} --out DIR`, then `analyzer signoff RUN "
            "--applied DIR`").format(s=s) if not state.get("applied_dir") else "the applied output is NOT verified"
    return f"{v} only after removing {n} items (strategy {s}); {tail}"
