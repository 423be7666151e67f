"""Bad items inside otherwise good inputs: a per-item error row, and the rest of the run goes on.

Four small scans share their inputs (module fixtures) and the MiniLM model the process already loaded:

- parquet with NaN, inf, zero-norm and short embeddings, duplicate / null / empty ids, a 1 MB caption, a
  caption that was not UTF-8, and column names that are SQL fragments;
- JSONL with lines that are not JSON objects, and a CSV with bytes that are not UTF-8;
- webdataset shards with `../`, absolute, symlink, hard-link and device members, a pickled `.npy` member and a
  shard cut short;
- an image folder (tiny random open_clip model) with corrupt, truncated, empty, bomb and non-image files,
  symlinks out of the folder, broken, to /proc, and inside it; hash lists are matched in the same scan.

The complete parquet run then serves the other entry points: query injection, report / signoff / apply on
bad arguments. Fixture safety: benign captions only, generated noise images and vectors.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import tarfile
import zlib
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from test_bad_input import assert_one_line_error, cli, tar_add, tree_digest, vec, write_parquet

pytestmark = pytest.mark.slow  # the fast tier (make test-fast) leaves these end-to-end scans out

TEXT_COL = 'caption"; DROP TABLE items; --'
SOURCE_COL = "src'); DELETE FROM items; --"


def _items(run: Path) -> dict[str, dict]:
    con = duckdb.connect(str(run / "analysis.duckdb"), read_only=True)
    try:
        rows = con.execute("SELECT item_id, status, error, text, row_idx FROM items ORDER BY row_idx").fetchall()
        scored = {r[0] for r in con.execute("SELECT item_id FROM item_scores").fetchall()}
    finally:
        con.close()
    out = {}
    for item_id, status, error, text, row_idx in rows:
        key = item_id if item_id not in out else f"{item_id}#{row_idx}"
        out[key] = {"status": status, "error": error, "text": text, "scored": item_id in scored, "row": row_idx}
    return out


def _complete(run: Path) -> None:
    for name in ("_SUCCESS", "summary.json", "report.html", "analysis.duckdb"):
        assert (run / name).exists(), name


def _main(argv) -> tuple[int, str, str]:
    """In-process CLI call usable from module fixtures (no capsys there)."""
    import contextlib

    from analyzer.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


# ---- 1. tabular rows with bad values ----------------------------------------------------------------------

ONE_MB_CAPTION = ("a quiet harbour at dawn with fishing boats " * 25_000)[:1_000_000]


@pytest.fixture(scope="module")
def tabular(tmp_path_factory):
    base = tmp_path_factory.mktemp("tabular")
    src = base / "in"
    nan, inf = vec(1), vec(2)
    nan[3], inf[0] = float("nan"), float("-inf")
    rows = [  # (id, caption, source, embedding)
        ("ok_vec", "a red bicycle", "site-a", vec(3)),
        ("nan_vec", "a red bicycle", "site-a", nan),
        ("inf_vec", "a red bicycle", "site-a", inf),
        ("zero_vec", "a red bicycle", "site-a", [0.0] * 896),
        ("short_vec", "a red bicycle", "site-a", [0.5] * 10),
        ("dup", "a pine tree", "site-b", vec(4)),
        ("dup", "another pine tree", "site-b", vec(5)),
        (None, "a yellow taxi", "site-b", None),
        ("", "a small boat", "site-b", None),
        ("long_caption", ONE_MB_CAPTION, "site-c", None),
        ("mojibake", b"caf\xe9 au lait \xff\xfe".decode("utf-8", "replace"), "site-c", None),
        ("no_content", None, "site-c", None),
        ("ok_text", "a bowl of green apples", None, None),
    ]
    table = pa.table({
        "id": pa.array([r[0] for r in rows], pa.string()),
        TEXT_COL: pa.array([r[1] for r in rows], pa.string()),
        SOURCE_COL: pa.array([r[2] for r in rows], pa.string()),
        "emb": pa.array([r[3] for r in rows], pa.list_(pa.float32())),
        "url": pa.array(["https://Site-A.example/img/bicycle.jpg"] + [None] * (len(rows) - 1), pa.string()),
    })
    data = write_parquet(src / "rows.parquet", table)
    # A JSONL file in the same scan (one tabular input kind): lines that are not JSON objects, odd types.
    first = {"id": "j1", TEXT_COL: "a wooden boat", SOURCE_COL: "site-j", "emb": vec(6)}
    lines = [json.dumps(first).encode(), b"this line is not json", b"[1, 2, 3]", b"",
             json.dumps({"id": {"nested": 1}, TEXT_COL: 42, SOURCE_COL: "site-j", "emb": None}).encode(),
             json.dumps({"id": "j5", TEXT_COL: "a lighthouse RAW", SOURCE_COL: "site-j"}).encode()
             .replace(b"RAW", b"\xff\xfe")]  # bytes that are not UTF-8 inside a JSON string
    (src / "lines.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    before = tree_digest(src)
    out = base / "run"
    code, stdout, err = _main(["scan", data, src / "lines.jsonl", "--out", out, "--text-column", TEXT_COL,
                               "--source-column", SOURCE_COL, "--id-column", "id", "--embedding-column", "emb",
                               "--embedding-modality", "text", "-q"])
    return {"code": code, "out": out, "err": err, "stdout": stdout, "src": src, "before": before, "data": data}


def test_bad_values_become_error_rows_and_the_run_completes(tabular):
    assert tabular["code"] == 0, tabular["err"]
    _complete(tabular["out"])
    items = _items(tabular["out"])
    assert len(items) == 18
    expect_error = {"nan_vec": "not finite", "inf_vec": "not finite", "zero_vec": "zero norm",
                    "short_vec": "length", "no_content": "nothing to scan"}
    for item_id, why in expect_error.items():
        assert items[item_id]["status"] == "error" and why in items[item_id]["error"], (item_id, items[item_id])
        assert not items[item_id]["scored"]
    for item_id in ("ok_vec", "dup", "long_caption", "mojibake", "ok_text"):
        assert items[item_id]["status"] == "ok" and items[item_id]["scored"], item_id
    summary = json.loads((tabular["out"] / "summary.json").read_text())
    # five bad values + one duplicate id in the parquet, two unparsable lines in the JSONL
    assert summary["items_total"] == 18 and summary["items_failed"] == 8


def test_duplicate_ids_keep_the_first_and_flag_the_rest(tabular):
    items = _items(tabular["out"])
    dups = sorted((v for k, v in items.items() if k.split("#")[0] == "dup"), key=lambda v: v["row"])
    assert [d["status"] for d in dups] == ["ok", "error"]
    assert "duplicate" in dups[1]["error"]


def test_null_and_empty_ids_get_the_documented_fallback(tabular):
    from analyzer.ingest import make_item_id

    items = _items(tabular["out"])
    assert None not in items
    for caption in ("a yellow taxi", "a small boat"):
        fid = make_item_id(None, caption)
        assert items[fid]["status"] == "ok" and items[fid]["text"] == caption


def test_huge_and_non_utf8_captions_are_kept_whole(tabular):
    items = _items(tabular["out"])
    assert items["long_caption"]["text"] == ONE_MB_CAPTION
    assert "\ufffd" in items["mojibake"]["text"]


def test_sql_fragments_as_column_names_are_only_names(tabular):
    con = duckdb.connect(str(tabular["out"] / "analysis.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM items").fetchone()[0] == 18
        sources = {r[0] for r in con.execute("SELECT DISTINCT source FROM items").fetchall()}
    finally:
        con.close()
    assert {"site-a", "site-b", "site-c", "site-j", "unknown"} == sources


def test_the_tabular_input_is_unchanged(tabular):
    assert tree_digest(tabular["src"]) == tabular["before"]


def test_hashes_match_on_the_run_reads_its_recorded_inputs(tabular, tmp_path, capsys):
    urls = tmp_path / "urls.txt"
    urls.write_text("# list received after the scan\nhttp://site-a.example/img/bicycle.jpg\n")
    before = tree_digest(tabular["out"])
    code, _, err = cli(["hashes", "match", tabular["out"], "--hash-list", f"url:late={urls}", "--out",
                        tmp_path / "late.parquet", "-q"], capsys)
    assert code == 0, err
    rows = pq.read_table(tmp_path / "late.parquet").to_pylist()
    assert [(r["item_id"], r["list_name"]) for r in rows] == [("ok_vec", "late")]
    assert tree_digest(tabular["out"]) == before and tree_digest(tabular["src"]) == tabular["before"]


# ---- 2. JSONL lines that do not parse; CSV bytes that are not UTF-8 ------------------------------------------

def test_unparsable_lines_are_rows_with_their_own_ids(tabular):
    items = _items(tabular["out"])
    bad = {k: v for k, v in items.items() if k.startswith("lines.jsonl:")}
    assert set(bad) == {"lines.jsonl:row14", "lines.jsonl:row15"}  # unique: not duplicates of an empty row
    assert all(v["status"] == "error" and "not a JSON object" in v["error"] for v in bad.values())
    assert items["j1"]["status"] == "ok" and items["j5"]["status"] == "ok"
    assert "\ufffd" in items["j5"]["text"]  # raw 0xff 0xfe bytes decoded with replacement, the row kept
    assert items['{"nested": 1}']["text"] == "42"


def test_jsonl_batch_whose_embeddings_are_all_null(tmp_path):  # reader level: no scan needed
    from analyzer.ingest import ColumnSpec, open_input

    p = tmp_path / "null_emb.jsonl"
    p.write_text('{"id": "a", "caption": "a red bicycle", "emb": null}\n{"id": "b", "caption": "a kite"}\n')
    rows = [r for b in open_input([str(p)], ColumnSpec(embedding="emb")).iter_batches(16) for r in b.to_pylist()]
    assert [(r["item_id"], r["status"], r["embedding"]) for r in rows] == [("a", "ok", None), ("b", "ok", None)]


def test_csv_bytes_that_are_not_utf8_are_replaced_not_fatal(tmp_path):  # reader level: no scan needed
    from analyzer.ingest import ColumnSpec, open_input

    p = tmp_path / "latin1.csv"
    p.write_bytes(b'id,caption\nc1,"caf\xe9 on a terrace"\nc2,"a caption\nover two lines"\n')
    reader = open_input([str(p)], ColumnSpec())
    rows = [r for b in reader.iter_batches(16) for r in b.to_pylist()]
    assert [r["item_id"] for r in rows] == ["c1", "c2"] and all(r["status"] == "ok" for r in rows)
    assert "\ufffd" in rows[0]["text"] and rows[1]["text"] == "a caption\nover two lines"


# ---- 3. webdataset members that must never be read ----------------------------------------------------------

def test_unsafe_tar_members_are_refused_row_by_row(tmp_path):
    src = tmp_path / "shards"
    src.mkdir()
    marker = tmp_path / "executed"

    class Payload:  # a pickled .npy member: np.load(allow_pickle=False) must refuse it unexecuted
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    pickled = io.BytesIO()
    np.save(pickled, np.array([Payload()], dtype=object), allow_pickle=True)
    with tarfile.open(src / "shard-0.tar", "w") as tf:
        tar_add(tf, "0001.txt", b"a wooden table")
        tar_add(tf, "../escape.txt", b"a caption that would land outside")
        tar_add(tf, "/tmp/absolute.txt", b"a caption with an absolute name")
        tar_add(tf, "0002.txt", type=tarfile.SYMTYPE, linkname="/etc/passwd")
        tar_add(tf, "0003.txt", type=tarfile.LNKTYPE, linkname="0001.txt")
        tar_add(tf, "0004.txt", type=tarfile.CHRTYPE, devmajor=1, devminor=3)
        tar_add(tf, "0005.txt", b"a copper kettle")
        tar_add(tf, "0005.npy", pickled.getvalue())
        tar_add(tf, "0006.txt", "ein Haus am See \udcff".encode("utf-8", "surrogateescape"))
    with tarfile.open(src / "shard-1.tar", "w") as tf:
        tar_add(tf, "0010.txt", b"a mountain lake " * 100)
    cut = (src / "shard-1.tar").read_bytes()
    (src / "shard-1.tar").write_bytes(cut[:700])  # ends inside the first member
    with tarfile.open(src / "shard-2.tar", "w") as tf:
        tar_add(tf, "0020.txt", b"a field of sunflowers")
    before = tree_digest(src)
    out = tmp_path / "run"
    code, _, err = _main(["scan", src, "--out", out, "--embedding-column", "npy", "--embedding-modality", "text",
                          "-q"])
    assert code == 0, err
    _complete(out)
    items = _items(out)
    refused = {k: v["error"] for k, v in items.items() if v["error"] and "unsafe tar member" in v["error"]}
    assert set(refused) == {"shard-0.tar:../escape.txt", "shard-0.tar:/tmp/absolute.txt", "shard-0.tar:0002.txt",
                            "shard-0.tar:0003.txt", "shard-0.tar:0004.txt"}
    assert "'..'" in refused["shard-0.tar:../escape.txt"] and "absolute" in refused["shard-0.tar:/tmp/absolute.txt"]
    assert "link" in refused["shard-0.tar:0002.txt"] and "regular" in refused["shard-0.tar:0004.txt"]
    assert items["0005"]["status"] == "error" and ".npy" in items["0005"]["error"]
    assert items["0010"]["status"] == "error" and "truncated" in items["0010"]["error"]
    for ok in ("0001", "0006", "0020"):  # the rest goes on, including the shard after the cut one
        assert items[ok]["status"] == "ok", (ok, items[ok])
    assert not marker.exists()
    assert not (tmp_path / "escape.txt").exists() and not Path("/tmp/absolute.txt").exists()
    assert tree_digest(src) == before


# ---- 4. image files: corrupt, bombs, links ------------------------------------------------------------------

def _png(seed: int, size=(40, 40)) -> bytes:
    from PIL import Image

    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, "PNG")
    return buf.getvalue()


def _png_bomb(width=100_000, height=100_000) -> bytes:
    """A valid PNG header that declares 10^10 pixels, with a few bytes of data: refused before decoding."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    pytest.importorskip("open_clip")
    pytest.importorskip("torch")
    from tiny_clip import save_tiny_clip

    return save_tiny_clip(tmp_path_factory.mktemp("tinyclip_badinput"), "TinyClipBadInput", seed=3)


