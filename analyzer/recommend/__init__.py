"""Recommendations: mandatory R1 removals and removal strategies with their residual risk (strategies.py), and
``apply``, the writer of the dataset minus a strategy's removals (apply.py). The sign-off policy chooses which
strategy is recommended (``analyzer.policy.build_recommendations`` runs both steps)."""
from analyzer.recommend.strategies import MIN_MINOR, STRATEGY_DOC, build_strategies, mark_recommended

__all__ = ["MIN_MINOR", "STRATEGY_DOC", "build_strategies", "mark_recommended"]
