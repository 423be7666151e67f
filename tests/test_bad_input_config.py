"""Bad configuration files and outputs: bank, policy and hash-list files, encoders, `--out` and `--overwrite`.

Same contract as test_bad_input.py (one line, exit 2, no traceback, nothing that looks complete, input
unchanged); these cases fail before the dataset is read or, for the last few, after the run directory exists.
Fixture safety: benign captions and hex digests only.
"""
from __future__ import annotations

import gzip
import os
import sys
import tarfile
from pathlib import Path

import pytest

from test_bad_input import (assert_not_complete, assert_one_line_error, cases, cli, good_parquet, run_case,
                            tar_add, tree_digest)


def c_bank_yaml_syntax(d: Path):
    (d / "bank.yaml").write_text("version: 1\nconcepts: [\n  - id: minor\n")
    return ["scan", good_parquet(d / "x.parquet"), "--bank", d / "bank.yaml"], "yaml"


def c_bank_not_utf8(d: Path):
    (d / "bank.yaml").write_bytes(b"version: 1\nconcepts:\n - id: \xff\xfe\n")
    return ["scan", good_parquet(d / "x.parquet"), "--bank", d / "bank.yaml"], "utf-8"


def c_bank_bad_regex(d: Path):
    (d / "bank.yaml").write_text("version: 1\nconcepts:\n - id: adult_person\n   description: an adult\n"
                                 "   role: primary\n   keywords: {en: {patterns: ['(unclosed']}}\n")
    return ["scan", good_parquet(d / "x.parquet"), "--bank", d / "bank.yaml"], "regular expression"


def c_bank_concept_id_injection(d: Path):
    (d / "bank.yaml").write_text("version: 1\nconcepts:\n - id: \"x_score FROM items; DROP TABLE items; --\"\n"
                                 "   description: x\n")
    return ["scan", good_parquet(d / "x.parquet"), "--bank", d / "bank.yaml"], "snake_case"


def c_bank_python_object_tag(d: Path):
    marker = d / "executed"
    (d / "bank.yaml").write_text(f"!!python/object/apply:os.system ['touch {marker}']\n")
    return ["scan", good_parquet(d / "x.parquet"), "--bank", d / "bank.yaml"], "yaml"


def c_bank_not_a_mapping(d: Path):
    (d / "bank.yaml").write_text("- just\n- a list\n")
    return ["scan", good_parquet(d / "x.parquet"), "--bank", d / "bank.yaml"], "mapping"


def c_bank_missing(d: Path):
    return ["scan", good_parquet(d / "x.parquet"), "--bank", d / "nope.yaml"], "does not exist"


def c_policy_yaml_syntax(d: Path):
    (d / "policy.yaml").write_text("gates: {max_r4: [\n")
    return ["scan", good_parquet(d / "x.parquet"), "--policy", d / "policy.yaml"], "yaml"


def c_policy_out_of_range(d: Path):
    (d / "policy.yaml").write_text("gates:\n  max_r4: 2.5\n")
    return ["scan", good_parquet(d / "x.parquet"), "--policy", d / "policy.yaml"], "max_r4"


def c_policy_nan(d: Path):
    (d / "policy.yaml").write_text("gates:\n  max_r3_score: .nan\n")
    return ["scan", good_parquet(d / "x.parquet"), "--policy", d / "policy.yaml"], "max_r3_score"


def c_policy_unknown_gate(d: Path):
    (d / "policy.yaml").write_text("gates:\n  max_r1: 0\n")
    return ["scan", good_parquet(d / "x.parquet"), "--policy", d / "policy.yaml"], "gate keys"


def c_policy_python_tag(d: Path):
    (d / "policy.yaml").write_text(f"!!python/object/apply:os.system ['touch {d / 'executed'}']\n")
    return ["scan", good_parquet(d / "x.parquet"), "--policy", d / "policy.yaml"], "policy"


def c_hash_list_bad_hex(d: Path):
    (d / "list.txt").write_text("d41d8cd98f00b204e9800998ecf8427e\nnot-a-hash\n")
    return ["scan", good_parquet(d / "x.parquet"), "--hash-list", d / "list.txt"], "list.txt:2"


def c_hash_list_ambiguous_64_hex(d: Path):
    (d / "list.txt").write_text("ab" * 32 + "\n")
    return ["scan", good_parquet(d / "x.parquet"), "--hash-list", d / "list.txt"], "sha256"


def c_hash_list_csv_without_column(d: Path):
    (d / "list.csv").write_text("foo,bar\n1,2\n")
    return ["scan", good_parquet(d / "x.parquet"), "--hash-list", d / "list.csv"], "hash column"


def c_hash_list_csv_short_row(d: Path):
    (d / "list.csv").write_text("name,md5\nx,d41d8cd98f00b204e9800998ecf8427e\ny\n")
    return ["scan", good_parquet(d / "x.parquet"), "--hash-list", d / "list.csv"], "list.csv:3"


def c_hash_list_truncated_gzip(d: Path):
    (d / "list.txt.gz").write_bytes(gzip.compress(b"d41d8cd98f00b204e9800998ecf8427e\n" * 50)[:30])
    return ["scan", good_parquet(d / "x.parquet"), "--hash-list", d / "list.txt.gz"], "gzip"


