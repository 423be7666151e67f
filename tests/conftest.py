"""Shared fixtures. One scan of the demo sample per test session (the MiniLM model is real).

The suite's cache directory (fitted concept models, the compiled kernel, matplotlib's font cache):
``$ANALYZER_CACHE_DIR`` when set (the Makefile may point it at a directory kept between runs), else one temporary
directory for the session, removed at its end. Tests and the subprocesses they start read it from the environment,
so models are fitted once per session, not per test; nothing is written under the home directory.
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if not os.environ.get("ANALYZER_CACHE_DIR"):
    _SESSION_CACHE = tempfile.mkdtemp(prefix="analyzer-test-cache-")
    atexit.register(shutil.rmtree, _SESSION_CACHE, True)
    os.environ["ANALYZER_CACHE_DIR"] = _SESSION_CACHE

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "data-samples"
SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """A complete run of data-samples/laion_sample.parquet (read-only for tests: copy before changing)."""
    import analyzer

    out = tmp_path_factory.mktemp("demo") / "run"
    run = analyzer.scan(SAMPLES / "laion_sample.parquet", out=out, embedding_column="embedding",
                        embedding_modality="text", quiet=True)
    yield run
    run.close()


@pytest.fixture(scope="session")
def session_cache_dir() -> Path:
    """The suite's cache directory (see the module docstring)."""
    return Path(os.environ["ANALYZER_CACHE_DIR"])
