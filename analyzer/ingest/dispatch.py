"""Dispatch to the non-tabular readers (webdataset, image folders, LAION embeddings, HF datasets)."""
from __future__ import annotations

from pathlib import Path

from analyzer.errors import InputError
from analyzer.ingest.schema import ColumnSpec


def detect_dir(p: Path) -> str:
    if (p / "img_emb").is_dir() and (p / "metadata").is_dir():
        return "laion"
    if any((p / n).exists() for n in ("dataset_info.json", "state.json", "dataset_dict.json")):
        return "hf"
    files = [f for f in p.iterdir() if f.is_file()]
    if any(f.suffix.lower() == ".tar" for f in files):
        return "webdataset"
    if any(f.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"} for f in p.rglob("*")):
        return "imagefolder"
    raise InputError(f"expected a directory of images, .tar shards, a LAION embedding layout or a saved HF dataset, got {p}")


def make(kind: str, paths: list[Path], spec: ColumnSpec):
    if kind == "webdataset":
        from analyzer.ingest.webdataset import WebDatasetReader as R
    elif kind == "imagefolder":
        from analyzer.ingest.imagefolder import ImageFolderReader as R
    elif kind == "laion":
        from analyzer.ingest.laion import LaionEmbeddingReader as R
    elif kind == "hf":
        from analyzer.ingest.hf import HFDatasetReader as R
    else:  # pragma: no cover
        raise InputError(f"expected a known input kind, got {kind}")
    return R(paths, spec)
