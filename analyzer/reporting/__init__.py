"""The sign-off report: report.md, a self-contained report.html (figures embedded), summary.json, signoff.json.

Modules: ``summary`` (summary.json), ``executive`` (the first screen: the verdict for a dataset state, what was
examined, what to do first), ``glossary``, ``coverage`` (assessed / not assessed by reason, modality, source, file),
``risk_sections`` (sign-off, residual risk per strategy, R4, R2, R3), ``languages``, ``provenance``,
``model_card``, ``figures`` (matplotlib PNGs), ``render`` (Markdown and HTML).
Nothing flagged is ever shown: R1 and adult-sexual items appear by id, source and scores only.

Writing (scan, ``report``, ``signoff``; each holds the run's writer lock): every file is first written completely
into a staging directory ``RUN/.report.<pid>.tmp/`` (and flushed to disk); only then are they renamed into place,
figures first, then signoff.json, summary.json, report.md, report.html. A failure while preparing (a full disk, a
bad policy, a kill) leaves the previous files untouched and the run as complete as it was. While the renames run,
the run's files are a mixture of two reports, so a complete run gives up ``_SUCCESS`` for that moment: it is
removed before the first rename and renamed back after the last. A kill between the two leaves a run without
``_SUCCESS``, which readers refuse until the same ``analyzer scan`` command is run again (it resumes from the parts
and writes everything after them anew).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from analyzer.reporting import figures
from analyzer.reporting.provenance import provenance_section
from analyzer.reporting.render import render_html, render_markdown
from analyzer.reporting.risk_sections import risk_sections
from analyzer.reporting.summary import build_summary, dumps
from analyzer.store.rundir import RunStore

UNCALIBRATED = ("WARNING: thresholds are UNCALIBRATED for this encoder/modality (no labelled data in this "
                "space); treat counts as indicative only and calibrate with `analyzer probe fit`.")
STAGE_PREFIX = ".report."
REPORT_FILES = ("signoff.json", "summary.json", "report.md", "report.html")  # renamed in this order, after figures


def write_report(store: RunStore, *, policy: str | None = None) -> dict:
    for old in store.root.glob(f"{STAGE_PREFIX}*.tmp"):  # left by a writer killed while preparing
        shutil.rmtree(old, ignore_errors=True)
    stage = store.root / f"{STAGE_PREFIX}{os.getpid()}.tmp"
    stage.mkdir(mode=0o700)
    try:
        summary, texts, figs = _prepare(store, stage, policy)
        for name, text in texts.items():
            _write_synced(stage / name, text.encode("utf-8"))
        for f in figs:
            _sync(f)
        _publish(store, stage, figs)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return summary


def _prepare(store: RunStore, stage: Path, policy) -> tuple[dict, dict, list[Path]]:
    """The summary, the text of each report file and the figure files (written under ``stage``)."""
    model = json.loads((store.root / "model.json").read_text())
    figdir = stage / "figures"
    con = store.connect()
    try:
        summary = build_summary(con)
        summary["calibration_note"] = model.get("calibration_note", "")
        if not summary["calibrated"]:
            summary["calibration_warning"] = UNCALIBRATED
        figs = [figures.prevalence(con, figdir, figures.prevalence_rows(summary)),
                figures.score_distributions(con, figdir, model.get("operating_points", {})),
                figures.sources(con, figdir)]
        sections = risk_sections(con, store, summary, policy, figdir=figdir)  # sign-off, residual risk, R4, R2, R3
        figs += sections["figures"]
        provenance = provenance_section(con, summary)  # punsafe, pwatermark, C2PA: "" when no item carries them
        sections["markdown"] += "\n\n" + provenance if provenance else ""
        r1_rows = con.execute(
            "SELECT item_id, source, round(minor_score, 3), round(adult_sexual_score, 3), reasons FROM item_risk_flagged "
            "WHERE r1 ORDER BY item_id LIMIT 50").fetchall()
    finally:
        con.close()
    md = render_markdown(summary, r1_rows, figs, stage, sections["markdown"])  # figure links: figures/NAME.png
    texts = {"signoff.json": json.dumps(summary["signoff"], indent=2, default=str), "summary.json": dumps(summary),
             "report.md": md, "report.html": render_html(md, figs, stage)}
    return summary, texts, figs


def _publish(store: RunStore, stage: Path, figs: list[Path]) -> None:
    """Rename the staged files into the run (renames need no space). A complete run is without ``_SUCCESS`` only
    between the first and the last rename (module docstring)."""
    complete = store.success.exists()
    if complete:
        _write_synced(stage / "_SUCCESS", store.success.read_bytes())
        store.success.unlink()
    figdir = store.root / "figures"
    figdir.mkdir(mode=0o700, exist_ok=True)
    for f in figs:
        os.replace(f, figdir / f.name)
    for name in REPORT_FILES:
        os.replace(stage / name, store.root / name)
    if complete:
        os.replace(stage / "_SUCCESS", store.success)


def _write_synced(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