def test_bad_image_files_are_error_rows_and_hash_lists_still_match(tmp_path, tiny_clip):
    from analyzer.hashes.matching import item_hashes

    root = tmp_path / "images"
    root.mkdir()
    (root / "good1.png").write_bytes(_png(1))
    (root / "good1.txt").write_text("a red kite in a blue sky")
    (root / "good2.png").write_bytes(_png(2))
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 2)
    (root / "truncated.png").write_bytes(_png(3)[:120])
    (root / "empty.jpg").write_bytes(b"")
    (root / "text.jpg").write_bytes(b"this is a text file with an image suffix")
    (root / "bomb.png").write_bytes(_png_bomb())
    outside = tmp_path / "outside.png"
    outside.write_bytes(_png(5))
    os.symlink(outside, root / "link_outside.png")
    os.symlink(root / "good2.png", root / "link_inside.png")
    os.symlink(tmp_path / "missing.png", root / "link_broken.png")
    if Path("/proc/self/mem").exists():
        os.symlink("/proc/self/mem", root / "link_proc.png")
    lists = tmp_path / "lists"
    lists.mkdir()
    md5 = hashlib.md5((root / "good1.png").read_bytes()).hexdigest()
    (lists / "md5.txt").write_text(f"# benign generated image\n{md5}\n")
    pdq = item_hashes([(root / "good2.png").read_bytes()])["pdq"][0]
    (lists / "pdq.csv").write_text(f"pdq,note\n{pdq},generated noise\n")
    before = tree_digest(root)
    out = tmp_path / "run"
    code, _, err = _main(["scan", root, "--out", out, "--encoder", tiny_clip, "--hash-list", f"known={lists / 'md5.txt'}",
                          "--hash-list", f"pdq:near={lists / 'pdq.csv'}", "-q"])
    assert code == 0, err
    _complete(out)
    items = _items(out)
    want = {"corrupt.png": "undecodable", "truncated.png": "truncated", "empty.jpg": "empty",
            "text.jpg": "undecodable", "bomb.png": "bomb", "link_outside.png": "outside",
            "link_broken.png": "broken"}
    if (root / "link_proc.png").is_symlink():
        want["link_proc.png"] = "outside"
    for item_id, why in want.items():
        assert items[item_id]["status"] == "error" and why in items[item_id]["error"], (item_id, items[item_id])
    for ok in ("good1.png", "good2.png", "link_inside.png"):
        assert items[ok]["status"] == "ok", (ok, items[ok])
    con = duckdb.connect(str(out / "analysis.duckdb"), read_only=True)
    try:
        matches = sorted(con.execute("SELECT item_id, list_name FROM hash_matches").fetchall())
    finally:
        con.close()
    assert ("good1.png", "known") in matches and ("good2.png", "near") in matches
    assert ("link_inside.png", "near") in matches  # same bytes through an allowed link
    assert tree_digest(root) == before
    assert outside.read_bytes() == _png(5)


