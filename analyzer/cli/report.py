"""`analyzer report RUN`: re-render report.html, report.md, figures and summary.json of a run."""
from __future__ import annotations


def register(subparsers) -> None:
    r = subparsers.add_parser("report", help="re-render the report of a run")
    r.add_argument("run")
    r.add_argument("--policy")
    r.set_defaults(func=run)


def run(a) -> int:
    from analyzer import api

    print(f"report: {api.report(a.run, policy=a.policy)}")
    return 0
