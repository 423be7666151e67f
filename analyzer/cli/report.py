"""`analyzer report RUN`: re-render report.html, report.md, figures and summary.json of a run; with --model-card, also
RUN/model_card.md (the child-safety part of a dataset or model card; --stress adds a stress run's figures)."""
from __future__ import annotations


def register(subparsers) -> None:
    r = subparsers.add_parser("report", help="re-render the report of a run")
    r.add_argument("run")
    r.add_argument("--policy")
    r.add_argument("--model-card", action="store_true",
                   help="also write RUN/model_card.md, the child-safety section of a dataset or model card")
    r.add_argument("--stress", metavar="STRESS_RUN", help="with --model-card: a stress run (`analyzer stress`) to cite")
    r.set_defaults(func=run)


def run(a) -> int:
    from analyzer import api
    from analyzer.errors import InputError

    if a.stress and not a.model_card:
        raise InputError("expected --stress together with --model-card, got --stress alone; add --model-card")
    stress = None
    if a.stress:
        from analyzer.stress import load_stress

        stress = load_stress(a.stress)  # checked before anything is written
    print(f"report: {api.report(a.run, policy=a.policy)}")
    if a.model_card:
        from analyzer.reporting.model_card import write_model_card
        from analyzer.store.lock import writer_lock
        from analyzer.store.rundir import open_store

        with writer_lock(open_store(a.run).root, "report --model-card"):
            print(f"model card: {write_model_card(open_store(a.run).root, stress=stress)}")
    return 0
