"""Hugging Face datasets saved to disk (``save_to_disk``) or exported as parquet; no ``datasets`` import.

Layouts (the directory given as input):

- ``Dataset.save_to_disk``: ``state.json`` (its ``_data_files`` list the ``.arrow`` files in order) and
  ``dataset_info.json``; the ``.arrow`` files are Arrow IPC streams, read memory-mapped batch by batch;
- ``DatasetDict.save_to_disk``: ``dataset_dict.json`` listing the splits, one such directory per split;
- parquet export (``push_to_hub`` / ``to_parquet``): ``*.parquet`` files anywhere under the directory, or
  given directly; the split is the file-name prefix (``train-00000-of-00002.parquet`` -> ``train``).

Columns: text/id/url/source/embedding resolve like any input (options, else auto-detection). The image
column is the first column whose feature is ``Image`` (``dataset_info.json`` or the ``huggingface`` schema
metadata), else one named image/img/jpg/png/webp that is a struct of ``bytes``/``path`` or binary. An image
stored by path only is read from that path (relative paths from the dataset directory) when it is a
regular file with an image suffix, else the row is an error. Embedding columns may be lists or fixed-size lists of float16/32/64.

``item_id``: the id column, else for image datasets ``"<split>/<row in split>"``, else the documented hash
of url and text (as for tabular inputs).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from analyzer.errors import InputError
from analyzer.ingest.images import MAX_BYTES, is_image_name, resolve_roles
from analyzer.ingest.provenance import provenance_columns
from analyzer.ingest.schema import ColumnSpec
from analyzer.ingest.standardize import standardize
from analyzer.ingest.tabular import check_utf8_path, parquet_batches

IMAGE_NAMES = ("image", "img", "jpg", "jpeg", "png", "webp", "picture")


def is_hf_parquet(path: Path) -> bool:
    """True for a parquet file written by ``datasets`` (its schema metadata has a ``huggingface`` key)."""
    try:
        md = pq.read_schema(path).metadata or {}
    except Exception:  # noqa: BLE001 - not readable: let the tabular reader report it
        return False
    return b"huggingface" in md


class HFDatasetReader:
    """Stream a saved Hugging Face dataset as STANDARD_SCHEMA batches."""

    kind = "hf"

    def __init__(self, paths: list[Path], spec: ColumnSpec):
        self.spec = spec
        self.parts: list[tuple[str, Path, Path, str]] = []  # (split, base dir, file, "arrow"|"parquet")
        for p in sorted({Path(x) for x in paths}, key=str):
            self.parts += _discover(p)
        if not self.parts:
            raise InputError(f"expected a saved Hugging Face dataset (state.json + .arrow files, dataset_dict.json, "
                             f"or .parquet files), got nothing readable in {[str(p) for p in paths]}")
        self.files = [f for _, _, f, _ in self.parts]
        for f in self.files:
            check_utf8_path(f)  # files found under the dataset directory: their names are stored with every row
        self.columns: dict[Path, dict] = {}
        for split, base, f, fmt in self.parts:
            schema = _schema(f, fmt)
            cols = resolve_roles(schema.names, spec, f)
            cols.update({r: c for r, c in provenance_columns(schema.names).items() if c})  # punsafe, pwatermark
            cols["image"] = _image_column(schema, _features(base, schema))
            if not (cols["text"] or cols["embedding"] or cols["image"]):
                raise InputError(f"expected a text, image or --embedding-column column in {f}, got columns "
                                 f"{schema.names[:12]}; name one with --text-column or --embedding-column")
            self.columns[f] = cols

    @property
    def has_embeddings(self) -> bool:
        return any(c.get("embedding") for c in self.columns.values())

    def embedding_dim(self) -> int | None:
        for _, _, f, fmt in self.parts:
            name = self.columns[f].get("embedding")
            if name:
                t = _schema(f, fmt).field(name).type
                if pa.types.is_fixed_size_list(t):
                    return t.list_size
        return None

    def count_rows(self) -> int | None:
        if all(fmt == "parquet" for *_, fmt in self.parts):
            return sum(pq.ParquetFile(f).metadata.num_rows for _, _, f, _ in self.parts)
        return None

    def iter_batches(self, batch_size: int, start_row: int = 0) -> Iterator[pa.RecordBatch]:
        row = start_row
        in_split: dict[str, int] = {}
        for split, base, f, fmt in self.parts:
            cols = self.columns[f]
            needed = sorted({v for v in cols.values() if v})
            for raw in _raw_batches(f, fmt, needed, batch_size):
                k = raw.num_rows
                if k == 0:
                    continue
                use = {r: c for r, c in cols.items() if r != "image"}  # the roles, provenance columns too
                arrays, names = list(raw.columns), list(raw.schema.names)
                if cols["embedding"]:  # fixed-size lists go through the variable-list path of standardize
                    j = names.index(cols["embedding"])
                    if pa.types.is_fixed_size_list(arrays[j].type):
                        arrays[j] = arrays[j].cast(pa.list_(arrays[j].type.value_type))
                first = in_split.get(split, 0)
                if not cols["id"] and cols["image"]:
                    arrays.append(pa.array([f"{split}/{i}" for i in range(first, first + k)], type=pa.string()))
                    names.append("__key")
                    use["id"] = "__key"
                errors = [None] * k
                images = None
                if cols["image"]:
                    images, errors = _image_bytes(raw.column(raw.schema.get_field_index(cols["image"])), base)
                if any(errors):
                    arrays.append(pa.array(errors, type=pa.string()))
                    names.append("__error")
                out = standardize(pa.RecordBatch.from_arrays(arrays, names=names), use, file=str(f), start_row=row)
                if images is not None:
                    out = out.set_column(out.schema.get_field_index("image"), out.schema.field("image"), images)
                in_split[split] = first + k
                row += k
                yield out


def _discover(p: Path) -> list[tuple[str, Path, Path, str]]:
    if p.is_file():
        if p.suffix.lower() in (".parquet", ".pq"):
            return [(_split_of(p), p.parent, p, "parquet")]
        if p.suffix.lower() == ".arrow":
            return [(p.parent.name, p.parent, p, "arrow")]
        raise InputError(f"expected a saved Hugging Face dataset directory, .arrow or .parquet file, got {p}")
    if (p / "dataset_dict.json").is_file():
        out = []
        for s in _splits(p / "dataset_dict.json"):
            if not (p / s).is_dir():
                raise InputError(f"expected the split directory {p / s} listed in {p / 'dataset_dict.json'}, got "
                                 "none; re-save the dataset or fix the splits list")
            out += _discover(p / s)
        return out
    if (p / "state.json").is_file():
        try:
            state = json.loads((p / "state.json").read_text())
            names = [d["filename"] for d in state.get("_data_files", [])]
            split = state.get("_split") or p.name
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError, RecursionError):
            raise InputError(f"expected a valid state.json in {p}, got a malformed file; re-save the dataset") from None
        for n in names:
            if not isinstance(n, str) or not n or "/" in n or "\\" in n or n.startswith(".."):
                raise InputError(f"expected plain data-file names in {p / 'state.json'}, got {n!r}")
            if not (p / n).is_file():
                raise InputError(f"expected the data file {n} listed in {p / 'state.json'}, got it missing")
        return [(str(split), p, p / n, "arrow") for n in names]
    arrows = sorted(p.glob("*.arrow"))
    if arrows:
        return [(p.name, p, f, "arrow") for f in arrows]
    parquets = sorted(f for f in p.rglob("*.parquet") if not any(s.startswith(".") for s in f.relative_to(p).parts))
    return [(_split_of(f), p, f, "parquet") for f in parquets]


def _splits(path: Path) -> list[str]:
    """The ``splits`` of a ``dataset_dict.json``: a non-empty list of plain directory names (no path separator,
    no ``..``: a split never points outside the dataset), each listed once."""
    try:
        splits = json.loads(path.read_text(encoding="utf-8"))["splits"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError):
        raise InputError(f"expected a 'splits' list in {path}, got a malformed file; re-save the dataset") from None
    if not isinstance(splits, list) or not splits:
        raise InputError(f"expected a non-empty 'splits' list of names in {path}, got {str(splits)[:80]!r}; "
                         "re-save the dataset")
    for s in splits:
        if (not isinstance(s, str) or s in ("", ".", "..") or "/" in s or "\\" in s or "\0" in s
                or s != s.strip() or splits.count(s) > 1):
            raise InputError(f"expected plain, distinct split names in {path}, got {str(s)[:80]!r}; re-save the "
                             "dataset or fix the splits list")
    return splits


def _split_of(f: Path) -> str:
    stem = f.stem
    return stem.split("-")[0] if "-" in stem else stem


def _schema(f: Path, fmt: str) -> pa.Schema:
    try:
        if fmt == "parquet":
            return pq.read_schema(f)
        with pa.memory_map(str(f)) as src:
            try:
                return pa.ipc.open_stream(src).schema
            except pa.ArrowInvalid:
                return pa.ipc.open_file(src).schema
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"expected a readable {fmt} file, got {f} ({type(exc).__name__}: {str(exc)[:120]}); "
                         "re-save the dataset") from None


def _features(base: Path, schema: pa.Schema) -> dict:
    md = (schema.metadata or {}).get(b"huggingface")
    if md:
        try:
            return json.loads(md).get("info", {}).get("features", {}) or {}
        except ValueError:
            pass
    info = base / "dataset_info.json"
    if info.is_file():
        try:
            return json.loads(info.read_text()).get("features", {}) or {}
        except ValueError:
            return {}
    return {}


def _image_column(schema: pa.Schema, features: dict) -> str | None:
    for name, feat in features.items():
        if isinstance(feat, dict) and feat.get("_type") == "Image" and name in schema.names:
            return name
    for name in schema.names:
        if name.lower() in IMAGE_NAMES:
            t = schema.field(name).type
            if pa.types.is_binary(t) or pa.types.is_large_binary(t):
                return name
            if pa.types.is_struct(t) and t.get_field_index("bytes") >= 0:
                return name
    return None


def _raw_batches(f: Path, fmt: str, needed: list[str], batch_size: int) -> Iterator[pa.RecordBatch]:
    try:
        if fmt == "parquet":
            yield from parquet_batches(f, batch_size, needed)
            return
        with pa.memory_map(str(f)) as src:
            try:
                reader = pa.ipc.open_stream(src)
                batches = iter(reader)
            except pa.ArrowInvalid:
                fr = pa.ipc.open_file(src)
                batches = (fr.get_batch(i) for i in range(fr.num_record_batches))
            for b in batches:
                b = b.select(needed)
                for off in range(0, b.num_rows, batch_size):
                    yield b.slice(off, batch_size)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"expected a readable {fmt} file, got a read error in {f} ({type(exc).__name__}: "
                         f"{str(exc)[:160]}); the file is corrupt or truncated: re-save the dataset") from None


def _image_bytes(col: pa.Array, base: Path) -> tuple[pa.Array, list[str | None]]:
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if pa.types.is_struct(col.type):
        data = pc.struct_field(col, "bytes").to_pylist()
        paths = (pc.struct_field(col, "path").to_pylist() if col.type.get_field_index("path") >= 0
                 else [None] * len(col))
    else:
        data, paths = col.to_pylist(), [None] * len(col)
    out: list[bytes | None] = []
    errors: list[str | None] = []
    for d, p in zip(data, paths):
        err = None
        if d is None and p:
            d, err = _read_path(Path(p) if Path(p).is_absolute() else base / p)
        elif d is None:
            err = "row has no image"
        elif len(d) > MAX_BYTES:
            d, err = None, f"image too large ({len(d)} bytes > {MAX_BYTES})"
        out.append(d)
        errors.append(err)
    return pa.array(out, type=pa.binary()), errors


def _read_path(p: Path) -> tuple[bytes | None, str | None]:
    if not is_image_name(p.name):
        return None, "image path without an image file suffix refused"
    try:
        if not p.is_file():
            return None, "image stored by path only and the file is missing"
        if p.stat().st_size > MAX_BYTES:
            return None, f"image file too large (> {MAX_BYTES} bytes)"
        return p.read_bytes(), None
    except OSError as exc:
        return None, f"image file unreadable: {type(exc).__name__}"


__all__ = ["HFDatasetReader", "is_hf_parquet"]
