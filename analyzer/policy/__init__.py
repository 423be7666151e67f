"""Sign-off: a policy file (YAML) of gates evaluated on a run (gates.py), the dataset state the verdict holds for
(state.py), the sign-off history RUN/signoffs.jsonl (history.py) and the strategy the policy recommends."""
from analyzer.policy.gates import (EXIT_CODES, build_recommendations, choose_strategy, evaluate_policy, exit_code,
                                   format_signoff, remember_sha256)
from analyzer.policy.policy_file import GATE_DEFAULTS, default_policy_path, load_policy, parse_policy

__all__ = ["EXIT_CODES", "GATE_DEFAULTS", "build_recommendations", "choose_strategy", "default_policy_path",
           "evaluate_policy", "exit_code", "format_signoff", "load_policy", "parse_policy", "remember_sha256"]
