"""Expansion from confirmed hits, and the restricted escalation package.

*Expansion* (after the Stanford Internet Observatory method): items whose embedding lies within a cosine
similarity threshold of a confirmed hash hit become candidates for partner verification. They are listed
by id with their similarity to the hit, never displayed.

*Escalation package*: ``RUN/escalation/`` (mode 0700) with exactly two files (mode 0600):

``quarantine.csv``  one row per quarantined item: ``item_id, category, reasons, matched_hashes, md5,
                    sha1, sha256, pdq, url_md5, source_domain, run_fingerprint``. ``category`` is the most
                    severe of hash_match > r1 > expansion_candidate; ``reasons`` are ``;``-joined codes
                    (``hash:LIST:KIND:dN``, ``r1:CODE``, ``near_hit:HIT_ID:simX``).
``manifest.json``   format, run fingerprint, counts, list names, the csv's sha256 and columns.

Only ids, hashes and source references (the md5 of the normalised URL and the source domain) are written:
no caption, no raw URL, no image, no score of any other item. Files are written to a temporary name with
mode 0600 and renamed into place, so a partial package never looks complete.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from analyzer.errors import InputError
from analyzer.hashes.urls import url_digest, url_host

QUARANTINE_COLUMNS = ("item_id", "category", "reasons", "matched_hashes", "md5", "sha1", "sha256", "pdq",
                      "url_md5", "source_domain", "run_fingerprint")
PACKAGE_FORMAT = "analyzer-escalation/1"
_SEVERITY = {"hash_match": 0, "r1": 1, "expansion_candidate": 2}
_CODE_BAD = re.compile(r"[^A-Za-z0-9_.:=\-]+")
_HEX = re.compile(r"^[0-9a-f]+$")
_HOSTNAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)+$")


# --------------------------------------------------------------------------------------------- expansion
def _unit_rows(vectors: np.ndarray, ids: list[str], what: str) -> np.ndarray:
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] != len(ids):
        raise InputError(f"expected {what} embeddings of shape ({len(ids)}, dim), got {arr.shape}; "
                         "give one vector per id")
    bad = ~np.isfinite(arr).all(axis=1)
    norms = np.linalg.norm(arr, axis=1)
    bad |= norms == 0
    if bad.any():
        first = ids[int(np.flatnonzero(bad)[0])]
        raise InputError(f"expected finite non-zero {what} embeddings, got {int(bad.sum())} NaN/inf/zero-norm "
                         f"vectors (first id {first!r}); drop or re-embed those items")
    return arr / norms[:, None]


class HitExpander:
    """Streaming top-k search for neighbours of hit vectors: ``fit(hit_ids, hit_vectors)``, then
    ``partial_fit(ids, embeddings)`` per batch (memory: k candidates per hit), then ``results()``.

    ``check_unique`` (default) refuses an id seen in an earlier batch, which keeps every id seen in memory;
    callers that stream already de-duplicated batches (``write_run_escalation``) pass False."""

    def __init__(self, *, threshold: float = 0.9, k: int = 50, check_unique: bool = True):
        self.threshold = threshold
        self.k = k
        self.check_unique = check_unique

    def fit(self, hit_ids: list[str], hit_vectors) -> "HitExpander":
        if not -1.0 <= float(self.threshold) <= 1.0:
            raise InputError(f"expected a cosine similarity threshold in [-1, 1], got {self.threshold}")
        if int(self.k) < 1:
            raise InputError(f"expected k >= 1 neighbours per hit, got {self.k}")
        self.hit_ids_ = [str(h) for h in hit_ids]
        self.hits_ = _unit_rows(hit_vectors, self.hit_ids_, "hit") if self.hit_ids_ else None
        self._exclude = set(self.hit_ids_)
        self._best: list[list[tuple[float, str]]] = [[] for _ in self.hit_ids_]
        self._seen: set[str] = set()
        return self

    def partial_fit(self, ids: list[str], embeddings) -> "HitExpander":
        ids = [str(i) for i in ids]
        if self.check_unique:
            dup = [i for i in ids if i in self._seen]
            if len(set(ids)) != len(ids) or dup:
                raise InputError("expected unique item ids across embedding batches, got duplicates "
                                 f"(e.g. {(dup or ids)[0]!r}); de-duplicate ids before expansion")
            self._seen.update(ids)
        if self.hits_ is None or not ids:
            return self
        emb = _unit_rows(embeddings, ids, "item")
        if emb.shape[1] != self.hits_.shape[1]:
            raise InputError(f"expected item embeddings of dim {self.hits_.shape[1]} like the hits, "
                             f"got {emb.shape[1]}; use one encoder for hits and items")
        keep = np.array([i not in self._exclude for i in ids])
        for start in range(0, len(ids), 65536):
            sims = emb[start:start + 65536] @ self.hits_.T  # (chunk, n_hits)
            chunk_keep = keep[start:start + 65536]
            for h in range(sims.shape[1]):
                col = sims[:, h]
                cand = np.flatnonzero((col >= self.threshold) & chunk_keep)
                if cand.size > self.k:
                    cand = cand[np.argpartition(-col[cand], self.k - 1)[: self.k]]
                if cand.size:
                    merged = self._best[h] + [(float(col[c]), ids[start + c]) for c in cand]
                    merged.sort(key=lambda t: (-t[0], t[1]))
                    self._best[h] = merged[: self.k]
        return self

    def results(self) -> list[dict]:
        return [{"item_id": iid, "hit_id": hid, "similarity": round(sim, 6)}
                for hid, best in zip(self.hit_ids_, self._best) for sim, iid in best]


def expand_from_hits(hit_ids, ids, embeddings, *, threshold: float = 0.9, k: int = 50) -> list[dict]:
    """Candidates near confirmed hits: ``[{"item_id", "hit_id", "similarity"}]`` (cosine, >= threshold).

    ``embeddings`` is aligned to items **by id**: either a mapping ``id -> vector`` (``ids`` then names the
    items to search, or ``None`` for all keys) or an array ``(len(ids), dim)`` whose rows belong to ``ids``
    (lengths are checked, ids must be unique). Up to ``k`` candidates per hit, most similar first; hits
    themselves are never candidates; hits without an embedding are skipped.
    """
    hit_ids = list(dict.fromkeys(str(h) for h in hit_ids))
    if isinstance(embeddings, Mapping):
        ids = [str(i) for i in (embeddings.keys() if ids is None else ids)]
        missing = [i for i in ids if i not in embeddings]
        if missing:
            raise InputError(f"expected an embedding for every id, got {len(missing)} ids without one "
                             f"(first {missing[0]!r}); pass ids=None to search all embedded items")
        matrix = np.asarray([embeddings[i] for i in ids], dtype=np.float32) if ids else np.zeros((0, 1))
        lookup = embeddings
    else:
        if ids is None:
            raise InputError("expected ids aligned to the embedding rows, got ids=None; pass the item ids "
                             "in row order or a mapping id -> vector")
        ids = [str(i) for i in ids]
        matrix = np.asarray(embeddings, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[0] != len(ids):
            raise InputError(f"expected one embedding row per id ({len(ids)} ids), got an array of shape "
                             f"{matrix.shape}; align embeddings to ids by id")
        if len(set(ids)) != len(ids):
            raise InputError("expected unique ids for the embedding rows, got duplicates; de-duplicate first")
        row_of = {i: r for r, i in enumerate(ids)}
        lookup = {h: matrix[row_of[h]] for h in hit_ids if h in row_of}
    present = [h for h in hit_ids if h in lookup]
    if not present or not ids:
        return []
    expander = HitExpander(threshold=threshold, k=k).fit(present, np.asarray([lookup[h] for h in present]))
    return expander.partial_fit(ids, matrix).results()


# ------------------------------------------------------------------------------------ escalation package
def _code(text, limit: int = 80) -> str:
    return _CODE_BAD.sub("_", str(text))[:limit]


def _hexish(value) -> str | None:
    if value is None:
        return None
    value = str(value).strip().lower()
    return value if value and len(value) <= 128 and _HEX.match(value) else None


def _row(rows: dict, item_id) -> dict:
    if not isinstance(item_id, str) or not item_id:
        raise InputError(f"expected a non-empty string item_id in escalation inputs, got {item_id!r}")
    if item_id not in rows:
        rows[item_id] = {"item_id": item_id, "category": "expansion_candidate", "reasons": set(),
                         "matched": set(), "md5": None, "sha1": None, "sha256": None, "pdq": None,
                         "url_md5": None, "source_domain": None}
    return rows[item_id]


def _raise_category(row: dict, category: str) -> None:
    if _SEVERITY[category] < _SEVERITY[row["category"]]:
        row["category"] = category


def _take_refs(row: dict, ref: Mapping) -> None:
    """Copy only whitelisted reference fields: hashes, url -> md5 of normalised URL, source domain."""
    for kind in ("md5", "sha1", "sha256", "pdq"):
        if row[kind] is None and _hexish(ref.get(kind)):
            row[kind] = _hexish(ref.get(kind))
    if row["url_md5"] is None:
        url = ref.get("url")
        row["url_md5"] = url_digest(url, "md5") if isinstance(url, str) else _hexish(ref.get("url_md5"))
    if row["source_domain"] is None:
        # the URL's host first; a given source/source_domain only when it looks like a host name (a free-text
        # source column must not carry words into the package)
        src = url_host(ref["url"]) if isinstance(ref.get("url"), str) else None
        for key in ("source_domain", "source"):
            cand = str(ref.get(key) or "").strip().lower()
            if not src and _HOSTNAME.match(cand):
                src = cand
        row["source_domain"] = src[:253] if src else None


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    os.chmod(path, 0o600)


def write_escalation_package(run_dir, *, matches: Iterable[Mapping] = (), r1_items: Iterable = (),
                             expansions: Iterable[Mapping] = (), run_fingerprint: str,
                             references: Mapping[str, Mapping] | None = None) -> Path:
    """Write ``RUN/escalation/`` (0700) with ``quarantine.csv`` and ``manifest.json`` (0600); return the dir.

    ``matches``: dicts from :meth:`HashMatcher.match_batch`. ``r1_items``: item ids, or dicts with
    ``item_id`` and optional ``reasons`` (codes), ``url``, ``source``, ``md5``/``sha1``/``sha256``/``pdq``.
    ``expansions``: dicts from :func:`expand_from_hits`. ``references``: optional ``item_id -> {url,
    source, md5, sha1, sha256, pdq}`` for any listed item. Any other field (captions, scores) is ignored.
    """
    if not isinstance(run_fingerprint, str) or not run_fingerprint.strip():
        raise InputError(f"expected a non-empty run fingerprint string, got {run_fingerprint!r}")
    references = references or {}
    rows: dict[str, dict] = {}
    list_names: set[str] = set()
    n_matches = 0
    for m in matches:
        row = _row(rows, m.get("item_id"))
        _raise_category(row, "hash_match")
        kind, name = _code(m.get("hash_kind", "")), _code(m.get("list_name", ""))
        list_names.add(name)
        n_matches += 1
        row["reasons"].add(f"hash:{name}:{kind}:d{int(m.get('distance', 0))}")
        item_hash = _hexish(m.get("item_hash"))
        if item_hash:
            row["matched"].add(f"{name}:{kind}:{item_hash}")
            if kind in ("md5", "sha1", "sha256") and row[kind] is None:
                row[kind] = item_hash
            if kind == "url" and row["url_md5"] is None and len(item_hash) == 32:
                row["url_md5"] = item_hash
    for item in r1_items:
        if isinstance(item, str):
            item = {"item_id": item}
        row = _row(rows, item.get("item_id"))
        _raise_category(row, "r1")
        reasons = item.get("reasons") or ["cooccurrence"]
        reasons = [reasons] if isinstance(reasons, str) else reasons
        row["reasons"].update(f"r1:{_code(r)}" for r in reasons)
        _take_refs(row, item)
    for e in expansions:
        row = _row(rows, e.get("item_id"))
        _raise_category(row, "expansion_candidate")
        row["reasons"].add(f"near_hit:{_code(e.get('hit_id'))}:sim{float(e.get('similarity', 0.0)):.4f}")
    for item_id, row in rows.items():
        if item_id in references:
            _take_refs(row, references[item_id])

    run_dir = Path(run_dir)
    esc = run_dir / "escalation"
    if esc.is_symlink() or (esc.exists() and not esc.is_dir()):
        raise InputError(f"expected {esc} to be a directory the analyzer owns, got a symlink or a file; "
                         "remove it and re-run")
    run_dir.mkdir(parents=True, exist_ok=True)
    esc.mkdir(mode=0o700, exist_ok=True)
    os.chmod(esc, 0o700)

    ordered = sorted(rows.values(), key=lambda r: (_SEVERITY[r["category"]], r["item_id"]))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(QUARANTINE_COLUMNS)
    for r in ordered:
        writer.writerow([r["item_id"], r["category"], ";".join(sorted(r["reasons"])),
                         ";".join(sorted(r["matched"])), r["md5"] or "", r["sha1"] or "", r["sha256"] or "",
                         r["pdq"] or "", r["url_md5"] or "", r["source_domain"] or "", run_fingerprint])
    csv_bytes = buf.getvalue().encode("utf-8")
    counts = {c: sum(1 for r in ordered if r["category"] == c) for c in _SEVERITY}
    manifest = {
        "format": PACKAGE_FORMAT,
        "run_fingerprint": run_fingerprint,
        "n_items": len(ordered),
        "counts": counts,
        "n_hash_matches": n_matches,
        "hash_lists": sorted(list_names),
        "files": {"quarantine.csv": {"sha256": hashlib.sha256(csv_bytes).hexdigest(), "rows": len(ordered),
                                     "columns": list(QUARANTINE_COLUMNS)}},
        "contents": "ids, hashes and source references only (md5 of the normalised URL, source domain); "
                    "no images, captions or raw URLs",
        "handling": "do not open or view the listed items; hand this package to the organisation your legal "
                    "obligations name (for example NCMEC, IWF or C3P) and restrict access to it",
    }
    _atomic_write(esc / "quarantine.csv", csv_bytes)
    _atomic_write(esc / "manifest.json", (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    return esc


# ------------------------------------------------------------------------------------------ from a run
def write_run_escalation(run_dir, con, *, run_fingerprint: str | None = None, threshold: float = 0.9,
                         k: int = 50, batch_rows: int = 65536) -> Path:
    """Build the package of a finished scan from its catalog (``item_risk_flagged``, ``hash_matches``, ``items``).

    R1 items and hash matches come from queries/escalation_items.sql and escalation_matches.sql; expansion
    candidates are searched around the hash-matched items in the run's kept vectors (copied parts or referenced
    input rows: analyzer/store/embeddings.py; streamed in chunks, first occurrence of an id wins).
    ``run_fingerprint`` defaults to the fingerprint in ``RUN/_state.json``.
    """
    from analyzer.store.sql import load_query

    run_dir = Path(run_dir)
    if run_fingerprint is None:
        state = run_dir / "_state.json"
        run_fingerprint = json.loads(state.read_text()).get("fingerprint") if state.exists() else None
        run_fingerprint = run_fingerprint or "unknown"
    cols = ("item_id", "list_name", "hash_kind", "distance", "item_hash")
    matches = [dict(zip(cols, row)) for row in con.execute(load_query("escalation_matches")).fetchall()]
    r1_items, refs = [], {}
    for item_id, hash_match, both, url_md5, host, source in con.execute(load_query("escalation_items")).fetchall():
        refs[item_id] = {"url_md5": url_md5, "source_domain": host, "source": source}
        if both:
            r1_items.append({"item_id": item_id, "reasons": ["both_concepts"]})
    hit_ids = sorted({m["item_id"] for m in matches})
    expansions: list[dict] = []
    from analyzer.store import RunStore
    from analyzer.store.embeddings import KeptVectors

    vectors = KeptVectors(RunStore(run_dir))  # copied or referenced (analyzer/store/embeddings.py)
    parts = vectors.units()
    if hit_ids and parts:
        import pyarrow as pa
        import pyarrow.compute as pc

        from analyzer.store.catalog import DUPLICATE_ERROR

        # ids that occur more than once (later rows are marked in items): only those need a first-occurrence
        # check while streaming, so no set of every id is held in memory
        dup_ids = {r[0] for r in con.execute("SELECT DISTINCT item_id FROM items WHERE error = ?",
                                             [DUPLICATE_ERROR]).fetchall()}

        def batches():
            seen: set[str] = set()
            for piece in parts:
                for ids, h in vectors.read(piece, batch_rows):
                    mat = vectors.as_unit_float32(h)
                    valid = np.isfinite(mat).all(axis=1) & (np.abs(mat).sum(axis=1) > 0)
                    if dup_ids:
                        is_dup = pc.is_in(ids, value_set=pa.array(sorted(dup_ids), pa.string()))
                        for j in np.flatnonzero(valid & is_dup.to_numpy(zero_copy_only=False)):
                            i = ids[int(j)].as_py()
                            valid[j] = i not in seen  # first valid occurrence of a duplicated id wins
                            seen.add(i)
                    keep = np.flatnonzero(valid)
                    if len(keep):
                        yield ids.take(pa.array(keep)), mat[keep]

        wanted = pa.array(hit_ids, pa.string())
        hit_vecs: dict[str, np.ndarray] = {}
        for ids, mat in batches():  # pass 1: the hits' own vectors
            for j in np.flatnonzero(pc.is_in(ids, value_set=wanted).to_numpy(zero_copy_only=False)):
                hit_vecs.setdefault(ids[int(j)].as_py(), mat[j].copy())
        present = [h for h in hit_ids if h in hit_vecs]
        if present:
            vecs = np.stack([hit_vecs[h] for h in present])
            expander = HitExpander(threshold=threshold, k=k, check_unique=False).fit(present, vecs)
            for ids, mat in batches():  # pass 2: neighbours
                expander.partial_fit(ids.to_pylist(), mat)
            expansions = expander.results()
    return write_escalation_package(run_dir, matches=matches, r1_items=r1_items, expansions=expansions,
                                    run_fingerprint=run_fingerprint, references=refs)
