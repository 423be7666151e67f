"""The screen / confirm flags of an items part, packed into 64-bit integer columns.

An items part carries, per concept, ``<concept>_score`` (float32) and the booleans ``<concept>_screen`` and
``<concept>_confirm``. Parquet writes fourteen boolean columns (seven concepts) in 5.3 ms a 32,768-row part and
one integer column in 0.9 ms, and the part writer is one of the scan's busiest threads. So :func:`pack` replaces
the booleans with ``flags0`` (concepts 0-14 of the part's concept order), ``flags1`` (15-29), ...: four bits for
the k-th concept of a column, from bit ``4k``: screen is set, screen, confirm is set, confirm (a flag is null
where its row did not scan). The concept order is recorded in the part's schema metadata.

The catalog's views decode them (:func:`sql_columns`), so ``items``, ``item_scores``, ``scanned`` and the rest
show the same boolean columns as before; :func:`unpack` gives back the table that was packed (pyarrow readers of
a part, tests).
"""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

PER_COLUMN = 15  # concepts per 64-bit flags column (4 bits each)
POINTS = ("screen", "confirm")
META_KEY = b"analyzer.flag_concepts"


def flag_concepts(table: pa.Table) -> list[str]:
    """The concepts of an unpacked items table, in its column order: ``<c>_score`` with boolean ``<c>_screen``
    and ``<c>_confirm`` columns."""
    names = set(table.column_names)
    return [n[:-len("_score")] for n in table.column_names
            if n.endswith("_score") and all(f"{n[:-6]}_{p}" in names for p in POINTS)
            and all(pa.types.is_boolean(table.schema.field(f"{n[:-6]}_{p}").type) for p in POINTS)]


def pack(table: pa.Table) -> pa.Table:
    """``table`` with its boolean ``<concept>_screen`` / ``_confirm`` columns packed into ``flags0``, ``flags1``,
    ... (unchanged when it has none)."""
    concepts = flag_concepts(table)
    if not concepts:
        return table
    n = table.num_rows
    packed = []
    for g in range(0, len(concepts), PER_COLUMN):
        bits = np.zeros(n, dtype=np.int64)
        for k, c in enumerate(concepts[g:g + PER_COLUMN]):
            for j, point in enumerate(POINTS):
                col = table.column(f"{c}_{point}")
                shift = 4 * k + 2 * j
                value = np.asarray(pc.fill_null(col, False).to_numpy(zero_copy_only=False), dtype=np.int64)
                valid = 1 if col.null_count == 0 else \
                    np.asarray(col.is_valid().to_numpy(zero_copy_only=False), dtype=np.int64)
                bits |= (valid << shift) | (value << (shift + 1))
        packed.append(pa.array(bits))
    out = table.drop_columns([f"{c}_{p}" for c in concepts for p in POINTS])
    for g, arr in enumerate(packed):
        out = out.append_column(f"flags{g}", arr)
    meta = dict(out.schema.metadata or {})
    meta[META_KEY] = json.dumps(concepts).encode()
    return out.replace_schema_metadata(meta)


def packed_concepts(schema: pa.Schema) -> list[str] | None:
    """The concept order of a packed part (from its schema), or None for a part with boolean columns."""
    raw = (schema.metadata or {}).get(META_KEY)
    return json.loads(raw) if raw is not None and "flags0" in schema.names else None


def unpack(table: pa.Table) -> pa.Table:
    """The table :func:`pack` was given (columns in its order, nulls where the flags were null)."""
    concepts = packed_concepts(table.schema)
    if concepts is None:
        return table
    flags = {}
    for i, c in enumerate(concepts):
        bits = np.asarray(table.column(f"flags{i // PER_COLUMN}").to_numpy(), dtype=np.int64)
        k = 4 * (i % PER_COLUMN)
        flags[c] = [pa.array(((bits >> (k + 2 * j + 1)) & 1).astype(bool), mask=((bits >> (k + 2 * j)) & 1) == 0)
                    for j in (0, 1)]
    cols, names = [], []
    for name in table.column_names:
        if name.startswith("flags") and name[5:].isdigit():
            continue
        cols.append(table.column(name))
        names.append(name)
        if name.endswith("_score") and name[:-6] in flags:
            screen, confirm = flags[name[:-6]]
            cols += [screen, confirm]
            names += [f"{name[:-6]}_screen", f"{name[:-6]}_confirm"]
    meta = {k: v for k, v in (table.schema.metadata or {}).items() if k != META_KEY}
    return pa.Table.from_arrays(cols, names=names).replace_schema_metadata(meta or None)


def sql_columns(concepts: list[str], packed: bool, alias: str = "") -> list[str]:
    """SELECT expressions of the ``<concept>_score``, ``_screen``, ``_confirm`` columns of a part's rows
    (``alias.`` before each column); the flags decoded from ``flagsN`` when ``packed``. Concept ids are checked
    identifiers (store.concept_columns), never user text."""
    p = f"{alias}." if alias else ""
    out = []
    for i, c in enumerate(concepts):
        out.append(f"{p}{c}_score AS {c}_score")
        if packed:
            col, k = f"{p}flags{i // PER_COLUMN}", 4 * (i % PER_COLUMN)
            out += [f"CASE WHEN (({col} >> {k + 2 * j}) & 1) = 1 THEN (({col} >> {k + 2 * j + 1}) & 1) = 1 END "
                    f"AS {c}_{point}" for j, point in enumerate(POINTS)]
        else:
            out += [f"{p}{c}_screen AS {c}_screen", f"{p}{c}_confirm AS {c}_confirm"]
    return out