# ---- 5. the other entry points on a complete run ----------------------------------------------------------

@pytest.fixture()
def run_dir(tabular):
    assert tabular["code"] == 0, tabular["err"]
    return tabular["out"]


def _digest(run: Path) -> dict[str, str]:
    return {k: v for k, v in tree_digest(run).items() if not k.endswith(".wal")}


def test_param_values_are_bound_never_spliced(run_dir, capsys):
    before = _digest(run_dir)
    for value in ("screen'; DROP TABLE items; --", "screen\" OR 1=1 --", "$point", "screen; COPY items TO 'x.csv'"):
        code, out, err = cli(["query", run_dir, "both_concepts", "--param", f"point={value}", "--format", "csv"],
                             capsys)
        assert code == 0, err
        assert out.splitlines()[1:] == []  # no operating point has that name: no rows, nothing else happened
    assert _digest(run_dir) == before


@pytest.mark.parametrize("argv, needle", [
    (["both_concepts", "--param", "point; DROP TABLE items=1"], "parameter name"),
    (["both_concepts", "--param", "point=screen", "--param", "extra=1"], "unknown"),
    (["both_concepts", "--param", "no-equals-sign"], "key=value"),
    (["group_items"], "value for"),  # source has no default (point has: screen)
    (["../../../etc/passwd"], "query name"),
    (["prevalence; DROP TABLE items"], "query name"),
])
def test_bad_query_arguments(run_dir, capsys, argv, needle):
    before = _digest(run_dir)
    code, _, err = cli(["query", run_dir, *argv], capsys)
    assert_one_line_error(code, err, needle)
    assert _digest(run_dir) == before


