"""`analyzer evaluate LABELS.csv`: measure the taggers on a labelled CSV (one 0/1 column per concept id)."""
from __future__ import annotations

import json

from analyzer.encoders import DEFAULT_ENCODER


def register(subparsers) -> None:
    e = subparsers.add_parser("evaluate", help="measure the taggers on a labelled CSV",
                              description="LABELS.csv: a text column (--text-column, default text) and one 0/1 "
                                          "column per concept id (minor, adult_sexual, ...). Prints per concept the "
                                          "AUROC and precision/recall at the screen and confirm points with 95% "
                                          "intervals; --json prints the same as JSON.")
    e.add_argument("labels")
    e.add_argument("--text-column", default="text")
    e.add_argument("--encoder", default=DEFAULT_ENCODER, help=f"encoder name (default: {DEFAULT_ENCODER})")
    e.add_argument("--bank")
    e.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% intervals")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=run)


def run(a) -> int:
    from analyzer import api

    res = api.evaluate(a.labels, text_column=a.text_column, encoder=a.encoder, bank=a.bank,
                       bootstrap=a.bootstrap)
    if a.json:
        print(json.dumps(res))
        return 0
    for c, m in res.items():
        print(f"{c}: n={m['n']} positives={m['positives']} auroc={m['auroc']:.4f}")
        for point in ("screen", "confirm"):
            x = m[point]
            ci = ""
            if "precision_ci" in x:
                ci = (f"  P95%CI [{x['precision_ci'][0]:.3f}, {x['precision_ci'][1]:.3f}]"
                      f"  R95%CI [{x['recall_ci'][0]:.3f}, {x['recall_ci'][1]:.3f}]")
            print(f"  {point:8s} threshold={x['threshold']:.4f} precision={x['precision']:.4f} "
                  f"recall={x['recall']:.4f} f1={x['f1']:.4f}{ci}")
    return 0
