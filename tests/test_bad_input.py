"""Bad input at the front door: every case gives one line `analyzer: error: expected ...` and exit 2.

Each case builds its inputs under ``tmp_path/"in"`` and points outputs at ``tmp_path/"out"``. For every case
the suite checks: exit code 2, exactly one stderr line starting with ``analyzer: error: expected``, no
traceback, no output that looks complete (no ``_SUCCESS``, ``summary.json`` or report), and that no file
under ``in/`` changed (sha256 of every file and symlink before and after).

Here: dataset files of every input kind. Bank, policy and hash-list files, encoders, `--out`/`--overwrite`
and failures after the run directory exists are in test_bad_input_config.py; bad items that become per-item
error rows (the run goes on) and the other entry points in test_bad_input_rows.py; the hashes command in
test_bad_input_hashes.py; hypothesis in test_properties.py. Nearly all cases fail before the model is
fitted (a truncated .arrow file is found while reading, after it).

Fixture safety: only benign captions ("a red bicycle"), generated noise vectors and hex digests.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analyzer.cli import main

CAPTIONS = ["a red bicycle leaning on a wall", "sunset over a calm sea", "a bowl of green apples"]


# ---- helpers shared by the bad-input modules ---------------------------------------------------------------

def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under root (symlinks by their target, not followed; directories by name)."""
    out: dict[str, str] = {}
    if not root.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            else:
                try:
                    out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
                except OSError as exc:  # unreadable on purpose: record the mode instead
                    out[rel] = f"unreadable:{oct(p.stat().st_mode)}:{exc.errno}"
    return out


