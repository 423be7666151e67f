"""webdataset tar shards as img2dataset writes them: ``{key}.jpg|png|webp``, ``{key}.txt``, ``{key}.json``.

Shards are streamed member by member (``tarfile`` in stream mode, nothing is extracted to disk); a sample
is the run of consecutive members sharing a key (webdataset's rule: the name up to the first dot of its
base name). An optional sidecar ``{shard}.parquet`` next to ``{shard}.tar`` (img2dataset's) adds columns
by key; its failed-download rows are not samples of the shard and are not emitted.

Per sample: ``item_id`` = the id field (``--id-column``, else the json ``key``), else the tar key;
``text`` = the ``.txt`` member, else the caption field of the json/sidecar; ``url``/``source`` from the
json/sidecar; ``image`` = the raw bytes of the sample's media member: a video (mp4, webm, mkv, mov ...) before an
image before an audio file (wav, flac, mp3, ogg ...), decoded later in the tag stage (analyzer/ingest/media.py);
``embedding`` = the ``--embedding-column`` field of the json/sidecar or a member with that extension
(``.npy`` read with ``allow_pickle=False``).

Safety: a member with an absolute name, a ``..`` component, or that is a link or a device is never read;
it becomes one ``status="error"`` row (``item_id`` = ``"<shard name>:<member name>"``). A member larger
than ``MAX_BYTES`` (video and audio: ``MAX_MEDIA_BYTES``) is not read (error row). A sample whose only members are of
another type (``.pdf`` ...) is an error row "unsupported media type". A shard that ends mid-member (truncated) or is corrupt gives
an error row for the sample being read (or ``"<shard>:#corrupt"``) and the next shard is read.
"""
from __future__ import annotations

import gzip
import io
import json
import re
import tarfile
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from analyzer.errors import InputError
from analyzer.ingest.images import RowBuilder, as_vector, is_image_name, pick_name
from analyzer.ingest.media import AUDIO_EXT_ORDER, VIDEO_EXT_ORDER, max_bytes_for, media_kind
from analyzer.ingest.provenance import provenance_columns
from analyzer.ingest.schema import ColumnSpec
from analyzer.ingest.tabular import check_utf8_path

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
_KEY_RE = re.compile(r"^((?:.*/|)[^./][^.]*)\.([^/]*)$")
IMAGE_EXT_ORDER = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "ppm", "avif")


def _is_tar_name(p: Path) -> bool:
    return p.name.lower().endswith(TAR_SUFFIXES)


