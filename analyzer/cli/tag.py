"""`analyzer tag INPUT... --out FILE.parquet`: per-item concept scores and flags, in input order."""
from __future__ import annotations

from analyzer.cli.dataset_options import add_dataset_options, dataset_kwargs


def register(subparsers) -> None:
    t = subparsers.add_parser("tag", help="write per-item concept scores and flags to a parquet file")
    t.add_argument("inputs", nargs="+")
    t.add_argument("--out", required=True, help="output FILE.parquet")
    t.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    add_dataset_options(t)
    t.set_defaults(func=run)


def run(a) -> int:
    from analyzer import api

    print(api.tag(a.inputs, out=a.out, overwrite=a.overwrite, **dataset_kwargs(a)))
    return 0