def cli(argv, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    got = capsys.readouterr()
    return code, got.out, got.err


def assert_one_line_error(code: int, err: str, needle: str | None = None) -> str:
    assert "Traceback" not in err, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2, (code, err)
    assert len(lines) == 1, err
    # "expected ..." first, or after the place in a data file ("bank FILE: concepts[0].id: expected ...")
    assert re.match(r"analyzer: error: (.{1,400}?: )?expected ", lines[0]), lines[0]
    if needle is not None:
        assert needle.lower() in lines[0].lower(), (needle, lines[0])
    return lines[0]


def assert_not_complete(out: Path) -> None:
    for name in ("_SUCCESS", "summary.json", "report.html", "report.md", "removal_manifest.parquet"):
        assert not (out / name).exists(), f"{name} written by a failed run"
    if out.is_dir() and (out / "_state.json").exists():
        assert (out / "FAILED").exists() or not (out / "analysis.duckdb").exists()


def write_parquet(path: Path, table: pa.Table) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def good_parquet(path: Path) -> Path:
    return write_parquet(path, pa.table({"id": ["a", "b", "c"], "caption": CAPTIONS}))


def tar_add(tf: tarfile.TarFile, name: str, data: bytes = b"", **attrs) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for k, v in attrs.items():
        setattr(info, k, v)
    tf.addfile(info, io.BytesIO(data) if data else None)


def vec(seed: int, d: int = 896) -> list[float]:
    x = np.random.default_rng(seed).normal(size=d).astype(np.float32)
    return (x / np.linalg.norm(x)).tolist()


# ---- the cases: each returns (argv without --out, needle in the message) ----------------------------------

def c_truncated_parquet(d: Path):
    src = good_parquet(d / "full.parquet")
    cut = d / "truncated.parquet"
    cut.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    src.unlink()
    return ["scan", cut], "parquet"


def c_corrupt_parquet_footer(d: Path):
    src = good_parquet(d / "x.parquet")
    data = src.read_bytes()
    src.write_bytes(data[:-12] + b"\x00" * 8 + b"PAR1")  # footer length points into garbage
    return ["scan", src], "parquet"


def c_parquet_magic_only(d: Path):
    p = d / "magic.parquet"
    p.write_bytes(b"PAR1" + bytes(range(256)) * 3 + b"PAR1")
    return ["scan", p], "parquet"


def c_wrong_schema(d: Path):
    return ["scan", write_parquet(d / "x.parquet", pa.table({"width": [1, 2], "height": [3, 4]}))], "text column"


def c_text_column_is_int(d: Path):
    return ["scan", write_parquet(d / "x.parquet", pa.table({"caption": [1, 2]}))], "string text column"


def c_text_column_is_list(d: Path):
    return ["scan", write_parquet(d / "x.parquet", pa.table({"caption": [[1.0], [2.0]]}))], "string text column"


def c_id_column_is_nested(d: Path):
    t = pa.table({"id": [[1, 2], [3]], "caption": CAPTIONS[:2]})
    return ["scan", write_parquet(d / "x.parquet", t)], "id column"


def c_empty_parquet(d: Path):
    p = d / "empty.parquet"
    p.write_bytes(b"")
    return ["scan", p], "empty"


def c_empty_csv(d: Path):
    p = d / "empty.csv"
    p.write_bytes(b"")
    return ["scan", p], "empty"


def c_blank_jsonl(d: Path):
    p = d / "blank.jsonl"
    p.write_bytes(b"\n   \n\t\n")
    return ["scan", p], "at least one row"


def c_jsonl_first_line_not_object(d: Path):
    p = d / "arrays.jsonl"
    p.write_text("[1, 2, 3]\n")
    return ["scan", p], "json object"


def c_jsonl_first_line_not_json(d: Path):
    p = d / "garbage.jsonl"
    p.write_bytes(b"\x00\x01 this is not json\n")
    return ["scan", p], "json"


def c_embedding_strings(d: Path):
    t = pa.table({"id": ["a"], "emb": ["0.1,0.2,0.3"]})
    return ["scan", write_parquet(d / "x.parquet", t), "--embedding-column", "emb"], "embedding"


def c_embedding_list_of_strings(d: Path):
    t = pa.table({"id": ["a"], "emb": [["0.1", "0.2"]]})
    return ["scan", write_parquet(d / "x.parquet", t), "--embedding-column", "emb"], "float"


def c_embedding_fixed_wrong_dim(d: Path):
    emb = pa.array([np.ones(7, np.float32)] * 2, pa.list_(pa.float32(), 7))
    t = pa.table({"id": ["a", "b"], "emb": emb})
    return ["scan", write_parquet(d / "x.parquet", t), "--embedding-column", "emb"], "dimension 896"


def c_embedding_variable_wrong_dim(d: Path):
    t = pa.table({"id": ["a", "b"], "emb": [vec(1, 16), vec(2, 16)]})
    return ["scan", write_parquet(d / "x.parquet", t), "--embedding-column", "emb"], "dimension 896"


def c_missing_explicit_column(d: Path):
    return ["scan", good_parquet(d / "x.parquet"), "--url-column", "URL"], "--url-column"


def c_column_name_injection(d: Path):
    argv = ["scan", good_parquet(d / "x.parquet"), "--text-column", 'caption" FROM items; DROP TABLE items; --']
    return argv, "--text-column"


def c_batch_size_zero(d: Path):
    return ["scan", good_parquet(d / "x.parquet"), "--batch-size", "0"], "--batch-size"


def c_tag_out_not_parquet(d: Path):
    return ["tag", good_parquet(d / "x.parquet"), "--out-file", "tags.csv"], "FILE.parquet"


def c_tag_truncated_parquet(d: Path):
    src = good_parquet(d / "x.parquet")
    src.write_bytes(src.read_bytes()[:-30])
    return ["tag", src, "--out-file", "tags.parquet"], "parquet"


def c_tag_bank_not_a_mapping(d: Path):
    (d / "bank.yaml").write_text("just a string\n")
    return ["tag", good_parquet(d / "x.parquet"), "--bank", d / "bank.yaml", "--out-file", "tags.parquet"], "mapping"


def c_glob_without_match(d: Path):
    good_parquet(d / "x.parquet")
    return ["scan", str(d / "*.nomatch")], "no match"


def c_mixed_kinds(d: Path):
    shard = d / "shard.tar"
    with tarfile.open(shard, "w") as tf:
        tar_add(tf, "0001.txt", b"a wooden table")
    return ["scan", good_parquet(d / "x.parquet"), shard], "one kind"


def c_unknown_suffix(d: Path):
    p = d / "notes.txt"
    p.write_text("a red bicycle\n")
    return ["scan", p], ".parquet"


def c_broken_symlink_input(d: Path):
    os.symlink(d / "gone.parquet", d / "link.parquet")
    return ["scan", d / "link.parquet"], "does not exist"


def c_unreadable_chmod(d: Path):
    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode; c_unreadable_proc covers unreadable input as root")
    p = good_parquet(d / "locked.parquet")
    p.chmod(0)
    return ["scan", p], "cannot be read"


def c_unreadable_proc(d: Path):
    """A file that exists and stats as regular but whose read fails (EIO), even for root."""
    if not Path("/proc/self/mem").exists():
        pytest.skip("needs Linux /proc")
    os.symlink("/proc/self/mem", d / "mem.parquet")
    return ["scan", d / "mem.parquet"], "cannot be read"


def c_directory_that_is_nothing(d: Path):
    (d / "folder.parquet").mkdir()
    (d / "folder.parquet" / "readme.md").write_text("nothing to scan")
    return ["scan", d / "folder.parquet"], "directory"


def c_webdataset_not_a_tar(d: Path):
    p = d / "shard-0.tar"
    p.write_bytes(b"this is not a tar archive" * 40)
    return ["scan", p], "tar"


def c_webdataset_empty_tar(d: Path):
    p = d / "shard-0.tar"
    p.write_bytes(b"")
    return ["scan", p], "empty"


def c_webdataset_corrupt_sidecar(d: Path):
    with tarfile.open(d / "shard-0.tar", "w") as tf:
        tar_add(tf, "0001.txt", b"a wooden table")
    (d / "shard-0.parquet").write_bytes(b"PAR1 not really")
    return ["scan", d / "shard-0.tar"], "sidecar"


def c_hf_truncated_arrow(d: Path):
    ds = d / "hf"
    ds.mkdir()
    t = pa.table({"text": CAPTIONS})
    with pa.ipc.new_stream(str(ds / "data-00000-of-00001.arrow"), t.schema) as w:
        w.write_table(t)
    data = (ds / "data-00000-of-00001.arrow").read_bytes()
    (ds / "data-00000-of-00001.arrow").write_bytes(data[: len(data) // 2])
    (ds / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
    return ["scan", ds], "arrow"


def c_hf_state_path_traversal(d: Path):
    ds = d / "hf"
    ds.mkdir()
    (ds / "state.json").write_text(json.dumps({"_data_files": [{"filename": "../../../etc/passwd"}]}))
    return ["scan", ds], "plain data-file names"


def c_hf_state_not_json(d: Path):
    ds = d / "hf"
    ds.mkdir()
    (ds / "state.json").write_text("{this is not json")
    return ["scan", ds], "state.json"


def _laion(d: Path, emb: np.ndarray | None, rows: int = 2, allow_pickle: bool = False) -> Path:
    root = d / "laion"
    (root / "img_emb").mkdir(parents=True)
    (root / "metadata").mkdir()
    if emb is not None:
        np.save(root / "img_emb" / "img_emb_0.npy", emb, allow_pickle=allow_pickle)
    write_parquet(root / "metadata" / "metadata_0.parquet", pa.table({"caption": CAPTIONS[:rows]}))
    return root


def c_laion_pickled_npy(d: Path):
    marker = d / "executed"
    root = _laion(d, np.array([{"a": 1}, str(marker)], dtype=object), allow_pickle=True)
    return ["scan", root], ".npy"


def c_laion_rows_mismatch(d: Path):
    return ["scan", _laion(d, np.ones((3, 896), np.float32))], "same number of rows"


def c_laion_truncated_npy(d: Path):
    root = _laion(d, np.ones((2, 896), np.float32))
    p = root / "img_emb" / "img_emb_0.npy"
    p.write_bytes(p.read_bytes()[:-100])
    return ["scan", root], ".npy"


def c_laion_unpaired(d: Path):
    root = _laion(d, np.ones((2, 896), np.float32))
    np.save(root / "img_emb" / "img_emb_1.npy", np.ones((2, 896), np.float32))
    return ["scan", root], "unpaired"


def _images(d: Path) -> Path:
    from PIL import Image

    folder = d / "images"
    folder.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / "a.png")
    return folder


def c_imagefolder_bad_captions_jsonl(d: Path):
    folder = _images(d)
    (folder / "captions.jsonl").write_text('{"file_name": "a.png", "caption": "a red kite"}\n{broken\n')
    return ["scan", folder], "caption table"


def c_imagefolder_captions_without_file_column(d: Path):
    folder = _images(d)
    (folder / "captions.csv").write_text("caption\na red kite\n")
    return ["scan", folder], "file column"


def run_case(build, tmp_path: Path, capsys) -> None:
    """Build a case's inputs under tmp_path/in, run it, and check the bad-input contract (module docstring)."""
    src = tmp_path / "in"
    src.mkdir()
    argv, needle = build(src)
    out = tmp_path / "out"
    if "--out-file" in argv:  # tag writes a file
        i = argv.index("--out-file")
        argv = argv[:i] + ["--out", tmp_path / argv[i + 1]] + argv[i + 2:]
    else:
        argv = argv + ["--out", out]
    before = tree_digest(src)
    code, _, err = cli([*argv, "-q"], capsys)
    assert_one_line_error(code, err, needle)
    assert_not_complete(out)
    assert not (tmp_path / "tags.parquet").exists()
    assert tree_digest(src) == before, "the input was modified"
    assert not (src / "executed").exists(), "a data file ran code"


def cases(namespace: dict) -> dict:
    """The ``c_*`` case builders of a module, by name."""
    return {k[2:]: v for k, v in namespace.items() if k.startswith("c_") and callable(v)}


CASES = cases(globals())


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_exit_2(case, tmp_path, capsys):
    run_case(CASES[case], tmp_path, capsys)