class WebDatasetReader:
    """Stream img2dataset / webdataset tar shards as STANDARD_SCHEMA batches."""

    kind = "webdataset"

    def __init__(self, paths: list[Path], spec: ColumnSpec):
        self.spec = spec
        shards: list[Path] = []
        for p in map(Path, paths):
            if p.is_dir():
                shards += [f for f in p.iterdir() if f.is_file() and _is_tar_name(f)]
            elif p.is_file() and _is_tar_name(p):
                shards.append(p)
            else:
                raise InputError(f"expected webdataset .tar shards or a directory of them, got {p}")
        self.shards = sorted(set(shards), key=lambda f: str(f))
        if not self.shards:
            raise InputError(f"expected at least one .tar shard in {[str(p) for p in paths]}, got none")
        for s in self.shards:
            check_utf8_path(s)  # a shard found in a directory: its name is stored with every sample
            if s.stat().st_size == 0:
                raise InputError(f"expected a non-empty tar shard, got an empty file {s}; remove it from the inputs")
            if _is_gzip(s):
                _check_gzip_tar(s)
            elif not tarfile.is_tarfile(s):
                raise InputError(f"expected a tar archive, got {s} which is not one; check the file")
        self.sidecars = {s: _sidecar_path(s) for s in self.shards}
        self.files = self.shards + [p for p in self.sidecars.values() if p is not None]
        for side in (p for p in self.sidecars.values() if p is not None):
            _parquet_names(side)  # unreadable sidecar: InputError now, not mid-run

    has_embeddings = property(lambda self: self.spec.embedding is not None)

    def embedding_dim(self) -> int | None:
        return None

    def count_rows(self) -> int | None:
        return None

    def iter_batches(self, batch_size: int, start_row: int = 0) -> Iterator[pa.RecordBatch]:
        out = RowBuilder(start_row)
        for shard in self.shards:
            for row in self._iter_samples(shard):
                out.add(**row)
                if out.full(batch_size):
                    yield out.flush()
        if len(out):
            yield out.flush()

    # ------------------------------------------------------------------------------------------
    def _iter_samples(self, shard: Path) -> Iterator[dict]:
        side = _load_sidecar(self.sidecars[shard], self.spec)
        file = str(shard)
        cur_key, cur = None, {}
        gz = _is_gzip(shard)
        try:
            with _open_tar(shard, gz) as (tf, check_end):
                for m in tf:
                    if m.isdir():
                        continue
                    why = _unsafe(m)
                    if why:
                        if cur_key is not None:
                            yield self._sample(cur_key, cur, side, file)
                            cur_key, cur = None, {}
                        yield {"item_id": f"{shard.name}:{m.name}"[:300], "file": file,
                               "error": f"unsafe tar member refused ({why}): {m.name!r}"[:300]}
                        continue
                    match = _KEY_RE.match(m.name)
                    if not match:
                        continue  # not part of a sample (no extension, or a dot-file)
                    key, ext = match.group(1), match.group(2).lower()
                    if key != cur_key:
                        if cur_key is not None:
                            yield self._sample(cur_key, cur, side, file)
                        cur_key, cur = key, {}
                    if m.size > max_bytes_for(m.name):  # images MAX_BYTES, video/audio MAX_MEDIA_BYTES
                        cur.setdefault("__errors", []).append(f"member {ext} too large ({m.size} bytes)")
                        continue
                    fh = tf.extractfile(m)
                    cur[ext] = fh.read() if fh is not None else b""
                check_end(tf.offset)
        except (tarfile.TarError, EOFError, OSError, zlib_error()) as exc:
            why = f"tar shard truncated or corrupt ({type(exc).__name__}: {str(exc)[:120]})"
            if gz:  # a cut compressed stream hides how many samples it held: bad input, not a run that looks whole
                raise InputError(f"expected a complete gzip-compressed tar shard, got {shard} which is {why[10:]}; "
                                 "re-download the shard or remove it from the inputs") from None
            if cur_key is not None:
                cur.setdefault("__errors", []).append(why)
                yield self._sample(cur_key, cur, side, file)
            else:
                yield {"item_id": f"{shard.name}:#corrupt", "file": file, "error": why}
            return
        if cur_key is not None:
            yield self._sample(cur_key, cur, side, file)

    def _sample(self, key: str, members: dict, side: dict, file: str) -> dict:
        spec = self.spec
        errors = list(members.pop("__errors", []))
        meta: dict = {}
        if "json" in members:
            try:
                obj = json.loads(members["json"].decode("utf-8", errors="replace"))
                meta = obj if isinstance(obj, dict) else {}
            except ValueError:
                errors.append("the .json member is not valid JSON")
        extra = side.get(key, {})
        fields = {**extra, **meta}

        def field(role):
            name = pick_name(list(fields), role, getattr(spec, role))
            return fields.get(name) if name is not None else None

        text = None
        if spec.text is None and "txt" in members:
            text = members["txt"].decode("utf-8", errors="replace")
        if text is None:
            text = field("text")
        ident = field("id")
        item_id = str(ident) if ident not in (None, "") else key
        # the sample's media (carried in the image column, told apart by its bytes in the tag stage): a video before
        # an image (its thumbnail), an image before an audio track
        image = next((members[e] for e in VIDEO_EXT_ORDER + IMAGE_EXT_ORDER if e in members), None)
        if image is None:
            image = next((v for e, v in members.items() if is_image_name("x." + e)), None)
        if image is None:
            image = next((members[e] for e in AUDIO_EXT_ORDER if e in members), None)
        embedding = None
        if spec.embedding is not None:
            ext = spec.embedding.lower().lstrip(".")
            if ext in members:
                embedding = _npy_vector(members[ext]) if ext.endswith("npy") else None
                if embedding is None:
                    errors.append(f"member .{ext} is not a 1-d numeric .npy vector")
            else:
                embedding = as_vector(fields.get(spec.embedding))
        if image is None and text is None and embedding is None and not errors:
            other = sorted(e for e in members if e != "json" and media_kind("x." + e) is None)
            errors.append(f"unsupported media type (.{other[0]}): not an image, video or audio member" if other
                          else "sample has no image, caption or embedding member")
        prov = {r: fields.get(c) for r, c in provenance_columns(list(fields)).items() if c}  # punsafe, pwatermark
        return {"item_id": item_id, "file": file, "text": text, "url": field("url"), "source": field("source"),
                "embedding": embedding, "image": image, "error": "; ".join(errors)[:300] or None, **prov}


def zlib_error():
    import zlib

    return zlib.error


