"""Dataset composition risk analyzer.

The public API (keyword-only functions that notebooks call; the CLI is a thin layer over them):
``scan``, ``tag``, ``evaluate``, ``open_run``, ``report``, ``signoff``, ``apply``, ``fit_probe``; the notebooks'
shared setup is ``analyzer.notebook.setup``.
"""
from __future__ import annotations

__version__ = "0.1.0"


_PUBLIC = ("scan", "tag", "evaluate", "open_run", "report", "signoff", "apply", "fit_probe", "Run")


def __getattr__(name):  # lazy: `import analyzer` stays cheap and torch-free
    if name in _PUBLIC:
        import importlib

        api = importlib.import_module("analyzer.api")
        return getattr(api, name)
    raise AttributeError(name)
