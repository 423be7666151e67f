"""The report for the person who signs: the executive summary first (verdict for a named dataset state, what to do
first, what was examined), coloured verdicts, the glossary, percentages beside counts, charts with empty states and
without overlapping labels, video flags decided by media evidence shown by id only, a self-contained page with no
external resource, and a real render in headless Chromium (skipped where Chromium is absent).

The runs are hand-made catalogs (tests/catalog_helpers.py): scores set by the test, synthetic vectors, no captions.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pyarrow as pa
import pytest

import catalog_helpers
from catalog_helpers import Space, item, make_store, planted_rows

SYNTH_VIDEO = {"media": "video", "duration_s": 12.0, "frames_assessed": 16, "keyframes_assessed": 4,
               "both_in_one_frame": True}  # evidence metadata only (the synthetic rows have no content at all)


def _finish(store, *, escalation: bool = True) -> dict:
    from analyzer.policy import build_recommendations
    from analyzer.reporting import write_report
    from analyzer.risk import build_risk

    con = store.connect()
    try:
        build_risk(con, store, seed=0)
        build_recommendations(con, store, bank_version="b", encoder_name="e")
        if escalation:
            from analyzer.escalation import write_run_escalation

            write_run_escalation(store.root, con, run_fingerprint="test")
    finally:
        con.close()
    return write_report(store)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """The planted catalog (6 synthetic dual-prototype items in synth.example) with its input file, so that every
    gate but the removal can pass; the synthetic R1 rows are marked as video rows decided by media evidence."""
    import pyarrow.parquet as pq

    from analyzer.ingest import file_sha256

    base = tmp_path_factory.mktemp("ux")
    rows = planted_rows(Space(seed=3))
    src = base / "input.parquet"
    pq.write_table(pa.table({"key": [r["item_id"] for r in rows]}), src)
    real = catalog_helpers.items_part

    def with_video(chunk, start):
        t = real(chunk, start)
        video = [r["source"] == "synth.example" and r["minor"] > 0.5 for r in chunk]
        t = t.set_column(t.schema.get_field_index("modality"), "modality",
                         pa.array(["video" if v else "text" for v in video]))
        return t.set_column(t.schema.get_field_index("media_evidence"), "media_evidence",
                            pa.array([json.dumps(SYNTH_VIDEO) if v else None for v in video], pa.string()))

    catalog_helpers.items_part = with_video
    try:
        store = make_store(base / "run", rows, inputs=[{"path": str(src), "resolved": str(src),
                                                        "sha256": file_sha256(src)}])
    finally:
        catalog_helpers.items_part = real
    summary = _finish(store)
    return store.root, summary


@pytest.fixture(scope="module")
def twenty(tmp_path_factory):
    """A 20-row run with nothing flagged: no source reaches the R3 minimum support."""
    space = Space(seed=1)
    rows = [item(f"i{k:02d}", f"s{k % 3}.example", 0.02, 0.02, vec=space.vec(topic=k % 4)) for k in range(20)]
    store = make_store(tmp_path_factory.mktemp("ux20") / "run", rows)
    return store.root, _finish(store, escalation=False)


def _h2(md: str) -> list[str]:
    return [ln[3:] for ln in md.splitlines() if ln.startswith("## ")]


# ---- the first screen ----------------------------------------------------------------------------------------

def test_executive_summary_comes_first_with_verdict_state_and_next_steps(planted):
    root, summary = planted
    md = (root / "report.md").read_text()
    assert _h2(md)[:2] == ["Can I train on this dataset?", "How to read this report"]
    exec_md = md[:md.index("<!-- end executive -->")]
    state = summary["dataset_state"]
    assert summary["signoff"]["strategy"] == "adult_in_minor_sources" and summary["signoff"]["items_removed"] == 36
    lines = exec_md.splitlines()
    first = lines[lines.index("## Can I train on this dataset?") + 2]
    assert first == f"**{summary['signoff']['headline']}**"
    assert first.startswith(f"**{summary['verdict'].upper()} only after removing 36 items (strategy "
                            "adult_in_minor_sources); NOT YET APPLIED"), first
    assert state["state"] == "after_removal" and not state["verified"]
    assert ("Dataset state: after applying strategy `adult_in_minor_sources` (36 items removed) -- not yet applied; "
            "policy `default") in exec_md
    steps = exec_md[exec_md.index("### What to do first"):exec_md.index("### What was examined")]
    assert "**Do not open or view the 6 R1 items**" in steps and "`RUN/escalation/`" in steps
    assert "analyzer apply RUN --strategy adult_in_minor_sources --out DIR" in steps
    assert "analyzer signoff RUN --applied DIR" in steps
    examined = exec_md[exec_md.index("### What was examined"):]
    cfg_input = json.loads(json.dumps(__import__("yaml").safe_load((root / "config.resolved.yaml").read_text())))
    sha = cfg_input["inputs"][0]["sha256"]
    assert f"`{sha}`" in examined and "input.parquet" in examined
    assert "| Coverage | **306 (100%) of 306 items assessed**" in examined
    assert "| Modalities | text 300 (98.0%), video 6 (2%) |" in examined
    assert "| Encoder | `test`" in examined and "| Policy | `default" in examined
    assert "R1 items 6 (2%)" in examined


@pytest.mark.parametrize("verdict, state, expect", [
    ("pass", {"state": "as_scanned", "strategy": "none", "items_removed": 0}, "Yes, as scanned"),
    ("pass", {"state": "after_removal", "strategy": "r1_only", "items_removed": 8}, "Not yet."),
    ("pass", {"state": "applied", "strategy": "r1_only", "items_removed": 8, "applied_dir": "/data/clean",
              "verified": True}, "Yes, the cleaned dataset at `/data/clean`"),
    ("fail", {"state": "as_scanned", "strategy": "none", "items_removed": 0}, "No. Gates that failed: `r3_groups`"),
    ("inconclusive", {"state": "as_scanned", "strategy": "none", "items_removed": 0}, "Not decided"),
])
def test_the_answer_names_the_dataset_state_and_the_verdict_colour(tmp_path, verdict, state, expect):
    from analyzer.reporting.executive import executive_section
    from analyzer.reporting.render import render_html

    gate = {"gate": "r3_groups", "passed": verdict == "pass", "status": "pass" if verdict == "pass" else verdict,
            "figure": 0.1, "limit": 0.02, "detail": "max R3 score 0.1"}
    summary = {"verdict": verdict, "dataset_state": state, "items_total": 1000, "items_assessed": 990,
               "r1_items": 0, "hash_matches": 0, "recommended_strategy": state["strategy"],
               "recommended_removals": state["items_removed"], "calibrated": True, "encoder": "e", "languages": [],
               "signoff": {"policy": "p", "policy_sha256": "a" * 64, "strategy": state["strategy"],
                           "items_removed": state["items_removed"], "gates": [gate],
                           "headline": f"{verdict.upper()} for the dataset in this state"},
               "coverage": {"items_total": 1000, "items_assessed": 990,
                            "by_reason": [{"reason": "assessed", "items": 990, "share": 0.99},
                                          {"reason": "failed", "items": 10, "share": 0.01}],
                            "by_modality": [{"modality": "image", "items": 1000, "assessed": 990, "not_assessed": 10,
                                             "assessed_share": 0.99}]}}
    md = executive_section(tmp_path, summary)
    assert expect in md and "not assessed: failed 10 (1%) |" in md
    assert md.splitlines()[3] == f"**{verdict.upper()} for the dataset in this state**"
    if state["state"] == "after_removal":
        assert "not yet applied" in md and "analyzer apply RUN --strategy r1_only" in md
    html = render_html(md, [], tmp_path)
    assert f'<section class="executive verdict-{verdict} state-{state["state"]}">' in html
    assert f'<span class="verdict verdict-{verdict}">{verdict.upper()}</span>' in html
    others = {"pass", "fail", "inconclusive"} - {verdict} - ({"fail"} if verdict == "inconclusive" else set())
    assert not any(f"executive verdict-{o}" in html for o in others)


def test_gate_rows_and_verdicts_are_coloured_in_html(planted):
    root, summary = planted
    html = (root / "report.html").read_text()
    v = summary["verdict"]
    assert f'<section class="executive verdict-{v} state-after_removal">' in html
    assert html.index('<section class="executive') < html.index('id="s-how-to-read-this-report"')
    n_pass = sum(1 for g in summary["signoff"]["gates"] if g["passed"])
    assert html.count('<span class="verdict verdict-pass">PASS</span>') >= n_pass
    for colour in ("#1e7e34", "#c0392b", "#b7791f"):  # green, red, amber
        assert colour in html


def test_glossary_explains_every_term_in_plain_words(planted):
    root, _ = planted
    md = (root / "report.md").read_text()
    gloss = md[md.index("## How to read this report"):].split("\n## ")[0]
    for term in ("PASS / FAIL / INCONCLUSIVE", "Dataset state", "Screen / confirm", "R1 (item)",
                 "R2 (neighbourhood)", "R3 (group)", "R4 (dataset)", "Assessed / not assessed", "Escalation package"):
        assert f"- **{term}**: " in gloss


def test_percentages_sit_beside_counts():
    from analyzer.reporting.render import count_pct, pct

    assert [pct(0, 20), pct(20, 20), pct(1, 3), pct(6, 306), pct(1, 10_000_000), pct(9_999_999, 10_000_000),
            pct(5, 0)] == ["0%", "100%", "33.3%", "2%", "<0.01%", ">99.99%", "n/a"]
    assert count_pct(1_234_567, 10_000_000) == "1,234,567 (12.3%)"


def test_report_tables_carry_percentages(planted):
    root, summary = planted
    md = (root / "report.md").read_text()
    n = summary["items_scanned"]
    minor = summary["concepts"]["minor"]["screen"]
    assert f"| minor | {minor} ({100 * minor / n:.1f}%) |" in md
    assert "| adult_in_minor_sources | 36 (11.8%) | yes |" in md


# ---- media evidence, coverage by modality ----------------------------------------------------------------------

def test_video_flags_decided_by_media_evidence_are_listed_by_id_only(planted):
    root, summary = planted
    md = (root / "report.md").read_text()
    sec = md[md.index("### Flags decided by media evidence"):].split("\n## ")[0]
    assert "6 of the 6 R1 items were decided by the media itself" in sec and "video 6" in sec
    ids = [r["item_id"] for r in planted_rows(Space(seed=3)) if r["source"] == "synth.example" and r["minor"] > 0.5]
    for i in ids:
        assert f"| {i} | video | 16 | yes |" in sec
    assert summary["media_decided"] == {"r1_items": 6, "by_modality": {"video": 6}}
    cov = md[md.index("### By modality"):].split("\n### ")[0]
    assert "| video | 6 (2%) | 6 (100%) | 0 (0%) |" in cov
    assert "12.0" not in sec and "keyframes" not in sec  # no evidence details beyond the counts


# ---- charts ------------------------------------------------------------------------------------------------

def test_twenty_row_run_shows_empty_states_not_empty_axes(twenty):
    from PIL import Image

    root, summary = twenty
    md = (root / "report.md").read_text()
    assert "No source has the minimum support of 10 items: no source is ranked." in md
    with Image.open(root / "figures" / "sources.png") as img:  # the empty state is one short strip of text
        assert img.height < 200
    assert "No R1 item." in md and "## Can I train on this dataset?" in md


def test_empty_state_when_nothing_was_scored(tmp_path):
    from PIL import Image

    from analyzer.reporting import figures

    rows = [(c, 0, 0, None, None, None, 0, None, None, None) for c in ("adult_sexual", "minor")]
    path = figures.prevalence(None, tmp_path, rows)
    with Image.open(path) as img:
        assert img.height < 200


def _overlaps(fig) -> list[tuple[str, str]]:
    """Pairs of y tick labels, or of texts, whose drawn boxes intersect."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    bad = []
    for ax in fig.axes:
        labels = [t for t in ax.get_yticklabels() if t.get_text()]
        boxes = [t.get_window_extent(renderer) for t in labels]
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                if boxes[i].overlaps(boxes[j]):
                    bad.append((labels[i].get_text(), labels[j].get_text()))
    return bad


