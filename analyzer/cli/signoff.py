"""`analyzer signoff RUN --policy FILE`: evaluate the sign-off gates; exit 0 pass, 1 fail, 2 bad input."""
from __future__ import annotations

import json


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "signoff", help="evaluate a sign-off policy on a run: each gate with its figure; exit 0 pass, 1 fail",
        description="Evaluate the gates of a policy YAML (zero R1 after removal, zero hash matches, R3 and R4 "
                    "limits, scan coverage, fingerprints) on a complete run. Prints each gate with its figure and "
                    "the verdict, writes RUN/signoff.json, updates summary.json (verdict) and the report. "
                    "Exit 0 on pass, 1 on fail, 2 on bad input (malformed policy, incomplete run).")
    p.add_argument("run", help="run directory")
    p.add_argument("--policy", help="policy YAML (default: the packaged analyzer/policies/default.yaml)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from analyzer import api
    from analyzer.policy.gates import format_signoff

    res = api.signoff(args.run, policy=args.policy)
    print(json.dumps(res, default=str) if args.json else format_signoff(res))
    return 0 if res["verdict"] == "pass" else 1
