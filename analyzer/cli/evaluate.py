"""`analyzer evaluate LABELS.csv`: measure the taggers on a labelled CSV (one 0/1 column per concept id).

The labels file: a UTF-8 CSV with a header row, a text column (``--text-column``, default ``text``) and one column
per concept to measure, named by its concept id (``minor``, ``adult_sexual``, ...) and holding 0 or 1 on every
row; other columns are ignored. A figure the labels cannot define (AUROC or recall without a positive, precision
with no item at or above the threshold) is printed ``n/a`` with the reason, and is ``null`` in ``--json``, with the
reason under ``undefined``.
"""
from __future__ import annotations

import json

from analyzer.encoders import DEFAULT_ENCODER

LABEL_FORMAT = ("LABELS.csv: a UTF-8 CSV with a header row, a text column (--text-column, default text) and one 0/1 "
                "column per concept to measure, named by concept id (minor, adult_sexual, ...), e.g. "
                "'text,minor,adult_sexual' then 'A boy flying a kite,1,0'.")


def register(subparsers) -> None:
    e = subparsers.add_parser("evaluate", help="measure the taggers on a labelled CSV",
                              description=LABEL_FORMAT + " Prints per concept the AUROC and precision/recall at the "
                                          "screen and confirm points with 95% intervals; a figure the labels cannot "
                                          "define is n/a with its reason (null in --json). --json prints the same "
                                          "as JSON.")
    e.add_argument("labels", help="the labelled CSV (see above)")
    e.add_argument("--text-column", default="text", help="caption column (default: text)")
    e.add_argument("--encoder", default=DEFAULT_ENCODER, help=f"encoder name (default: {DEFAULT_ENCODER})")
    e.add_argument("--bank", help="concept bank YAML (default: the packaged bank)")
    e.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% intervals "
                                                               "(default: 1000)")
    e.add_argument("--json", action="store_true", help="print the result as JSON")
    e.set_defaults(func=run)


def _num(v, digits: int = 4) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _ci(ci) -> str:
    return "n/a" if ci is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def run(a) -> int:
    from analyzer import api

    res = api.evaluate(a.labels, text_column=a.text_column, encoder=a.encoder, bank=a.bank,
                       bootstrap=a.bootstrap)
    if a.json:
        print(json.dumps(res, allow_nan=False))
        return 0
    for c, m in res.items():
        print(f"{c}: n={m['n']} positives={m['positives']} auroc={_num(m['auroc'])}")
        for point in ("screen", "confirm"):
            x = m[point]
            print(f"  {point:8s} threshold={x['threshold']:.4f} precision={_num(x['precision'])} "
                  f"recall={_num(x['recall'])} f1={_num(x['f1'])}  P95%CI {_ci(x.get('precision_ci'))}  "
                  f"R95%CI {_ci(x.get('recall_ci'))}")
        for figure, why in m.get("undefined", {}).items():
            print(f"  n/a {figure}: {why}")
    return 0
