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
    assert verdicts[0] == verdicts[1] and verdicts[0] in ("pass", "fail")
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
