"""The sign-off history: ``RUN/signoffs.jsonl``, one JSON line per ``analyzer signoff``, never overwritten.

Each record: ``time`` (UTC, ISO 8601), ``signer`` (``--signer`` or the OS user), ``policy``, ``policy_path``,
``policy_sha256``, ``run_fingerprint`` (sha256 of the scan's resume key, the input files' sha256 and the fitted
model's sha256: the same run scanned from the same bytes has the same fingerprint), ``dataset_state``, ``verdict``,
``strategy``, ``items_removed`` and every gate with its status and figure. The file is extended by rewriting it
whole under a temporary name (analyzer.store.rundir.atomic_write) while the caller holds the run's writer lock, so
a kill leaves the previous history, never a torn line.
"""
from __future__ import annotations

import datetime as _dt
import getpass
import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path

from analyzer.errors import InputError
from analyzer.store.rundir import atomic_write

HISTORY = "signoffs.jsonl"


def signer_name(signer: str | None) -> str:
    """``signer`` when given, else the OS user; InputError when neither is known."""
    if signer is not None:
        if not str(signer).strip():
            raise InputError("expected --signer NAME, got an empty name")
        return str(signer).strip()
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        raise InputError("expected --signer NAME, got none and the OS user could not be determined") from None


def run_fingerprint(root: Path, config: dict) -> str:
    state = {}
    p = Path(root) / "_state.json"
    if p.is_file():
        state = json.loads(p.read_text())
    key = {"scan": state.get("fingerprint"), "inputs": [x.get("sha256") for x in config.get("inputs", [])],
           "model": (config.get("model") or {}).get("sha256")}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def signoff_record(res: dict, *, signer: str, root: Path, config: dict) -> dict:
    return {"time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "signer": signer,
            "verdict": res["verdict"], "headline": res.get("headline"), "dataset_state": res.get("dataset_state"),
            "policy": res["policy"], "policy_path": res["policy_path"], "policy_sha256": res["policy_sha256"],
            "run_fingerprint": run_fingerprint(root, config), "strategy": res["strategy"],
            "items_removed": res["items_removed"], "gates": res["gates"]}


def append_signoff(root: Path, record: dict) -> int:
    """Add ``record`` to RUN/signoffs.jsonl (the caller holds the writer lock); returns the number of records."""
    path = Path(root) / HISTORY
    old = path.read_bytes() if path.is_file() else b""
    if old and not old.endswith(b"\n"):
        old += b"\n"
    line = json.dumps(record, default=str, sort_keys=False).encode() + b"\n"
    atomic_write(path, old + line, mode=0o600)
    return old.count(b"\n") + 1


@contextmanager
def recorded(root: Path, record: dict):
    """Append ``record`` for the duration of the body (the report that shows it); if the body fails, the previous
    history is put back by a rename (no space needed), so a failed sign-off leaves no record."""
    path, backup = Path(root) / HISTORY, Path(root) / f".{HISTORY}.{os.getpid()}.prev"
    had = path.is_file()
    if had:
        os.link(path, backup)  # the previous history, under a second name until the body succeeds
    try:
        append_signoff(root, record)
        yield
    except BaseException:
        if had:
            os.replace(backup, path)
        else:
            path.unlink(missing_ok=True)
        raise
    finally:
        backup.unlink(missing_ok=True)


def read_history(root: Path) -> list[dict]:
    """Every record of RUN/signoffs.jsonl, oldest first ([] when there is none)."""
    path = Path(root) / HISTORY
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def history_summary(root: Path | None) -> dict:
    """``{"count", "latest"}`` for summary.json: the latest record without its gates."""
    records = read_history(root) if root is not None else []
    latest = records[-1] if records else None
    keys = ("time", "signer", "verdict", "headline", "policy", "policy_sha256", "strategy", "run_fingerprint")
    return {"count": len(records),
            "latest": None if latest is None else {**{k: latest.get(k) for k in keys},
                                                   "state": (latest.get("dataset_state") or {}).get("state")}}
