"""`analyzer.report` and `analyzer.signoff` stay the API functions after the reporting package is imported (the
package was once named `analyzer.report`, and importing it replaced the function: the second call raised
TypeError), and the report never drops a section silently."""
from __future__ import annotations

import shutil

import pytest


@pytest.fixture
def run_copy(demo_run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(demo_run.path, dst)
    return dst


def test_report_and_signoff_twice_after_importing_the_reporting_package(run_copy):
    import analyzer
    import analyzer.reporting  # noqa: F401 - what the notebooks import before drawing figures

    for _ in range(2):
        html = analyzer.report(run_copy)
        assert html.name == "report.html" and html.is_file()
        assert "## Sign-off" in (run_copy / "report.md").read_text()
    verdicts = [analyzer.signoff(run_copy)["verdict"] for _ in range(2)]
    assert verdicts[0] == verdicts[1] and verdicts[0] in ("pass", "fail", "inconclusive")
    assert callable(analyzer.report) and callable(analyzer.signoff)


def test_a_failing_report_section_stops_the_report(run_copy, monkeypatch):
    import analyzer
    import analyzer.reporting

    def broken(*args, **kwargs):
        raise ImportError("simulated: a section's module cannot be imported")

    monkeypatch.setattr(analyzer.reporting, "risk_sections", broken)
    before = (run_copy / "report.md").read_text()
    with pytest.raises(ImportError, match="simulated"):
        analyzer.report(run_copy)
    assert (run_copy / "report.md").read_text() == before  # no report without its sections


def test_demo_report_first_screen_answers_can_i_train_and_what_first(run_copy):
    """The demo's PASS holds only after a removal nobody has applied: the first screen says so, names the removal
    and the escalation package, and shows no caption (the executive block holds counts, ids and hashes only)."""
    import json

    import analyzer
    import pyarrow.parquet as pq
    import yaml

    from conftest import SAMPLES

    analyzer.report(run_copy)
    summary = json.loads((run_copy / "summary.json").read_text())
    md = (run_copy / "report.md").read_text()
    first = md[:md.index("<!-- end executive -->")]
    assert first.index("## Can I train on this dataset?") < first.index("### What to do first")
    assert md.index("<!-- end executive -->") < md.index("## How to read this report") < md.index("## Concepts")
    state, strategy = summary["dataset_state"], summary["signoff"]["strategy"]
    assert f"**{summary['signoff']['headline']}**" in first
    if state["state"] == "after_removal":
        assert "-- not yet applied" in first and f"analyzer apply RUN --strategy {strategy} --out DIR" in first
        assert summary["verdict"] != "pass" or first.count("Not yet.") == 1
    if summary["r1_items"]:
        assert f"**Do not open or view the {summary['r1_items']:,} R1 items**" in first and "`RUN/escalation/`" in first
    sha = yaml.safe_load((run_copy / "config.resolved.yaml").read_text())["inputs"][0]["sha256"]
    assert f"`{sha}`" in first
    captions = [r["TEXT"] for r in pq.read_table(SAMPLES / "laion_sample.parquet", columns=["TEXT"]).to_pylist()
                if r["TEXT"] and len(r["TEXT"]) > 20]
    html = (run_copy / "report.html").read_text()
    assert captions and not any(c in md or c in html for c in captions)  # no caption at all, flagged or not
