"""Shared fixtures. One scan of the demo sample per test session (the MiniLM model is real)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

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
