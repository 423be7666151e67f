"""`analyzer signoff RUN --policy FILE`: evaluate the sign-off gates and record the sign-off; exit 0 pass, 1 fail,
3 inconclusive, 2 bad input."""
from __future__ import annotations

import json


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "signoff", help="evaluate a sign-off policy on a run and record it: exit 0 pass, 1 fail, 3 inconclusive",
        description="Evaluate the gates of a policy YAML (zero R1 after removal, zero hash matches, R3 and R4 "
                    "limits, coverage, calibration, fingerprints) on a complete run. Prints each gate with its "
                    "status (PASS, FAIL, INCONCLUSIVE) and figure, and the verdict with the dataset state it holds "
                    "for: as scanned, after removing a strategy's items (not yet applied), or the cleaned dataset "
                    "written by `analyzer apply` (--applied DIR, verified by id and sha256). Appends a record to "
                    "RUN/signoffs.jsonl (UTC time, signer, policy sha256, run fingerprint, dataset state, verdict, "
                    "every gate), writes RUN/signoff.json, updates summary.json and the report. Exit 0 on pass, 1 on "
                    "fail, 3 on inconclusive (the data cannot say: coverage under the policy's floor, uncalibrated "
                    "thresholds, too little data for R3), 2 on bad input (malformed policy, incomplete run).")
    p.add_argument("run", help="run directory")
    p.add_argument("--policy", help="policy YAML (default: the packaged analyzer/policies/default.yaml)")
    p.add_argument("--signer", help="who signs (default: the OS user)")
    p.add_argument("--applied", metavar="DIR",
                   help="the --out directory of `analyzer apply`: sign off the cleaned dataset written there")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from analyzer import api
    from analyzer.policy.gates import exit_code, format_signoff

    res = api.signoff(args.run, policy=args.policy, signer=args.signer, applied=args.applied)
    print(json.dumps(res, default=str) if args.json else format_signoff(res))
    return exit_code(res["verdict"])