@pytest.mark.parametrize("sql", [
    "DROP TABLE items",
    "COPY (SELECT text FROM items) TO '{leak}'",
    "EXPORT DATABASE '{leakdir}'",
    "ATTACH '{leakdir}.duckdb' AS x",
    "SELECT 1; DROP TABLE items",
    "PRAGMA database_list",
    "SELECT * FROM",
])
def test_sql_files_may_only_read(run_dir, tmp_path, capsys, sql):
    leak, leakdir = tmp_path / "leak.csv", tmp_path / "leakdir"
    f = tmp_path / "q.sql"
    f.write_text(sql.format(leak=leak, leakdir=leakdir))
    before = _digest(run_dir)
    code, _, err = cli(["query", run_dir, f], capsys)
    assert_one_line_error(code, err)
    assert not leak.exists() and not leakdir.exists() and not Path(f"{leakdir}.duckdb").exists()
    assert _digest(run_dir) == before


def test_commands_on_missing_and_incomplete_runs(run_dir, tmp_path, capsys):
    import shutil

    incomplete = tmp_path / "incomplete"
    shutil.copytree(run_dir, incomplete)
    (incomplete / "_SUCCESS").unlink()
    before = _digest(incomplete)
    for argv, needle in ((["report", tmp_path / "nope"], "does not exist"),
                         (["report", incomplete], "complete run"),
                         (["query", incomplete, "prevalence"], "complete run"),
                         (["signoff", incomplete], "complete run"),
                         (["apply", incomplete, "--strategy", "r1_only", "--out", tmp_path / "kept"], "complete run")):
        code, _, err = cli(argv, capsys)
        assert_one_line_error(code, err, needle)
    assert _digest(incomplete) == before


