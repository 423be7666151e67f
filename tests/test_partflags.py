"""Packed screen / confirm flags in items parts (analyzer/partflags.py): pack and unpack give back the table, the
catalog's SQL decodes the same booleans (nulls included), more concepts than one flags column holds, and a
catalog refuses parts scored with other concepts."""
from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analyzer import partflags
from analyzer.errors import InputError


def _table(n_concepts: int, n: int = 64, seed: int = 0) -> tuple[pa.Table, list[str]]:
    rng = np.random.default_rng(seed)
    ids = [f"c{i}" for i in range(n_concepts)]
    cols = {"item_id": pa.array([f"i{k}" for k in range(n)]), "status": pa.array(["ok"] * n)}
    failed = rng.random(n) < 0.2  # rows that did not scan: every flag null
    for c in ids:
        cols[f"{c}_score"] = pa.array(rng.random(n).astype(np.float32), mask=failed)
        for point in ("screen", "confirm"):
            odd = rng.random(n) < 0.1  # and some flags null on their own
            cols[f"{c}_{point}"] = pa.array(rng.random(n) < 0.5, mask=failed | odd)
    return pa.table(cols), ids


@pytest.mark.parametrize("n_concepts", [1, 7, 15, 16, 40])
def test_pack_unpack_and_sql_decode_give_back_the_flags(n_concepts, tmp_path):
    table, ids = _table(n_concepts)
    packed = partflags.pack(table)
    assert not any(n.endswith(("_screen", "_confirm")) for n in packed.column_names)
    assert [n for n in packed.column_names if n.startswith("flags")] == \
        [f"flags{g}" for g in range((n_concepts + partflags.PER_COLUMN - 1) // partflags.PER_COLUMN)]
    assert partflags.unpack(packed).equals(table)
    pq.write_table(packed, tmp_path / "part.parquet")
    assert partflags.packed_concepts(pq.read_schema(tmp_path / "part.parquet")) == ids
    con = duckdb.connect()
    sel = ", ".join(["item_id", "status", *partflags.sql_columns(ids, True)])
    got = con.sql(f"SELECT {sel} FROM read_parquet('{tmp_path / 'part.parquet'}')").to_arrow_table()
    assert got.equals(table)
    assert partflags.pack(table.select(["item_id", "status"])).equals(table.select(["item_id", "status"]))


def test_catalog_refuses_parts_of_other_concepts(tmp_path):
    from analyzer.store.rundir import _packed_flags

    table, ids = _table(3)
    path = tmp_path / "part-00000.parquet"
    pq.write_table(partflags.pack(table), path)
    assert _packed_flags(path, ids) is True
    with pytest.raises(InputError, match="concepts"):
        _packed_flags(path, list(reversed(ids)))
    pq.write_table(table, path)  # an unpacked part (booleans): read as it is
    assert _packed_flags(path, ids) is False