def test_labels_do_not_overlap_at_ten_million_rows(tmp_path, monkeypatch, planted):
    from analyzer.reporting import figures

    seen, real = [], figures._save

    def check(fig, path, **kw):
        seen.append((path.name, _overlaps(fig)))
        return real(fig, path, **kw)

    monkeypatch.setattr(figures, "_save", check)
    rows = [(f"a-very-long-source-domain-name-number-{k}.example.com", 10_000_000 // (k + 1), 0.1, 0.05, 0.15,
             0.2, 0.1, 0.3, 0.5) for k in range(15)]
    figures.rate_bars(rows, tmp_path / "sources.png", title="t", xlabel="x",
                      labels=[f"{figures.short(r[0])} (n={r[1]:,})" for r in rows])
    root, _ = planted
    con = __import__("analyzer.store.catalog", fromlist=["connect"]).connect(root, read_only=True)
    try:
        figures.tradeoff(con, tmp_path, r3_limit=0.02, r4_limit=0.02)
    finally:
        con.close()
    assert [name for name, _ in seen] == ["sources.png", "tradeoff.png"]
    assert all(not bad for _, bad in seen), seen


# ---- self-contained, no flagged content ---------------------------------------------------------------------

def test_html_has_no_external_resource_or_script(planted, twenty):
    for root, _ in (planted, twenty):
        html = (root / "report.html").read_text()
        assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/|<script|<link|@import|url\(", html, re.I)
        assert all(s.startswith("data:image/png;base64,") for s in re.findall(r'src="([^"]*)"', html))
        assert all(h.startswith("#") for h in re.findall(r'href="([^"]*)"', html))
        assert html.count("<img") == len(list((root / "figures").glob("*.png")))


def test_flagged_items_appear_by_id_and_scores_only(planted):
    root, _ = planted
    md = (root / "report.md").read_text()
    r1 = md[md.index("## R1 items"):].split("\n## ")[0]
    assert r1.splitlines()[4] == "| item_id | source | minor | adult_sexual | reasons |"
    assert "urlsha256" not in md and "http" not in md


# ---- a real browser ------------------------------------------------------------------------------------------

def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _render(page: Path, shot: Path, profile: Path) -> list[str]:
    """Screenshot ``page`` in headless Chromium (network names unresolvable); the console messages it logged."""
    proc = subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--mute-audio",
         f"--user-data-dir={profile}", "--window-size=1280,900", "--host-resolver-rules=MAP * ~NOTFOUND",
         "--enable-logging=stderr", "--v=1", f"--screenshot={shot}", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [ln for ln in proc.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]


@pytest.mark.skipif(_chromium() is None, reason="headless Chromium is not installed (Debian package chromium)")
def test_report_renders_in_headless_chromium_without_console_errors(planted, tmp_path):
    from PIL import Image

    root, summary = planted
    control = tmp_path / "control.html"  # the console check itself: a page that does log an error
    control.write_text("<!doctype html><html><body><p>x</p><script>throw new Error('control-error')</script>"
                       "</body></html>")
    logged = _render(control, tmp_path / "control.png", tmp_path / "profile0")
    assert any("control-error" in ln for ln in logged), "Chromium's console log was not captured"

    shot = tmp_path / "report.png"
    assert _render(root / "report.html", shot, tmp_path / "profile1") == []
    with Image.open(shot) as img:
        rgb = img.convert("RGB")
        assert rgb.size == (1280, 900)
        colours = rgb.getcolors(maxcolors=1 << 20)
    assert len(colours) > 50  # text, tables and the verdict banner, not a blank page
    badge = {"pass": (30, 126, 52), "fail": (192, 57, 43), "inconclusive": (183, 121, 31)}[summary["verdict"]]
    assert dict((c, n) for n, c in colours).get(badge, 0) > 500  # the verdict badge is on the first screen


def test_columns_row_says_which_column_each_role_read():
    from analyzer.reporting.executive import columns_row

    given = {"columns": {"text": None, "id": "key", "url": None, "source": None, "embedding": "vec"}}
    assert columns_row(given) == ("given: id: `key`, embedding: `vec`; auto-detected from each file's header: text, url, "
                               "source")
    resolved = {"columns_resolved": {"a.parquet": {"text": "caption", "id": None, "url": "URL"},
                                     "b.parquet": {"text": "caption", "url": "URL"}}}
    assert columns_row(resolved) == "text: `caption`, url: `URL`"


def test_signoff_history_is_shown_newest_first(planted, tmp_path):
    import yaml

    from analyzer.policy.history import append_signoff, signoff_record
    from analyzer.reporting import write_report
    from analyzer.store.rundir import RunStore

    root, summary = planted
    run = tmp_path / "run"
    shutil.copytree(root, run)
    config = yaml.safe_load((run / "config.resolved.yaml").read_text())
    for who in ("alice", "bob"):
        append_signoff(run, signoff_record(summary["signoff"], signer=who, root=run, config=config))
    again = write_report(RunStore(run))
    md = (run / "report.md").read_text()
    assert again["signoff_history"]["count"] == 2 and again["signoff_history"]["latest"]["signer"] == "bob"
    sec = md[md.index("### Sign-off history"):].split("\n## ")[0]
    assert "2 sign-offs recorded in `RUN/signoffs.jsonl`, newest first." in sec
    assert sec.index("| bob |") < sec.index("| alice |")
    assert "not yet applied" in sec
    exec_md = md[:md.index("<!-- end executive -->")]
    assert f"| Sign-off history | 2 recorded; latest {again['signoff_history']['latest']['time']} by bob: " in exec_md
