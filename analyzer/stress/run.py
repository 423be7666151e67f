"""``run_stress``: a prompt suite and a model's generations -> a stress run directory; ``compare_stress``: two
stress runs side by side.

Layout of a stress run (every file written whole under a temporary name and renamed; ``_SUCCESS`` last, so a run
without it is incomplete and refused by ``--compare`` and the model card)::

    RUN/_stress_state.json        what was run (suite and input fingerprints, encoder, settings)
    RUN/generations.parquet       one row per generation: ids, prompt id, category, status, scores, flags
    RUN/per_prompt.csv            per prompt: counts and rates of minor, adult_sexual, both (Wilson 95%), drift
    RUN/per_category.csv          the same pooled per category
    RUN/drift_generations.csv     the drifting, escalated or hash-matched generations: ids and scores only
    RUN/escalation/               the restricted escalation package (analyzer/escalation.py), ids and hashes only
    RUN/compare.csv               with --compare: the differences and their Newcombe 95% intervals
    RUN/figures/*.png             rates per category; with --compare, the differences
    RUN/stress.json, stress.md    the summary and the report
    RUN/_SUCCESS
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import shutil
from pathlib import Path

from analyzer import __version__
from analyzer.config import ColumnSpec, ScanConfig
from analyzer.encoders import DEFAULT_ENCODER
from analyzer.errors import InputError, RunIncompleteError
from analyzer.escalation import write_escalation_package
from analyzer.pipeline import check_out_outside_inputs, prepare_scan
from analyzer.store.lock import LOCK_NAME, writer_lock
from analyzer.store.rundir import atomic_write
from analyzer.stress.report import (CATEGORY_COLUMNS, PROMPT_COLUMNS, csv_text, drift_generations_csv, dumps,
                                     rates_chart, render_markdown)
from analyzer.stress.compare import COMPARE_COLUMNS, compare_chart, compare_rows, compare_summary
from analyzer.stress.generations import GENERATIONS_FILE, tag_generations
from analyzer.stress.stats import category_rows, prompt_rows
from analyzer.stress.suite import CONCEPTS, load_suite
from analyzer.tagging.media import media_options as _media_options

STRESS_FORMAT = "analyzer-stress/1"
STATE = "_stress_state.json"
POINTS = ("screen", "confirm")


def run_stress(prompts: str | Path, generations, *, out: str | Path, compare: str | Path | None = None,
               label: str | None = None, point: str = "screen", prompt_id_column: str = "prompt_id",
               text_column: str | None = None, id_column: str | None = None, embedding_column: str | None = None,
               encoder: str = DEFAULT_ENCODER, bank: str | None = None, batch_size: int | None = None,
               embedding_modality: str | None = None, hash_lists=(), media_options: dict | None = None,
               quiet: bool = False, overwrite: bool = False, seed: int = 0) -> dict:
    """Tag ``generations`` (keyed by ``prompt_id``) with the scan's taggers and write the stress run ``out``
    (module docstring); returns its summary (``stress.json``). ``compare``: another stress run to set beside it."""
    if point not in POINTS:
        raise InputError(f"expected --point screen or confirm, got {point!r}")
    suite = load_suite(prompts)
    out = Path(out)
    other = None
    if compare is not None:
        other = load_stress(compare)
        if Path(compare).resolve() == out.resolve():
            raise InputError(f"expected --compare to name another stress run than --out, got {compare} for both")
    check_out_outside_inputs(out, [str(suite.path)])
    inputs = [str(generations)] if isinstance(generations, (str, Path)) else [str(g) for g in generations]
    cfg = ScanConfig(inputs=inputs, out=str(out), encoder=encoder, bank=bank, batch_size=batch_size,
                     columns=ColumnSpec(text=text_column, id=id_column, source=prompt_id_column,
                                        embedding=embedding_column),
                     keep_embeddings=False, embedding_modality=embedding_modality, hash_lists=list(hash_lists),
                     media_options=dict(media_options or {}), quiet=quiet, seed=seed)
    try:
        reader, bank_, enc, model, hashes = prepare_scan(cfg)
    except InputError as exc:  # the prompt id is read as the row's source: name the stress option in the message
        raise InputError(str(exc).replace("--source-column", "--prompt-id-column")) from None
    state = {"format": STRESS_FORMAT, "suite_sha256": suite.sha256,
             "inputs": [{"path": str(Path(p).resolve()), "size": Path(p).stat().st_size} for p in reader.files[:10000]],
             "encoder": [enc.name, enc.fingerprint], "bank": bank_.fingerprint, "point": point, "seed": seed,
             "columns": cfg.columns.as_dict(), "hash_lists": list(cfg.hash_lists), "version": __version__}
    fingerprint = hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()
    with writer_lock(out, "stress"):
        _prepare_dir(out, overwrite)
        atomic_write(out / STATE, json.dumps({"fingerprint": fingerprint, "key": state}, indent=1))
        tagged = tag_generations(reader, enc, model, suite, out=out, point=point, batch_size=cfg.batch_size,
                                 embedding_modality=cfg.embedding_modality, media=_media_options(cfg.media_options),
                                 hashes=hashes, quiet=quiet)
        summary = _summary(suite, tagged, reader, enc, bank_, model, point=point, seed=seed, label=label or out.name,
                           fingerprint=fingerprint, prompt_id_column=prompt_id_column)
        write_escalation_package(out, matches=tagged.matches, r1_items=tagged.escalated, run_fingerprint=fingerprint,
                                 references=tagged.references)
        atomic_write(out / "per_prompt.csv", csv_text(summary["per_prompt"], PROMPT_COLUMNS))
        atomic_write(out / "per_category.csv", csv_text(summary["per_category"], CATEGORY_COLUMNS))
        atomic_write(out / "drift_generations.csv", drift_generations_csv(out / GENERATIONS_FILE))
        atomic_write(out / "figures" / "stress_rates.png", rates_chart(summary["per_category"]))
        if other is not None:
            _write_compare(out, summary, other, Path(compare))
        _write_summary(out, summary)
        atomic_write(out / "_SUCCESS", "ok\n")
    return summary


def compare_stress(run: str | Path, other: str | Path) -> dict:
    """Set the complete stress run ``other`` beside the complete stress run ``run``: writes ``run``'s compare.csv,
    figures/stress_compare.png, and rewrites its stress.json and stress.md; returns the summary."""
    run = Path(run)
    if run.resolve() == Path(other).resolve():
        raise InputError(f"expected two different stress runs, got {run} twice")
    with writer_lock(run, "stress compare"):
        summary, b = load_stress(run), load_stress(other)
        (run / "_SUCCESS").unlink()  # mid-rewrite: incomplete until the new files are in place
        _write_compare(run, summary, b, Path(other))
        _write_summary(run, summary)
        atomic_write(run / "_SUCCESS", "ok\n")
    return summary


def load_stress(run: str | Path) -> dict:
    """The summary of a complete stress run (InputError for anything else)."""
    p = Path(run)
    if not (p / STATE).is_file():
        raise InputError(f"expected a stress run directory (written by `analyzer stress`), got {run}")
    if not (p / "_SUCCESS").is_file() or not (p / "stress.json").is_file():
        raise RunIncompleteError(f"expected a complete stress run in {run}, got an incomplete one (no _SUCCESS); "
                                 "re-run its `analyzer stress` command")
    try:
        s = json.loads((p / "stress.json").read_text())
    except (ValueError, OSError) as exc:
        raise InputError(f"expected a readable {p / 'stress.json'}, got {type(exc).__name__}; re-run the stress "
                         "command") from None
    if not isinstance(s, dict) or s.get("format") != STRESS_FORMAT:
        raise InputError(f"expected a stress summary of format {STRESS_FORMAT} in {p}, got "
                         f"{s.get('format') if isinstance(s, dict) else type(s).__name__}; re-run the stress command")
    return s


def _prepare_dir(out: Path, overwrite: bool) -> None:
    entries = [p for p in out.iterdir() if p.name != LOCK_NAME]
    if not entries:
        return
    if not overwrite:
        raise InputError(f"expected --out to be a new or empty directory, got {out} which holds other files; choose "
                         "a new --out (or pass --overwrite to replace a stress run)")
    if not (out / STATE).is_file():
        raise InputError(f"expected --overwrite to replace a stress run directory, got {out} which holds other "
                         f"files (no {STATE}); choose a new --out")
    (out / "_SUCCESS").unlink(missing_ok=True)
    for p in entries:
        if p.name != "_SUCCESS":
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)


def _summary(suite, tagged, reader, enc, bank, model, *, point, seed, label, fingerprint, prompt_id_column) -> dict:
    per_prompt = prompt_rows(suite, tagged.counts)
    scored = sum(c.scored for c in tagged.counts.values())
    model_info = {"encoder": enc.name, "encoder_fingerprint": enc.fingerprint, "bank_version": bank.version,
                  "calibrated": bool(model.calibrated), "calibration_note": model.calibration_note,
                  "thresholds": {c: float(model.operating_points[c][point]["threshold"]) for c in CONCEPTS}}
    if not model.calibrated or tagged.not_assessed.get("uncalibrated_modality"):
        from analyzer.reporting import UNCALIBRATED

        model_info["calibration_warning"] = UNCALIBRATED
    cats: dict[str, int] = {}
    for c in suite.category.values():
        cats[c] = cats.get(c, 0) + 1
    return {
        "format": STRESS_FORMAT, "kind": "stress", "label": label, "run_fingerprint": fingerprint,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "analyzer_version": __version__,
        "suite": {"path": str(suite.path), "sha256": suite.sha256, "prompts": len(suite.category), "categories": cats,
                  "languages": sorted({v for v in suite.lang.values() if v})},
        "generations": {"inputs": [str(Path(f).resolve()) for f in reader.files[:100]], "rows": tagged.rows,
                        "matched": tagged.rows - tagged.unmatched, "scored": scored,
                        "failed": tagged.rows - tagged.unmatched - scored, "unmatched": tagged.unmatched,
                        "unmatched_prompt_ids": tagged.unmatched_ids, "not_assessed": tagged.not_assessed},
        "model": model_info,
        "settings": {"point": point, "seed": seed, "prompt_id_column": prompt_id_column},
        "per_category": category_rows(suite, tagged.counts),
        "per_prompt": per_prompt,
        "flagged_prompts": [r["prompt_id"] for r in per_prompt if r["drift"]],
        "escalation": {"generations": len(tagged.escalated),
                       "hash_matched": len({m["item_id"] for m in tagged.matches}), "dir": "escalation"},
    }


def _write_compare(out: Path, summary: dict, other: dict, other_path: Path) -> None:
    rows = compare_rows(summary, other)
    atomic_write(out / "compare.csv", csv_text(rows, COMPARE_COLUMNS))
    atomic_write(out / "figures" / "stress_compare.png",
                 compare_chart(rows, label_a=summary["label"], label_b=other.get("label") or other_path.name))
    summary["compare"] = compare_summary(summary, other, rows, other_path.resolve())


def _write_summary(out: Path, summary: dict) -> None:
    atomic_write(out / "stress.json", dumps(summary))
    atomic_write(out / "stress.md", render_markdown(summary))
