"""Loading known-content hash lists (md5, sha1, sha256, PDQ, URL) from text or CSV files.

Spec grammar (one string per list; several lists at once; every match names its list)::

    [KIND:][NAME=]PATH[:COLUMN]

* ``KIND`` is ``md5``, ``sha1``, ``sha256``, ``pdq``, ``url`` or ``vpdq`` (video frame hashes, analyzer/hashes/vpdq.py).
  Without it the kind comes from the CSV
  column name (a column called md5/sha1/sha256/pdq/url) or from the hex length of the entries:
  32 = md5, 40 = sha1. **64 hex digits are ambiguous** (sha256 and PDQ are both 256 bits), so a 64-hex
  list needs ``sha256:`` or ``pdq:`` in front, or a CSV column named ``sha256`` or ``pdq``.
* ``NAME`` names the list in results; default: the file stem (``iwf_2024.txt`` -> ``iwf_2024``).
* ``PATH`` is a plain-text file (one entry a line, blank lines and lines starting with ``#`` skipped) or a
  ``.csv``/``.tsv`` file with a header row; ``.gz`` compressed files are read transparently.
* ``COLUMN`` picks the CSV column (or pass ``column=`` to :func:`load_hash_lists`); without it a column
  named pdq, sha256, sha1, md5, url or hash is used when exactly one is present.

URL lists (``url:``): each entry is either a URL (normalised with :mod:`analyzer.hashes.urls`, then
md5-hashed) or the 32/40/64-hex md5/sha1/sha256 of an already normalised URL.

Entries are held as sorted, de-duplicated numpy arrays of raw digests (16-32 bytes an entry), so lists of
millions of entries cost tens of MB and are looked up with ``np.searchsorted``. Any malformed file raises
:class:`analyzer.errors.InputError` with one line naming the file, the line number and what was expected.
Entries of URL lists are never echoed in errors.
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from analyzer.errors import InputError
from analyzer.hashes.urls import normalize_url

KINDS = ("md5", "sha1", "sha256", "pdq", "url", "vpdq")  # vpdq: video frame hashes (analyzer/hashes/vpdq.py)
HEX_LEN = {"md5": 32, "sha1": 40, "sha256": 64, "pdq": 64}
DIGEST_BYTES = {"md5": 16, "sha1": 20, "sha256": 32}
_KIND_BY_LEN = {32: "md5", 40: "sha1"}
_URL_ALGO_BY_LEN = {32: "md5", 40: "sha1", 64: "sha256"}
_HEX_RE = re.compile(r"[0-9a-fA-F]+")
_KIND_RE = re.compile(r"^(md5|sha1|sha256|pdq|url|vpdq):(?!//)(.+)$", re.IGNORECASE)
_NAME_RE = re.compile(r"^([A-Za-z0-9_.\-]+)=(.+)$")
_COLUMN_RE = re.compile(r"^(.+\.(?:csv|tsv)(?:\.gz)?):([^/\\]+)$", re.IGNORECASE)
_AUTO_COLUMNS = ("pdq", "sha256", "sha1", "md5", "url", "hash")


@dataclass
class HashList:
    """One loaded list. ``entries``: sorted unique raw digests (numpy void, 16/20/32 bytes) for exact kinds,
    ``uint8 (n, 32)`` for pdq; for url lists ``url_entries`` maps digest algorithm -> sorted digests."""

    name: str
    kind: str
    path: str
    column: str | None
    entries: np.ndarray | None = None
    url_entries: dict[str, np.ndarray] = field(default_factory=dict)
    file_sha256: str = ""

    @property
    def n_entries(self) -> int:
        if self.kind == "url":
            return int(sum(len(v) for v in self.url_entries.values()))
        return 0 if self.entries is None else int(len(self.entries))

    def summary(self) -> dict:
        return {"name": self.name, "kind": self.kind, "path": self.path, "column": self.column,
                "n_entries": self.n_entries, "file_sha256": self.file_sha256}


@dataclass
class HashLists:
    """The loaded lists, in the order given."""

    lists: list[HashList] = field(default_factory=list)

    def __iter__(self):
        return iter(self.lists)

    def __len__(self) -> int:
        return len(self.lists)

    @property
    def names(self) -> list[str]:
        return [h.name for h in self.lists]

    @property
    def kinds(self) -> set[str]:
        return {h.kind for h in self.lists}

    def summary(self) -> list[dict]:
        """Name, kind, path, entry count and file fingerprint of every list (for config.resolved.yaml)."""
        return [h.summary() for h in self.lists]


def parse_spec(spec: str, column: str | None = None) -> tuple[str | None, str | None, str, str | None]:
    """``'[KIND:][NAME=]PATH[:COLUMN]'`` -> ``(kind, name, path, column)`` (kind/name/column may be None)."""
    if not isinstance(spec, str) or not spec.strip():
        raise InputError(f"expected a hash list spec like 'pdq:name=lists/x.txt', got {spec!r}; "
                         "give one '[KIND:][NAME=]PATH[:COLUMN]' per list")
    rest = spec.strip()
    kind = None
    m = _KIND_RE.match(rest)
    if m:
        kind, rest = m.group(1).lower(), m.group(2)
    name = None
    m = _NAME_RE.match(rest)
    if m and "/" not in m.group(1) and "\\" not in m.group(1):
        name, rest = m.group(1), m.group(2)
    col = column
    m = _COLUMN_RE.match(rest)
    if m and not Path(rest).exists():
        rest, col = m.group(1), m.group(2)
    return kind, name, rest, col


def _default_name(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".csv", ".tsv", ".txt", ".lst", ".list"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name or path.name


def _iter_lines(path: Path):
    """Stream the decoded lines of a (possibly gzip-compressed) UTF-8 file, with exact line numbers in errors."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    lineno = 0
    try:
        with opener(path, "rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise InputError(f"{path}:{lineno}: expected UTF-8 text, got an undecodable byte; "
                                     "save the list as UTF-8 (one hash a line)") from None
                yield line.lstrip("\ufeff") if lineno == 1 else line
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        if path.name.lower().endswith(".gz"):
            raise InputError(f"{path}:{lineno + 1}: expected a gzip-compressed hash list, got a corrupt or "
                             f"truncated file ({exc}); recompress it or pass the plain file") from None
        raise InputError(f"{path}: expected a readable hash list file, got {exc}; check the file") from None


