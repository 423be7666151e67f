"""Sign-off: a policy file (YAML) of gates, evaluated on a run, and the strategy it recommends (gates.py)."""
from analyzer.policy.gates import (GATE_DEFAULTS, build_recommendations, choose_strategy, default_policy_path,
                                   evaluate_policy, format_signoff, load_policy, parse_policy, remember_sha256)

__all__ = ["GATE_DEFAULTS", "build_recommendations", "choose_strategy", "default_policy_path", "evaluate_policy",
           "format_signoff", "load_policy", "parse_policy", "remember_sha256"]
