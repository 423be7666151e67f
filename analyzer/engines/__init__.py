"""Engines run the parts stage (ingest -> embed -> tag -> parts, and hash matching); every stage after the parts
is DuckDB over the parquet parts and does not know which engine ran.

``get_engine(name, options)`` returns an :class:`Engine`: ``local`` (this process, analyzer/engines/local.py) or
``ray`` (Ray Data, analyzer/engines/ray_data.py). Both call the same unit of work
(:func:`analyzer.tagging.batch.tag_batch`) and write identical parts.
"""
from __future__ import annotations

from typing import Protocol

from analyzer.errors import InputError


class Engine(Protocol):
    name: str

    def run_parts(self, cfg, reader, encoder, model, store, hashes=None) -> int:
        """Write every part of the scan into ``store`` (skipping parts whose marker exists) and the hash-match
        parts when ``hashes`` is given; returns the number of input rows."""
        ...


ENGINES = ("local", "ray")


def get_engine(name: str, options: dict | None = None) -> Engine:
    """The engine called ``name``; ``options`` are checked here (bad ones are InputErrors before any work)."""
    if name == "local":
        if options:
            raise InputError(f"expected no engine options with the local engine, got {', '.join(sorted(options))}; "
                             "pass --engine ray or drop the options")
        from analyzer.engines.local import LocalEngine

        return LocalEngine()
    if name == "ray":
        from analyzer.engines.ray_data import RayEngine

        return RayEngine(options or {})
    raise InputError(f"expected --engine {' or '.join(ENGINES)}, got {name!r}")
