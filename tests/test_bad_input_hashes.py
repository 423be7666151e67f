"""`analyzer hashes check-list | match | compute`: the CLI over analyzer.hashes.matching, good and bad input.

Images are benign pictures generated here (gradients and shapes, fixed seeds); their own hashes stand in for
a known-hash list. No model is loaded: these commands never embed or tag.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw

from test_bad_input import assert_one_line_error, cli, tree_digest

T = Image.Transpose


def scene(seed: int, size=(192, 144)) -> Image.Image:
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 255 / (w + h)], -1)
    im = Image.fromarray(((base * rng.uniform(0.3, 1, 3) + rng.uniform(0, 80, 3)) % 256).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(12):
        x0, y0, r = int(rng.integers(0, w)), int(rng.integers(0, h)), int(rng.integers(12, 60))
        draw.ellipse([x0, y0, x0 + r, y0 + r], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    return im


def encode(im: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture()
def dataset(tmp_path):
    """An image folder: a listed image, its rotated + re-encoded copy, an unrelated image, a corrupt file."""
    from analyzer.hashes.matching import item_hashes

    root = tmp_path / "images"
    root.mkdir()
    listed, other = scene(1), scene(2)
    (root / "listed.png").write_bytes(encode(listed))
    (root / "rotated.jpg").write_bytes(encode(listed.transpose(T.ROTATE_90), "JPEG", quality=70))
    (root / "other.png").write_bytes(encode(other))
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    lists = tmp_path / "lists"
    lists.mkdir()
    md5 = hashlib.md5((root / "listed.png").read_bytes()).hexdigest()
    (lists / "md5.txt").write_text(f"# generated test list\n{md5}\n" + "0" * 32 + "\n")
    pdq = item_hashes([encode(listed)])["pdq"][0]
    (lists / "pdq.csv").write_text(f"id,pdq\n1,{pdq}\n")
    (lists / "sha1.txt.gz").write_bytes(gzip.compress(("f" * 40 + "\n").encode()))
    return {"root": root, "lists": lists, "md5": md5, "pdq": pdq}


def test_check_list_summarises_good_lists(dataset, capsys):
    lists = dataset["lists"]
    code, out, err = cli(["hashes", "check-list", lists / "md5.txt", f"pdq:partner={lists / 'pdq.csv'}",
                          lists / "sha1.txt.gz", "--json"], capsys)
    assert code == 0, err
    got = {r["name"]: r for r in json.loads(out)}
    assert got["md5"]["kind"] == "md5" and got["md5"]["n_entries"] == 2
    assert got["partner"]["kind"] == "pdq" and got["partner"]["column"] == "pdq"
    assert got["sha1"]["kind"] == "sha1" and got["sha1"]["n_entries"] == 1
    assert got["md5"]["file_sha256"] == hashlib.sha256((lists / "md5.txt").read_bytes()).hexdigest()
    code, out, _ = cli(["hashes", "check-list", lists / "md5.txt"], capsys)
    assert code == 0 and "md5: md5 list, 2 unique entries" in out and "1 list(s) OK" in out


@pytest.mark.parametrize("content, spec, needle", [
    ("d41d8cd98f00b204e9800998ecf8427e\nzz\n", "{p}", "list.txt:2"),
    ("ab" * 32 + "\n", "{p}", "sha256"),
    ("# nothing here\n", "{p}", "at least one hash"),
    ("d41d8cd98f00b204e9800998ecf8427e\n", "{p} {p}", "twice"),
    ("d41d8cd98f00b204e9800998ecf8427e\n", "sha1:{p}", "40-hex"),
    ("d41d8cd98f00b204e9800998ecf8427e\n", "{p}.missing", "hash list file"),
    ("https://example.org/a b\n", "url:{p}", "whitespace"),
])
def test_check_list_rejects_malformed_lists(tmp_path, capsys, content, spec, needle):
    p = tmp_path / "list.txt"
    p.write_text(content)
    code, out, err = cli(["hashes", "check-list", *spec.format(p=p).split()], capsys)
    assert_one_line_error(code, err, needle)
    assert out == ""


def test_match_finds_exact_and_rotated_copies_only(dataset, tmp_path, capsys):
    before = tree_digest(dataset["root"])
    out = tmp_path / "matches.parquet"
    code, stdout, err = cli(["hashes", "match", dataset["root"], "--hash-list", f"known={dataset['lists'] / 'md5.txt'}",
                             "--hash-list", f"near={dataset['lists'] / 'pdq.csv'}", "--out", out, "-q"], capsys)
    assert code == 0, err
    rows = pq.read_table(out).to_pylist()
    got = {(r["item_id"], r["list_name"]) for r in rows}
    assert got == {("listed.png", "known"), ("listed.png", "near"), ("rotated.jpg", "near")}
    rot = next(r for r in rows if r["item_id"] == "rotated.jpg")
    assert rot["hash_kind"] == "pdq" and 0 <= rot["distance"] <= 31 and rot["orientation"] != "orig"
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    assert "3 match(es)" in stdout and "known: 1" in stdout and "near: 2" in stdout
    assert tree_digest(dataset["root"]) == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_match_exit_code_and_csv_output(dataset, tmp_path, capsys):
    out = tmp_path / "m.csv"
    code, _, err = cli(["hashes", "match", dataset["root"], "--hash-list", dataset["lists"] / "md5.txt", "--out", out,
                        "--fail-on-match", "-q"], capsys)
    assert code == 1, err
    assert out.read_text().splitlines()[0].replace('"', "").startswith("item_id,list_name,hash_kind")
    clean = tmp_path / "clean"
    clean.mkdir()
    (clean / "x.png").write_bytes(encode(scene(9)))
    code, _, err = cli(["hashes", "match", clean, "--hash-list", dataset["lists"] / "md5.txt", "--out",
                        tmp_path / "none.parquet", "--fail-on-match", "-q"], capsys)
    assert code == 0, err
    assert pq.read_table(tmp_path / "none.parquet").num_rows == 0


def test_match_bad_arguments_write_nothing(dataset, tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_text("not a hash\n")
    taken = tmp_path / "taken.parquet"
    taken.write_bytes(b"keep me")
    before = tree_digest(dataset["root"])
    cases = [
        (["--hash-list", bad, "--out", tmp_path / "a.parquet"], "bad.txt:1"),
        (["--hash-list", dataset["lists"] / "md5.txt", "--out", taken], "new file"),
        (["--hash-list", dataset["lists"] / "md5.txt", "--out", tmp_path / "a.json"], "FILE.parquet"),
        (["--hash-list", dataset["lists"] / "md5.txt", "--out", dataset["root"] / "m.parquet"], "outside"),
        (["--hash-list", dataset["lists"] / "md5.txt", "--out", tmp_path / "no" / "dir" / "m.parquet"], "existing"),
        (["--hash-list", dataset["lists"] / "md5.txt", "--out", tmp_path / "a.parquet", "--max-distance", "999"],
         "0..256"),
        (["--hash-list", dataset["lists"] / "md5.txt", "--out", tmp_path / "a.parquet", "--batch-size", "0"],
         "batch-size"),
    ]
    for extra, needle in cases:
        code, _, err = cli(["hashes", "match", dataset["root"], *extra, "-q"], capsys)
        assert_one_line_error(code, err, needle)
    assert not (tmp_path / "a.parquet").exists() and taken.read_bytes() == b"keep me"
    assert tree_digest(dataset["root"]) == before


def test_compute_writes_hashes_and_per_item_errors(dataset, tmp_path, capsys):
    out = tmp_path / "hashes.parquet"
    code, stdout, err = cli(["hashes", "compute", dataset["root"], "--out", out, "-q"], capsys)
    assert code == 0, err
    rows = {r["item_id"]: r for r in pq.read_table(out).to_pylist()}
    assert set(rows) == {"listed.png", "rotated.jpg", "other.png", "corrupt.png"}
    assert rows["listed.png"]["md5"] == dataset["md5"] and rows["listed.png"]["pdq"] == dataset["pdq"]
    assert rows["listed.png"]["hash_error"] is None and rows["listed.png"]["pdq_quality"] >= 50
    corrupt = (dataset["root"] / "corrupt.png").read_bytes()
    assert rows["corrupt.png"]["sha256"] == hashlib.sha256(corrupt).hexdigest()  # bytes hashed even so
    assert rows["corrupt.png"]["pdq"] is None and rows["corrupt.png"]["hash_error"]
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    assert "hashed 4 images of 4 items" in stdout


def test_match_a_run_uses_its_recorded_inputs(tmp_path, capsys):
    """`hashes match RUN`: a list received after the scan, matched against the run's inputs (run untouched)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "_SUCCESS").write_text("ok\n")
    data = tmp_path / "data.csv"
    data.write_text("id,caption,url\n1,a red bicycle,https://Shop.Example.org/img/1.jpg\n2,a blue kite,\n")
    (run / "config.resolved.yaml").write_text(
        f"input_args: ['{tmp_path / '*.csv'}']\ncolumns: {{text: caption, id: id, url: null, source: null, "
        "embedding: null}\n")
    urls = tmp_path / "urls.txt"
    urls.write_text("http://shop.example.org/img/1.jpg\n")
    before = tree_digest(run)
    out = tmp_path / "m.parquet"
    code, _, err = cli(["hashes", "match", run, "--hash-list", f"url:{urls}", "--out", out, "-q"], capsys)
    assert code == 0, err
    assert [(r["item_id"], r["hash_kind"]) for r in pq.read_table(out).to_pylist()] == [("1", "url")]
    assert tree_digest(run) == before
    (run / "_SUCCESS").unlink()
    code, _, err = cli(["hashes", "match", run, "--hash-list", f"url:{urls}", "--out", tmp_path / "m2.parquet"],
                       capsys)
    assert_one_line_error(code, err, "complete run")
