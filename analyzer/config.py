"""Settings that more than one stage reads, validated in one place ("expected X, got Y; how to fix").

- ``ColumnSpec``: the column options (``--text-column`` ...).
- ``ScanConfig``: every setting of a scan; ``ScanConfig.check()`` validates the plain values (the pipeline
  checks the options that need their stage: the engine's, the index's, the encoder name, the bank, the policy).
- ``cache_dir()``: where fitted concept models (and numba's compiled kernel) may be cached. Only an explicit
  ``--cache-dir`` / ``cache_dir=`` or the ``ANALYZER_CACHE_DIR`` variable enables a cache; without one nothing is
  written outside the run directory (models are fitted in memory, the kernel compiled in process).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from analyzer.errors import InputError

EMBEDDING_MODALITIES = ("text", "image")


@dataclass(frozen=True)
class ColumnSpec:
    """Column options (``--text-column`` ...). ``None`` means auto-detect (embedding: none)."""

    text: str | None = None
    id: str | None = None
    url: str | None = None
    source: str | None = None
    embedding: str | None = None

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class ScanConfig:
    """Every setting of a scan (``analyzer.scan`` keyword arguments; recorded in RUN/config.resolved.yaml)."""

    inputs: list[str]
    out: str
    columns: ColumnSpec = field(default_factory=ColumnSpec)
    encoder: str = "e5-small+use-m3"  # analyzer.encoders.DEFAULT_ENCODER (this module sits below the encoders)
    bank: str | None = None
    batch_size: int | None = None  # None: chosen from the input (analyzer/pipeline.py default_batch_size)
    keep_embeddings: bool = True
    embedding_modality: str | None = None  # "text" or "image"; default: image when the encoder has an image tower
    hash_lists: list[str] = field(default_factory=list)
    policy: str | None = None
    engine: str = "local"
    engine_options: dict = field(default_factory=dict)
    index_options: dict = field(default_factory=dict)  # bounds of the R2 neighbour search (analyzer/index)
    media_options: dict = field(default_factory=dict)  # video frames, audio windows, image detector (tagging/media.py)
    quiet: bool = False
    overwrite: bool = False
    seed: int = 0

    def check(self) -> "ScanConfig":
        if self.batch_size is not None and (isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int)
                                            or self.batch_size < 1):
            raise InputError(f"expected --batch-size >= 1, got {self.batch_size}")
        if self.embedding_modality not in (None, *EMBEDDING_MODALITIES):
            raise InputError(f"expected --embedding-modality text or image, got {self.embedding_modality!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise InputError(f"expected an integer seed, got {self.seed!r}")
        try:  # the run stores its own absolute paths (parquet, DuckDB): bytes that are not UTF-8 cannot be stored
            os.path.abspath(self.out).encode("utf-8")
        except UnicodeEncodeError:
            raise InputError(f"expected --out in valid UTF-8, got {self.out!r}; choose another name") from None
        return self

CACHE_ENV = "ANALYZER_CACHE_DIR"


def cache_dir(explicit: str | Path | None = None) -> Path | None:
    """The cache directory: ``explicit`` if given, else ``$ANALYZER_CACHE_DIR``, else None (no disk cache)."""
    value = explicit if explicit not in (None, "") else os.environ.get(CACHE_ENV) or None
    if value is None:
        return None
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise InputError(f"expected --cache-dir / {CACHE_ENV} to be a directory, got {path} which is a file; "
                         "choose another path")
    return path


def use_cache_dir(explicit: str | Path | None) -> None:
    """Make an explicit ``--cache-dir`` the process's cache directory (the stages read ``cache_dir()``)."""
    if explicit not in (None, ""):
        cache_dir(explicit)  # validated
        os.environ[CACHE_ENV] = str(Path(explicit).expanduser().resolve())


DUCKDB_MEMORY_ENV = "ANALYZER_DUCKDB_MEMORY"


def duckdb_memory_limit() -> str:
    """Memory a catalog connection's DuckDB may hold before it spills to RUN/_duckdb_tmp (``ANALYZER_DUCKDB_MEMORY``,
    e.g. "4GB"; default 512MB, measured no slower than 1GB on a 3M-row run and keeping the scan's peak RSS lower;
    raise it on big machines)."""
    import re

    value = os.environ.get(DUCKDB_MEMORY_ENV, "512MB").strip()
    if not re.fullmatch(r"\d+(\.\d+)?\s*[KMGT]i?B", value, flags=re.IGNORECASE):
        raise InputError(f"expected {DUCKDB_MEMORY_ENV} like 1GB or 512MB, got {value!r}; fix the variable")
    return value


def library_cache_dir(name: str) -> Path:
    """Where a third-party library may keep its own cache (matplotlib's font list, torch's compile cache):
    ``CACHE_DIR/name`` with a cache directory, else a new temporary directory removed when the process exits, so
    nothing lands in the home directory (the callers point the library's variable, e.g. MPLCONFIGDIR, at it)."""
    import atexit
    import shutil
    import tempfile

    base = cache_dir()
    if base is not None:
        path = base / name
        path.mkdir(parents=True, exist_ok=True)
        return path
    path = Path(tempfile.mkdtemp(prefix=f"analyzer-{name}-"))
    atexit.register(shutil.rmtree, path, True)
    return path
