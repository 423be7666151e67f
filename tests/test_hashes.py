"""Known-hash matching on benign images generated here (gradients, shapes, noise; fixed seeds).

The hashes of these generated images stand in for a hash list: no real list, no real image is used.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageDraw

from analyzer.errors import InputError
from analyzer.hashes.matching import HashMatcher, item_hashes, load_hash_lists
from analyzer.hashes.pdq import PdqIndex, decode_rgb, pdq_from_bytes

T = Image.Transpose


# ------------------------------------------------------------------------------------------ generators
def scene(seed: int, size=(256, 192)) -> Image.Image:
    """A benign abstract picture: a coloured gradient with random ellipses and rectangles."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 255 / (w + h)], -1)
    base = (base * rng.uniform(0.3, 1, 3) + rng.uniform(0, 80, 3)) % 256
    im = Image.fromarray(base.astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(14):
        x0, y0, r = int(rng.integers(0, w)), int(rng.integers(0, h)), int(rng.integers(12, 70))
        col = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse([x0, y0, x0 + r, y0 + r], fill=col)
        else:
            draw.rectangle([x0, y0, x0 + int(r * 1.5), y0 + r], fill=col)
    return im


def noise(seed: int, size=(128, 128)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def flat(value=128, size=(128, 128)) -> Image.Image:
    return Image.new("RGB", size, (value, value, value))


def png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def jpeg(im: Image.Image, quality=70) -> bytes:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture(scope="module")
def originals():
    """Five listed pictures (quality >= 50 checked) and their PNG bytes."""
    ims, seed = [], 0
    while len(ims) < 5:
        im = scene(seed)
        if pdq_from_bytes(png(im), orientations="none")[1] >= 70:
            ims.append(im)
        seed += 1
    return ims


def write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return str(path)


# ------------------------------------------------------------------------------------------ item hashes
def test_item_hashes_columns_and_exact_digests(originals):
    data = [png(originals[0]), None, b"not an image at all", jpeg(originals[1])]
    cols = item_hashes(data)
    assert set(cols) == {"md5", "sha1", "sha256", "pdq", "pdq_quality", "hash_error"}
    assert cols["md5"][0] == hashlib.md5(data[0]).hexdigest()
    assert cols["sha1"][3] == hashlib.sha1(data[3]).hexdigest()
    assert cols["sha256"][0] == hashlib.sha256(data[0]).hexdigest()
    assert len(cols["pdq"][0]) == 64 and cols["pdq_quality"][0] >= 50 and cols["hash_error"][0] is None
    assert all(cols[c][1] is None for c in cols)  # no image -> nothing, no error
    # undecodable bytes: a per-item error, but the byte hashes are still there
    assert cols["pdq"][2] is None and "not a recognised image format" in cols["hash_error"][2]
    assert cols["md5"][2] == hashlib.md5(data[2]).hexdigest()


def test_flat_image_has_low_quality():
    cols = item_hashes([png(flat())])
    assert cols["pdq_quality"][0] < 50


def _bomb_png(width=100_000, height=100_000) -> bytes:
    """A PNG whose header claims 10^10 pixels (only a few bytes of data)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


def test_bad_images_give_per_item_errors(originals):
    good = png(originals[0])
    truncated = jpeg(originals[0])[:400]
    cols = item_hashes([_bomb_png(), truncated, b"", good[: len(good) // 2], good])
    errs = cols["hash_error"]
    assert "bomb" in errs[0] or "too large" in errs[0]
    assert errs[1] and errs[3]
    assert errs[2] == "empty image bytes"
    assert errs[4] is None and cols["pdq"][4] is not None
    with pytest.raises(Exception, match="too large"):
        decode_rgb(good, max_pixels=1000)


def test_odd_modes_are_converted_to_rgb(originals):
    base = originals[0]
    cmyk = io.BytesIO()
    base.convert("CMYK").save(cmyk, "JPEG", quality=95)
    pal = io.BytesIO()
    base.convert("P", palette=Image.Palette.ADAPTIVE).save(pal, "PNG")
    pal_alpha = io.BytesIO()
    base.convert("P", palette=Image.Palette.ADAPTIVE).save(pal_alpha, "PNG", transparency=0)
    gif = io.BytesIO()
    base.save(gif, "GIF", save_all=True, append_images=[noise(1, base.size)], duration=100, loop=0)
    i16 = io.BytesIO()
    Image.fromarray((np.asarray(base.convert("L"), dtype=np.uint16) * 257)).save(i16, "PNG")
    la = io.BytesIO()
    base.convert("LA").save(la, "PNG")
    cols = item_hashes([cmyk.getvalue(), pal.getvalue(), gif.getvalue(), i16.getvalue(), la.getvalue()])
    assert cols["hash_error"] == [None] * 5
    assert item_hashes([pal_alpha.getvalue()])["hash_error"] == [None]  # transparency composited on white
    ref = pdq_from_bytes(png(base), orientations="none")[0][0]
    for hx in cols["pdq"]:
        dist = int(np.unpackbits(np.frombuffer(bytes.fromhex(hx), np.uint8) ^ ref).sum())
        assert dist <= 31  # every conversion still looks like the same picture (GIF: the first frame)


def test_eps_is_refused_not_opened():
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    assert "not a recognised image format" in item_hashes([eps])["hash_error"][0]


# ------------------------------------------------------------------------------------------ exact + url
def test_exact_lists_match_and_name_the_list(tmp_path, originals):
    listed = [png(im) for im in originals[:2]]
    others = [png(im) for im in originals[2:]] + [png(noise(5))]
    md5s = write(tmp_path / "a.txt", "# a comment\n\n" + "\n".join(hashlib.md5(b).hexdigest().upper()
                                                                     for b in listed) + "\n")
    sha1s = write(tmp_path / "b.txt", hashlib.sha1(listed[1]).hexdigest() + "\n")
    sha256s = write(tmp_path / "c.csv", "sha256,note\n" + hashlib.sha256(listed[0]).hexdigest() + ",x\n")
    lists = load_hash_lists([f"first={md5s}", sha1s, sha256s])
    assert lists.names == ["first", "b", "c"] and [h.kind for h in lists] == ["md5", "sha1", "sha256"]
    ids = [f"i{k}" for k in range(len(listed + others))]
    matches = HashMatcher(lists).match_batch(ids, [None] * len(ids), listed + others)
    got = {(m["item_id"], m["list_name"], m["hash_kind"]) for m in matches}
    assert got == {("i0", "first", "md5"), ("i1", "first", "md5"), ("i1", "b", "sha1"), ("i0", "c", "sha256")}
    for m in matches:
        assert m["distance"] == 0
        assert m["item_hash"] == hashlib.new(m["hash_kind"], listed[int(m["item_id"][1])]).hexdigest()


URL_SPELLINGS = [
    ("http://images.example.org/a/b/photo.jpg", "HTTPS://Images.Example.ORG:443/a/./c/../b/photo.jpg#x"),
    ("http://images.example.org/a/b/photo.jpg", "http://images.example.org:80/a/b/photo.jpg/"),
    ("http://images.example.org/a/b/photo.jpg", "images.example.org/a/b/%70hoto.jpg"),
    ("http://example.net/x y.png?s=1", "https://user:pw@EXAMPLE.net/x%20y.png?s=1"),
]


@pytest.mark.parametrize("listed, item", URL_SPELLINGS)
def test_url_list_matches_other_spellings(tmp_path, listed, item):
    plain = write(tmp_path / "urls.txt", listed.replace(" ", "%20") + "\n")
    from analyzer.hashes.urls import url_digest
    hashed = write(tmp_path / "hashed.txt", url_digest(listed) + "\n")
    lists = load_hash_lists([f"url:plain={plain}", f"url:hashed={hashed}"])
    matcher = HashMatcher(lists)
    matches = matcher.match_batch(["a", "b", "c"], [item, "http://images.example.org/a/b/other.jpg", None],
                                  [None, None, None])
    assert {(m["item_id"], m["list_name"]) for m in matches} == {("a", "plain"), ("a", "hashed")}
    assert all(m["hash_kind"] == "url" and m["item_hash"] == url_digest(item) for m in matches)


# ------------------------------------------------------------------------------------------ PDQ
def _pdq_list(tmp_path, images, name="known") -> str:
    hexes = item_hashes([png(im) for im in images])["pdq"]
    return f"pdq:{name}=" + write(tmp_path / f"{name}.txt", "\n".join(hexes) + "\n")


def _variants(im: Image.Image) -> dict[str, bytes]:
    out = {f"png_{op.name}": png(im.transpose(op)) for op in
           (T.ROTATE_90, T.ROTATE_180, T.ROTATE_270, T.FLIP_LEFT_RIGHT, T.FLIP_TOP_BOTTOM, T.TRANSPOSE,
            T.TRANSVERSE)}
    out["jpeg70"] = jpeg(im, 70)
    out["jpeg70_rot180"] = jpeg(im.transpose(T.ROTATE_180), 70)
    out["jpeg70_flip_rot90"] = jpeg(im.transpose(T.FLIP_LEFT_RIGHT).transpose(T.ROTATE_90), 70)
    out["identical"] = png(im)
    return out


@pytest.mark.parametrize("use_faiss", [True, False])
def test_pdq_matches_rotated_flipped_and_reencoded_copies(tmp_path, originals, use_faiss):
    matcher = HashMatcher(load_hash_lists([_pdq_list(tmp_path, originals[:3])]), use_faiss=use_faiss)
    ids, images = [], []
    for k, im in enumerate(originals[:3]):
        for name, data in _variants(im).items():
            ids.append(f"{k}:{name}")
            images.append(data)
    # never listed: other generated pictures and noise
    for k, im in enumerate(originals[3:] + [noise(11), noise(12)]):
        for name, data in list(_variants(im).items())[:4]:
            ids.append(f"other{k}:{name}")
            images.append(data)
    matches = matcher.match_batch(ids, [None] * len(ids), images)
    by_id = {m["item_id"]: m for m in matches}
    expected = {i for i in ids if not i.startswith("other")}
    assert set(by_id) == expected, sorted(expected ^ set(by_id))
    for m in matches:
        assert m["hash_kind"] == "pdq" and m["list_name"] == "known" and 0 <= m["distance"] <= 31
        assert len(m["item_hash"]) == 64 and m["orientation"] is not None
    assert by_id["0:identical"]["distance"] == 0 and by_id["0:png_ROTATE_180"]["distance"] == 0


def test_pdq_low_quality_items_are_ignored(tmp_path, originals):
    # the flat image's own hash is on the list, yet it must not match: quality < 50
    spec = _pdq_list(tmp_path, [flat(), originals[0]])
    matches = HashMatcher(load_hash_lists([spec])).match_batch(["flat", "good"], [None, None],
                                                               [png(flat()), png(originals[0])])
    assert [m["item_id"] for m in matches] == ["good"]


def test_dihedral_mode_matches_plain_rotations(tmp_path, originals):
    matcher = HashMatcher(load_hash_lists([_pdq_list(tmp_path, originals[:1])]), orientations="dihedral")
    imgs = [png(originals[0]), png(originals[0].transpose(T.ROTATE_90)), png(originals[1])]
    assert [m["item_id"] for m in matcher.match_batch(["a", "b", "c"], None, imgs)] == ["a", "b"]


def test_scan_batch_gives_matches_and_hash_columns(tmp_path, originals):
    matcher = HashMatcher(load_hash_lists([_pdq_list(tmp_path, originals[:1])]))
    matches, cols = matcher.scan_batch(["a", "b"], [None, None], [png(originals[0]), b"\x00garbage"])
    assert [m["item_id"] for m in matches] == ["a"]
    assert cols["hash_error"][0] is None and cols["hash_error"][1]


@pytest.mark.parametrize("use_faiss", [True, False])
def test_pdq_index_radius_boundary_is_exact(use_faiss):
    rng = np.random.default_rng(7)
    db = rng.integers(0, 256, (5000, 32), dtype=np.uint8)
    query = db[123].copy()
    bits = np.unpackbits(query)
    near, far = bits.copy(), bits.copy()
    near[:31] ^= 1  # distance 31: inside
    far[:32] ^= 1  # distance 32: outside
    db[10], db[20] = np.packbits(near), np.packbits(far)
    lims, dist, rows = PdqIndex(db, use_faiss=use_faiss).build().range_search(query[None, :], 31)
    got = dict(zip(rows.tolist(), dist.tolist()))
    brute = np.unpackbits(db ^ query, axis=1).sum(axis=1)
    assert got == {int(r): int(brute[r]) for r in np.flatnonzero(brute <= 31)}
    assert got[123] == 0 and got[10] == 31 and 20 not in got


# ------------------------------------------------------------------------------------------ list files
def test_list_spec_forms(tmp_path, originals):
    data = png(originals[0])
    md5 = hashlib.md5(data).hexdigest()
    csv_path = tmp_path / "lists.csv"
    csv_path.write_text(f"id,digest\n1,{md5}\n")
    gz_path = tmp_path / "zipped.txt.gz"
    gz_path.write_bytes(gzip.compress((md5 + "\n").encode()))
    lists = load_hash_lists([f"md5:named={csv_path}:digest", str(gz_path)])
    assert lists.names == ["named", "zipped"] and lists.kinds == {"md5"}
    assert lists.summary()[0]["n_entries"] == 1 and len(lists.summary()[0]["file_sha256"]) == 64
    assert len(HashMatcher(lists).match_batch(["x"], [None], [data])) == 2


BAD_LISTS = [
    ("bad_hex.txt", "d41d8cd98f00b204e9800998ecf8427e\nzz1d8cd98f00b204e9800998ecf8427e\n", "", r"bad_hex.txt:2"),
    ("mixed.txt", "d41d8cd98f00b204e9800998ecf8427e\nda39a3ee5e6b4b0d3255bfef95601890afd80709\n", "",
     r"mixed.txt:2: expected a 32-hex-digit md5"),
    ("ambiguous.txt", "# sha256 or pdq?\n" + "ab" * 32 + "\n", "", r"ambiguous.txt:2: .*sha256:NAME=PATH"),
    ("short.txt", "abc\n", "", r"short.txt:1"),
    ("wrong_kind.txt", "d41d8cd98f00b204e9800998ecf8427e\n", "pdq:", r"wrong_kind.txt:1: expected a 64-hex"),
    ("empty.txt", "# nothing here\n\n", "", r"expected at least one hash entry"),
    ("nocol.csv", "a,b\n1,2\n", "", r"expected one hash column"),
    ("empty.csv", "", "", r"expected a CSV header row"),
    ("ragged.csv", "x,md5\n1\n", "", r"ragged.csv:2: expected a value in column 'md5'"),
    ("kindclash.csv", "pdq\n" + "ab" * 32 + "\n", "sha256:", r"spec says"),
    ("spaces_url.txt", "http://example.org/a b c\n", "url:", r"spaces_url.txt:1"),
]


@pytest.mark.parametrize("fname, text, prefix, pattern", BAD_LISTS)
def test_malformed_lists_raise_one_clear_line(tmp_path, fname, text, prefix, pattern):
    path = tmp_path / fname
    path.write_text(text)
    with pytest.raises(InputError, match=pattern) as err:
        load_hash_lists([prefix + str(path)])
    assert "\n" not in str(err.value)


def test_list_file_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_hash_lists([str(tmp_path / "missing.txt")])
    (tmp_path / "latin1.txt").write_bytes(b"# caf\xe9\n")
    with pytest.raises(InputError, match=r"latin1.txt:1: expected UTF-8"):
        load_hash_lists([str(tmp_path / "latin1.txt")])
    (tmp_path / "broken.txt.gz").write_bytes(b"\x1f\x8bnot gzip")
    with pytest.raises(InputError, match="gzip"):
        load_hash_lists([str(tmp_path / "broken.txt.gz")])
    a = write(tmp_path / "same.txt", "d41d8cd98f00b204e9800998ecf8427e\n")
    with pytest.raises(InputError, match="distinct hash list names"):
        load_hash_lists([a, a])
    with pytest.raises(InputError, match="KIND"):
        load_hash_lists([""])


def test_match_batch_checks_lengths(tmp_path):
    lists = load_hash_lists([write(tmp_path / "a.txt", "d41d8cd98f00b204e9800998ecf8427e\n")])
    with pytest.raises(InputError, match="one length"):
        HashMatcher(lists).match_batch(["a", "b"], [None], [None, None])
    with pytest.raises(InputError, match="image bytes"):
        HashMatcher(lists).match_batch(["a"], [None], ["not bytes"])
    # the md5 of empty bytes is on the list: empty bytes still match exactly
    assert HashMatcher(lists).match_batch(["a"], [None], [b""])[0]["hash_kind"] == "md5"


def test_digests_with_trailing_zero_bytes_match(tmp_path):
    # exact matching works on any bytes (even undecodable ones), including digests that end in NUL bytes
    data = next(b for b in (f"blob-{i}".encode() for i in range(100000)) if hashlib.md5(b).digest()[-1] == 0)
    lists = load_hash_lists([write(tmp_path / "z.txt", hashlib.md5(data).hexdigest() + "\n")])
    matches = HashMatcher(lists).match_batch(["z", "y"], None, [data, data[:-1]])
    assert [m["item_id"] for m in matches] == ["z"] and matches[0]["item_hash"].endswith("00")
