"""The ``Reader`` protocol: what every input reader provides (tabular, webdataset, image folder, LAION, HF)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Protocol, runtime_checkable

import pyarrow as pa


@runtime_checkable
class Reader(Protocol):
    kind: str  # "tabular", "webdataset", "imagefolder", "laion" or "hf"
    files: list[Path]  # every input file the reader reads (fingerprinted in the run's config)

    @property
    def has_embeddings(self) -> bool:
        """Whether the rows carry precomputed vectors."""
        ...

    def embedding_dim(self) -> int | None:
        """The vectors' dimension when the input declares it (None: absent, or known only from the rows)."""
        ...

    def count_rows(self) -> int | None:
        """The number of rows when metadata tells it without a read (None otherwise)."""
        ...

    def iter_batches(self, batch_size: int, start_row: int = 0) -> Iterator[pa.RecordBatch]:
        """Standard batches (analyzer/ingest/schema.py) of at most ``batch_size`` rows, in input order;
        ``row_idx`` starts at ``start_row``."""
        ...
