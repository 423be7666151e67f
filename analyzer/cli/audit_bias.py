"""`analyzer audit-bias`: minor-tag rate on adult descriptions per group, with Wilson intervals."""
from __future__ import annotations

import json

from analyzer.encoders import DEFAULT_ENCODER


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "audit-bias", help="minor-tag rate on adult descriptions per group (ethnicity, body, dress, age wording)",
        description="Score the project's bias-audit set of adult descriptions (or --data FILE with columns "
                    "text, dimension, group) and report the minor-tag rate per group at screen and confirm, "
                    "with Wilson 95% intervals. Targets: <= 2% overall, <= 2 points between groups.")
    p.add_argument("--encoder", default=DEFAULT_ENCODER, help=f"encoder name (default: {DEFAULT_ENCODER})")
    p.add_argument("--bank", help="concept bank YAML (default: the packaged bank)")
    p.add_argument("--data", help="CSV of adult descriptions (default: the packaged bias_audit.csv)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from analyzer.concepts import fit_concept_model, load_bank
    from analyzer.concepts.bias import format_bias_audit, run_bias_audit
    from analyzer.encoders import get_encoder

    bank = load_bank(args.bank)
    model = fit_concept_model(bank, get_encoder(args.encoder), seed=args.seed)
    res = run_bias_audit(model, args.data)
    if args.json:
        for v in res["points"].values():
            v.pop("flagged_examples", None)
        print(json.dumps(res))
    else:
        print(format_bias_audit(res))
    return 0