def c_hash_list_only_comments(d: Path):
    (d / "list.txt").write_text("# provider list, intentionally empty\n\n")
    return ["scan", good_parquet(d / "x.parquet"), "--hash-list", d / "list.txt"], "at least one hash"


def c_hash_list_not_utf8(d: Path):
    (d / "list.txt").write_bytes(b"\xff\xfe" + "d41d8cd98f00b204e9800998ecf8427e\n".encode("utf-16-le"))
    return ["scan", good_parquet(d / "x.parquet"), "--hash-list", d / "list.txt"], "utf-8"


def c_hash_list_kind_column_conflict(d: Path):
    (d / "list.csv").write_text("md5\nd41d8cd98f00b204e9800998ecf8427e\n")
    return ["scan", good_parquet(d / "x.parquet"), "--hash-list", f"sha1:{d / 'list.csv'}"], "md5"


def c_hash_list_missing(d: Path):
    return ["scan", good_parquet(d / "x.parquet"), "--hash-list", d / "nope.txt"], "hash list file"


def c_unknown_encoder(d: Path):
    return ["scan", good_parquet(d / "x.parquet"), "--encoder", "no-such-model"], "encoder"


def c_openclip_arch_traversal(d: Path):
    return ["scan", good_parquet(d / "x.parquet"), "--encoder", "openclip:../../../etc/x:random"], "architecture"


CASES = cases(globals())


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_config_is_one_line_exit_2(case, tmp_path, capsys):
    run_case(CASES[case], tmp_path, capsys)


# ---- the output may never be, hold, or sit inside an input ------------------------------------------------

def test_overwrite_never_deletes_the_dataset(tmp_path, capsys):
    data = tmp_path / "data"
    src = good_parquet(data / "x.parquet")
    (data / "notes.md").write_text("the team's notes")
    before = tree_digest(data)
    for argv in (["scan", src, "--out", data, "--overwrite"],  # --out holds the input
                 ["scan", src, "--out", src],  # --out is the input file
                 ["tag", src, "--out", src]):  # tag would replace the input with its tags
        code, _, err = cli([*argv, "-q"], capsys)
        assert_one_line_error(code, err, "outside the input")
    assert tree_digest(data) == before


def test_overwrite_replaces_only_a_run_directory(tmp_path, capsys):
    src = good_parquet(tmp_path / "in" / "x.parquet")
    other = tmp_path / "not_a_run"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    code, _, err = cli(["scan", src, "--out", other, "--overwrite", "-q"], capsys)
    assert_one_line_error(code, err, "run directory")
    assert (other / "thesis.tex").read_text() == "precious"


def test_output_inside_an_input_folder_is_refused(tmp_path, capsys):
    root = tmp_path / "shards"
    root.mkdir()
    with tarfile.open(root / "shard-0.tar", "w") as tf:
        tar_add(tf, "0001.txt", b"a wooden table")
    before = tree_digest(root)
    code, _, err = cli(["scan", root, "--out", root / "run", "-q"], capsys)
    assert_one_line_error(code, err, "inside it")
    assert tree_digest(root) == before


def test_out_is_an_existing_file(tmp_path, capsys):
    src = good_parquet(tmp_path / "in" / "x.parquet")
    (tmp_path / "taken").write_text("x")
    code, _, err = cli(["scan", src, "--out", tmp_path / "taken", "-q"], capsys)
    assert_one_line_error(code, err, "directory")
    assert (tmp_path / "taken").read_text() == "x"


# ---- failures after the run directory exists: nothing looks complete ---------------------------------------

def test_malformed_csv_mid_file_leaves_a_failed_run(tmp_path, capsys):
    src = tmp_path / "in" / "ragged.csv"
    src.parent.mkdir()
    src.write_text("id,caption\n1,a red bicycle\n2,sunset,extra field\n")
    before = tree_digest(src.parent)
    out = tmp_path / "out"
    code, _, err = cli(["scan", src, "--out", out, "-q"], capsys)
    assert_one_line_error(code, err, "csv")
    assert_not_complete(out)
    assert (out / "FAILED").exists()
    assert tree_digest(src.parent) == before


def test_csv_with_a_header_and_no_rows(tmp_path, capsys):
    src = tmp_path / "in" / "header_only.csv"
    src.parent.mkdir()
    src.write_text("id,caption\n")
    out = tmp_path / "out"
    code, _, err = cli(["scan", src, "--out", out, "-q"], capsys)
    assert_one_line_error(code, err, "at least one")
    assert_not_complete(out)


def test_corrupt_run_state_is_refused_not_resumed(tmp_path, capsys):
    src = good_parquet(tmp_path / "in" / "x.parquet")
    out = tmp_path / "out"
    out.mkdir()
    (out / "_state.json").write_text("{half written")
    code, _, err = cli(["scan", src, "--out", out, "-q"], capsys)
    assert_one_line_error(code, err, "--out")
    assert_not_complete(out)


def test_bad_input_in_a_real_process_prints_no_traceback(tmp_path):
    import subprocess

    src = tmp_path / "in" / "x.parquet"
    src.parent.mkdir()
    src.write_bytes(b"PAR1" + b"\x00" * 64 + b"PAR1")
    res = subprocess.run([sys.executable, "-m", "analyzer.cli", "scan", str(src), "--out", str(tmp_path / "r")],
                         capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and res.stderr.startswith("analyzer: error: expected")