def _is_gzip(shard: Path) -> bool:
    """Whether the shard's bytes are gzip (magic 1f 8b), whatever its name says."""
    with open(shard, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def _check_gzip_tar(shard: Path) -> None:
    """Before the run: a gzip shard's first 512 decompressed bytes must be a tar header (or an empty archive)."""
    try:
        with gzip.open(shard, "rb") as fh:
            block = fh.read(512)
        tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.EOFHeaderError:
        return  # an empty archive: no samples
    except (OSError, EOFError, zlib_error(), tarfile.HeaderError) as exc:
        raise InputError(f"expected a gzip-compressed tar shard, got {shard} whose start is not one "
                         f"({type(exc).__name__}: {str(exc)[:80]}); re-create the shard or remove it from the "
                         "inputs") from None


@contextmanager
def _open_tar(shard: Path, gz: bool):
    """The shard as a stream-mode TarFile and ``check_end(offset)``, which raises ``tarfile.ReadError`` unless two
    zero blocks follow the last member (tarfile stops silently at a cut header) and, for gzip, the compressed
    stream ends with its checksum (a cut gzip stream otherwise just ends early)."""
    if not gz:
        with tarfile.open(shard, mode="r|*") as tf:
            yield tf, lambda end: _plain_end(shard, end)
        return
    with gzip.open(shard, "rb") as raw:
        src = _Tail(raw)
        with tarfile.open(fileobj=src, mode="r|") as tf:
            yield tf, src.check_end


def _plain_end(shard: Path, end: int) -> None:
    with open(shard, "rb") as fh:
        fh.seek(end)
        block = fh.read(1024)
    if len(block) < 1024 or any(block):
        raise tarfile.ReadError(f"no end-of-archive marker after byte {end}")


class _Tail:
    """A read-only stream over a decompressed shard that keeps its last 64 KiB read (tarfile reads at most 10 KiB
    past the header it stops at), so the end-of-archive blocks can be checked after tarfile stopped."""

    KEEP = 1 << 16

    def __init__(self, raw):
        self.raw, self.buf, self.start = raw, bytearray(), 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.buf += data
        if len(self.buf) > 2 * self.KEEP:
            cut = len(self.buf) - self.KEEP
            del self.buf[:cut]
            self.start += cut
        return data

    def check_end(self, end: int) -> None:
        while self.start + len(self.buf) < end + 1024 and self.read(1 << 14):
            pass
        block = bytes(self.buf[end - self.start:end - self.start + 1024]) if end >= self.start else b""
        while self.read(1 << 20):  # the rest: gzip checks its length and CRC at the end of the stream
            pass
        if len(block) < 1024 or any(block):
            raise tarfile.ReadError(f"no end-of-archive marker after byte {end} of the decompressed stream")


def _unsafe(m: tarfile.TarInfo) -> str | None:
    name = m.name
    if name.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", name):
        return "absolute path"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return "'..' in path"
    if m.issym() or m.islnk():
        return "link"
    if not m.isfile():
        return "not a regular file"
    return None


def _npy_vector(data: bytes) -> np.ndarray | None:
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception:  # noqa: BLE001 - corrupt member is a per-item error
        return None
    return as_vector(arr) if np.issubdtype(arr.dtype, np.number) else None


def _sidecar_path(shard: Path) -> Path | None:
    name = shard.name
    for suf in TAR_SUFFIXES:
        if name.lower().endswith(suf):
            cand = shard.with_name(name[: -len(suf)] + ".parquet")
            return cand if cand.is_file() else None
    return None


def _parquet_names(p: Path) -> list[str]:
    try:
        return pq.ParquetFile(p).schema_arrow.names
    except Exception as exc:
        raise InputError(f"expected a readable sidecar parquet, got {p} ({type(exc).__name__}); "
                         "remove or re-export it") from None


def _load_sidecar(p: Path | None, spec: ColumnSpec) -> dict[str, dict]:
    """key -> {column: value} for the shard's sidecar (successful rows only), or {} when absent."""
    if p is None:
        return {}
    names = _parquet_names(p)
    if "key" not in names:
        return {}
    wanted = {"key"}
    for role in ("text", "id", "url", "source", "embedding"):
        name = pick_name(names, role, getattr(spec, role))
        if name:
            wanted.add(name)
    if "status" in names:
        wanted.add("status")
    table = pq.read_table(p, columns=sorted(wanted))
    rows = table.to_pylist()
    return {str(r["key"]): r for r in rows if r.get("status") in (None, "success")}


__all__ = ["WebDatasetReader", "TAR_SUFFIXES"]
