"""`analyzer apply RUN --strategy NAME --out DIR`: write the dataset minus a strategy's removals."""
from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "apply", help="write the dataset minus a removal strategy's items, in the input's format",
        description="Stream the run's original input files (parquet, csv, tsv, jsonl), drop the rows whose "
                    "item_id the strategy removes (matched by id), write the rest to DIR in the same format, and "
                    "prove input rows = kept + removed by id in DIR/apply_report.json. The input is never "
                    "modified. Exit 2 when the run does not reconcile.")
    p.add_argument("run", help="run directory")
    p.add_argument("--strategy", required=True,
                   help="r1_only, adult_in_minor_sources, adult_in_minor_groups or all_adult_sexual")
    p.add_argument("--out", required=True, help="new or empty output directory")
    p.set_defaults(func=run)


def run(args) -> int:
    from analyzer import api

    rep = api.apply(args.run, strategy=args.strategy, out=args.out)
    print(f"kept {rep['kept_rows']} of {rep['input_rows']} rows, removed {rep['removed_rows']} "
          f"(strategy {rep['strategy']}); reconciled by id: {rep['reconciled']}")
    for f in rep["files"]:
        print(f"  {f['output']}: {f['kept_rows']} rows ({f['format']})")
    print(f"report: {args.out.rstrip('/')}/apply_report.json")
    return 0
