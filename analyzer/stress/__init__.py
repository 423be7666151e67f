"""Model-output stress tests: a prompt suite and a model's generations, tagged by the scan's own taggers; rates
of ``minor``, ``adult_sexual`` and both per prompt and per category with Wilson intervals, the prompts whose
generations drift from what was asked, two runs side by side with Newcombe intervals (docs/stress.md)."""
from __future__ import annotations

from analyzer.stress.run import compare_stress, load_stress, run_stress
from analyzer.stress.suite import STARTER_SUITE, load_suite

__all__ = ["STARTER_SUITE", "compare_stress", "load_stress", "load_suite", "run_stress"]