@pytest.mark.parametrize("policy, needle", [
    ("gates: [\n", "yaml"),
    ("gates:\n  max_r1_after_removal: -1\n", "max_r1_after_removal"),
    ("gates:\n  max_hash_matches: 0.5\n", "max_hash_matches"),
    ("gates: {}\nunexpected: 1\n", "unexpected"),
    ("", "gates"),
    ("!!python/object/apply:os.system ['touch {marker}']\n", "policy"),
    (b"gates: {max_r4: \xff}\n", "policy"),
])
def test_signoff_with_a_malformed_policy_changes_nothing(run_dir, tmp_path, capsys, policy, needle):
    marker = tmp_path / "executed"
    p = tmp_path / "policy.yaml"
    if isinstance(policy, bytes):
        p.write_bytes(policy)
    else:
        p.write_text(policy.replace("{marker}", str(marker)))
    before = _digest(run_dir)
    code, _, err = cli(["signoff", run_dir, "--policy", p], capsys)
    assert_one_line_error(code, err, needle)
    assert _digest(run_dir) == before and not marker.exists()


def test_apply_with_bad_arguments(run_dir, tmp_path, capsys):
    before = _digest(run_dir)
    code, _, err = cli(["apply", run_dir, "--strategy", "r1_only; rm -rf /", "--out", tmp_path / "kept"], capsys)
    assert_one_line_error(code, err, "strategy")
    code, _, err = cli(["apply", run_dir, "--strategy", "r1_only", "--out", run_dir], capsys)
    assert_one_line_error(code, err, "--out")
    assert _digest(run_dir) == before


def test_label_files_for_evaluate_and_probe(tmp_path, capsys):
    bad = tmp_path / "labels.csv"
    bad.write_text("text,minor\na red bicycle,2\n")
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes(b"text,minor\ncaf\xe9,0\n")
    cases = [(["evaluate", bad, "--bootstrap", "10"], "0/1"),
             (["evaluate", empty], "csv"),
             (["evaluate", latin1, "--bootstrap", "10"], "csv"),
             (["evaluate", tmp_path / "missing.csv"], "does not exist"),
             (["probe", "fit", bad, "--concept", "minor", "--out", tmp_path / "bank.yaml"], "0 or 1"),
             (["probe", "fit", bad, "--concept", "minor'; DROP", "--out", tmp_path / "bank.yaml"], "snake_case"),
             (["probe", "fit", latin1, "--concept", "minor", "--out", tmp_path / "bank.yaml"], "utf-8"),
             (["probe", "fit", bad, "--concept", "minor", "--bank", empty, "--out", tmp_path / "bank.yaml"], "bank"),
             (["audit-bias", "--data", bad], "columns")]
    for argv, needle in cases:
        code, _, err = cli(argv, capsys)
        assert_one_line_error(code, err, needle)
    assert not (tmp_path / "bank.yaml").exists()