def _is_csv(path: Path) -> bool:
    name = path.name.lower().removesuffix(".gz")
    return name.endswith(".csv") or name.endswith(".tsv")


def _iter_entries(path: Path, column: str | None):
    """Yield ``(line_number, value)`` per entry. For CSV files the first item is ``(-1, resolved_column)``."""
    stream = _iter_lines(path)
    if not _is_csv(path):
        for lineno, line in enumerate(stream, start=1):
            value = line.strip()
            if value and not value.startswith("#"):
                yield lineno, value
        return
    delimiter = "\t" if path.name.lower().removesuffix(".gz").endswith(".tsv") else ","
    reader = csv.reader(stream, delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise InputError(f"{path}: expected a CSV header row, got an empty file; "
                         "add a header such as 'md5' and one hash a row") from None
    except csv.Error as exc:
        raise InputError(f"{path}:1: expected a CSV header row, got malformed CSV ({exc})") from None
    header = [h.strip() for h in header]
    lower = [h.lower() for h in header]
    if column is None:
        found = [c for c in _AUTO_COLUMNS if c in lower]
        if len(found) != 1:
            raise InputError(f"{path}: expected one hash column named one of {', '.join(_AUTO_COLUMNS)}, "
                             f"got columns {header}; name the column with PATH:COLUMN (e.g. lists.csv:md5)")
        column = header[lower.index(found[0])]
    elif column not in header:
        if column.lower() in lower:
            column = header[lower.index(column.lower())]
        else:
            raise InputError(f"{path}: expected a column {column!r}, got columns {header}; "
                             "check the PATH:COLUMN spec")
    yield -1, column  # first item: the resolved column
    idx = header.index(column)
    try:
        for row in reader:
            lineno = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if idx >= len(row):
                raise InputError(f"{path}:{lineno}: expected a value in column {column!r} "
                                 f"(field {idx + 1}), got a row with {len(row)} fields; fix the row")
            value = row[idx].strip()
            if value:
                yield lineno, value
    except csv.Error as exc:
        raise InputError(f"{path}:{reader.line_num}: expected well-formed CSV, got {exc}") from None


def _check_hex(path: Path, lineno: int, value: str, kind: str) -> str:
    want = HEX_LEN[kind]
    if len(value) != want or not _HEX_RE.fullmatch(value):
        shown = value if len(value) <= 80 else value[:77] + "..."
        raise InputError(f"{path}:{lineno}: expected a {want}-hex-digit {kind} hash, got {shown!r} "
                         f"(length {len(value)}); one hash a line, '#' starts a comment line")
    return value.lower()


def load_hash_list(spec: str, *, column: str | None = None) -> HashList:
    """Load one list from a spec string (grammar in the module docstring)."""
    kind, name, path_str, col = parse_spec(spec, column)
    path = Path(path_str).expanduser()
    if not path.is_file():
        raise InputError(f"expected a readable hash list file, got {path_str!r} (not found or not a file); "
                         "check the path in the spec")
    try:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        file_sha256 = digest.hexdigest()
    except OSError as exc:
        raise InputError(f"expected a readable hash list file, got {path} ({exc.strerror}); "
                         "check its permissions") from None
    if kind == "vpdq":  # one row per video frame hash: its own format and loader
        from analyzer.hashes.vpdq import load_vpdq_list

        return load_vpdq_list(name or _default_name(path), path, file_sha256)
    entries = _iter_entries(path, col)
    resolved_col = None
    if _is_csv(path):
        _, resolved_col = next(entries)
        cname = resolved_col.lower()
        if cname in KINDS:
            if kind is not None and kind != cname:
                raise InputError(f"{path}: expected the column {resolved_col!r} to hold {kind} hashes as the "
                                 f"spec says, got a column named {cname}; fix the KIND: prefix or the column")
            kind = cname
    hl = HashList(name=name or _default_name(path), kind=kind or "", path=str(path), column=resolved_col,
                  file_sha256=file_sha256)
    if kind == "url":
        buckets: dict[str, list[bytes]] = {"md5": [], "sha1": [], "sha256": []}
        for lineno, value in entries:
            if _HEX_RE.fullmatch(value) and len(value) in _URL_ALGO_BY_LEN:
                buckets[_URL_ALGO_BY_LEN[len(value)]].append(bytes.fromhex(value))
            else:
                norm = normalize_url(value)
                if norm is None or any(c.isspace() for c in value):
                    raise InputError(f"{path}:{lineno}: expected a URL or the 32/40/64-hex hash of a "
                                     "normalised URL, got an entry with whitespace or no host; one URL a line")
                buckets["md5"].append(hashlib.md5(norm.encode("utf-8", "surrogatepass")).digest())
        hl.url_entries = {a: _sorted_unique(v, DIGEST_BYTES[a]) for a, v in buckets.items() if v}
    else:
        chunks: list[bytes] = []
        pending: list[tuple[int, str]] = []
        for lineno, value in entries:
            if kind is None:
                if _HEX_RE.fullmatch(value) and len(value) == 64:
                    raise InputError(
                        f"{path}:{lineno}: expected the list kind for 64-hex entries (sha256 and PDQ are both "
                        "64 hex digits), got no kind; write sha256:NAME=PATH or pdq:NAME=PATH, or name the "
                        "CSV column sha256 or pdq")
                if not _HEX_RE.fullmatch(value) or len(value) not in _KIND_BY_LEN:
                    shown = value if len(value) <= 80 else value[:77] + "..."
                    raise InputError(f"{path}:{lineno}: expected a 32-hex md5 or 40-hex sha1 (or give the kind: "
                                     f"sha256:/pdq:/url:), got {shown!r}")
                kind = _KIND_BY_LEN[len(value)]
                hl.kind = kind
            pending.append((lineno, value))
            if len(pending) >= 65536:
                chunks.append(_hex_chunk(path, pending, kind))
                pending = []
        if pending:
            chunks.append(_hex_chunk(path, pending, kind))
        values = b"".join(chunks)
        if kind is None:
            kind = hl.kind = ""
        if kind == "pdq":
            uniq = np.unique(np.frombuffer(values, dtype=digest_dtype(32)))
            hl.entries = np.frombuffer(uniq.tobytes(), dtype=np.uint8).reshape(-1, 32)
        elif kind:
            hl.entries = np.unique(np.frombuffer(values, dtype=digest_dtype(DIGEST_BYTES[kind])))
    if hl.n_entries == 0:
        raise InputError(f"{path}: expected at least one hash entry, got none (empty list or only comments); "
                         "check the file or drop the spec")
    return hl


def _hex_chunk(path: Path, pending: list[tuple[int, str]], kind: str) -> bytes:
    """Convert a chunk of hex entries in one call; on any problem find and report the first bad line."""
    want = HEX_LEN[kind]
    try:
        if all(len(v) == want for _, v in pending):
            raw = bytes.fromhex("".join(v for _, v in pending))
            if len(raw) == len(pending) * want // 2:
                return raw
    except ValueError:
        pass
    for lineno, value in pending:
        _check_hex(path, lineno, value, kind)
    raise InputError(f"{path}: expected {want}-hex {kind} hashes, got an entry that could not be read; "
                     "one hash a line")  # pragma: no cover - _check_hex raises first


def digest_dtype(width: int) -> np.dtype:
    """Fixed-width raw bytes (numpy void): sorts and compares bytewise (memcmp), keeps NUL bytes."""
    return np.dtype((np.void, width))


def _sorted_unique(values: list[bytes], width: int) -> np.ndarray:
    return np.unique(np.frombuffer(b"".join(values), dtype=digest_dtype(width)))


def load_hash_lists(specs: list[str] | str, *, column: str | None = None) -> HashLists:
    """Load several lists (``InputError`` on any bad file or spec, or on two lists with one name)."""
    if isinstance(specs, (str, Path)):
        specs = [str(specs)]
    lists = HashLists()
    seen: set[str] = set()
    for spec in specs:
        hl = load_hash_list(str(spec), column=column)
        if hl.name in seen:
            raise InputError(f"expected distinct hash list names, got {hl.name!r} twice; "
                             "name them with NAME=PATH")
        seen.add(hl.name)
        lists.lists.append(hl)
    return lists
