"""The one decoder, cast and normaliser of vectors (analyzer/vectors.py), against plain numpy."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from analyzer.errors import InputError
from analyzer.vectors import embedding_matrix, finite_rows, float16_binary, to_float16, to_float32, unit_rows


def test_finite_rows_equals_numpy_for_every_float16_value():
    every = np.arange(65536, dtype=np.uint16).view(np.float16)
    rows = np.random.default_rng(0).standard_normal((4096, 67)).astype(np.float16)
    for i, v in enumerate(every):  # each float16 value once in some row
        if i % 3:
            rows[i % 4096, (i * 7) % 67] = v
    rows[8] = np.float16(65504)  # the largest finite value: finite
    want = np.isfinite(rows).all(axis=1)
    assert (~want).sum() > 3 and want.sum() > 3
    assert np.array_equal(finite_rows(rows), want)
    ro = np.frombuffer(rows.tobytes(), dtype=np.float16).reshape(rows.shape)  # read-only, as Arrow hands it over
    assert np.array_equal(finite_rows(ro), want)
    assert finite_rows(rows[:, :3][::2]).shape == (2048,)  # non-contiguous
    clean = np.ones((5, 4), np.float16)
    assert finite_rows(clean).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_finite_rows_of_wider_types(dtype):
    m = np.ones((6, 3), dtype=dtype)
    m[1, 2], m[3, 0], m[4, 1] = np.nan, np.inf, np.finfo(dtype).max  # a huge finite row overflows its sum
    assert finite_rows(m).tolist() == [True, False, True, False, True, True]


def test_unit_rows_normalises_and_handles_zero_tiny_and_huge_rows():
    m = np.array([[3, 4, 0], [0, 0, 0], [1e-30, 0, 0], [1e30, 1e30, 0]], dtype=np.float32)
    unit, norms = unit_rows(m)
    assert unit.dtype == np.float32 and norms.dtype == np.float64
    np.testing.assert_allclose(unit[0], [0.6, 0.8, 0], rtol=1e-6)
    assert norms[1] == 0 and not unit[1].any()
    np.testing.assert_allclose(unit[2], [1, 0, 0], rtol=1e-6)
    np.testing.assert_allclose(unit[3], [2 ** -0.5, 2 ** -0.5, 0], rtol=1e-6)
    np.testing.assert_allclose(norms[3], np.sqrt(2) * 1e30, rtol=1e-6)


def test_casts_round_as_numpy():
    x = np.random.default_rng(1).standard_normal((50, 9)).astype(np.float32)
    assert np.array_equal(to_float16(x), x.astype(np.float16))
    h = to_float16(x)
    assert np.array_equal(to_float32(h), h.astype(np.float32)) and to_float32(x) is x


@pytest.mark.parametrize("layout", ["list", "fixed", "binary"])
def test_embedding_matrix_decodes_every_layout(layout):
    v = np.random.default_rng(2).standard_normal((7, 5)).astype(np.float16)
    if layout == "binary":
        col = float16_binary(v)
    elif layout == "fixed":
        col = pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1), type=pa.float16()), 5)
    else:
        col = pa.array(v.tolist(), type=pa.list_(pa.float16()))
    mat, valid = embedding_matrix(col)
    assert valid.all() and np.array_equal(mat, v.astype(np.float32))
    raw, _ = embedding_matrix(col, widen=False)
    assert raw.dtype == np.float16 and np.array_equal(raw, v)


def test_embedding_matrix_marks_null_short_and_non_finite_rows_invalid():
    col = pa.array([[1.0, 2.0], None, [1.0], [1.0, float("nan")], [0.5, 0.5]], type=pa.list_(pa.float32()))
    mat, valid = embedding_matrix(col)
    assert valid.tolist() == [True, False, False, False, True]
    assert not mat[3].any()
    with pytest.raises(InputError, match="lists of floats"):
        embedding_matrix(pa.array(["a", "b"]))
