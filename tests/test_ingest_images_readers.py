"""Image input readers on small generated fixtures: webdataset shards, image folders, saved HF datasets.

Every image is generated (gradients, flat colours, noise); captions are neutral descriptions of them.
"""
from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from analyzer.errors import InputError
from analyzer.ingest import open_input
from analyzer.ingest.hf import HFDatasetReader, is_hf_parquet
from analyzer.ingest.imagefolder import ImageFolderReader
from analyzer.ingest.schema import STANDARD_SCHEMA, STANDARD_SCHEMA_F16, ColumnSpec
from analyzer.ingest.webdataset import WebDatasetReader


def _img(i: int, fmt: str = "JPEG", size=(40, 30)) -> bytes:
    rng = np.random.default_rng(i)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, fmt)
    return buf.getvalue()


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def _shard(path: Path, keys: list[str], extra=None) -> dict[str, bytes]:
    images = {}
    with tarfile.open(path, "w") as tf:
        for k in keys:
            images[k] = _img(int(k))
            _add(tf, f"{k}.jpg", images[k])
            _add(tf, f"{k}.txt", f"a gradient picture number {int(k)}".encode())
            meta = {"key": k, "url": f"https://www.example{int(k) % 2}.com/img/{k}.jpg", "caption": "unused"}
            _add(tf, f"{k}.json", json.dumps(meta).encode())
        if extra:
            extra(tf)
    return images


def _collect(reader, batch_size=4, start_row=0) -> pa.Table:
    batches = list(reader.iter_batches(batch_size, start_row=start_row))
    schema = batches[0].schema if batches else STANDARD_SCHEMA  # float16 vectors: list<float16>, one per stream
    assert schema.equals(STANDARD_SCHEMA) or schema.equals(STANDARD_SCHEMA_F16)
    for b in batches:
        assert b.schema.equals(schema)
        assert b.num_rows <= batch_size
    return pa.Table.from_batches(batches, schema=schema)


# ------------------------------------------------------------------------------------------ webdataset


def test_webdataset_img2dataset_layout(tmp_path):
    imgs = _shard(tmp_path / "00000.tar", [f"{i:09d}" for i in range(5)])
    imgs.update(_shard(tmp_path / "00001.tar", [f"{i:09d}" for i in range(10000, 10003)]))
    pq.write_table(pa.table({"key": ["000010000", "000010001", "000010002", "000010003"],
                             "source": ["museum", None, "museum", "museum"],
                             "status": ["success", "success", "success", "failed_to_download"]}),
                   tmp_path / "00001.parquet")
    reader = open_input([str(tmp_path)], ColumnSpec())
    assert isinstance(reader, WebDatasetReader)
    assert [p.name for p in reader.files] == ["00000.tar", "00001.tar", "00001.parquet"]
    t = _collect(reader, batch_size=3, start_row=100)
    assert t.num_rows == 8  # the failed download of the sidecar is not a sample
    assert t["row_idx"].to_pylist() == list(range(100, 108))
    assert t["item_id"].to_pylist() == sorted(imgs)
    assert t["text"][0].as_py() == "a gradient picture number 0"  # .txt wins over the json caption
    assert t["url"][1].as_py() == "https://www.example1.com/img/000000001.jpg"
    assert t["source"].to_pylist()[:2] == ["example0.com", "example1.com"]
    assert t["source"].to_pylist()[5:] == ["museum", "example1.com", "museum"]  # sidecar column, else domain
    assert all(t["image"][i].as_py() == imgs[k] for i, k in enumerate(t["item_id"].to_pylist()))
    assert set(t["status"].to_pylist()) == {"ok"}
    assert t["file"][0].as_py().endswith("00000.tar")


def test_webdataset_unsafe_members_become_error_rows(tmp_path):
    def evil(tf):
        _add(tf, "../escape.txt", b"outside")
        _add(tf, "/abs/000000009.jpg", _img(9))
        link = tarfile.TarInfo("000000010.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
        _add(tf, "000000011.jpg", _img(11))

    _shard(tmp_path / "a.tar", ["000000001"], extra=evil)
    t = _collect(WebDatasetReader([tmp_path / "a.tar"], ColumnSpec()))
    rows = {r["item_id"]: r for r in t.to_pylist()}
    assert rows["000000001"]["status"] == "ok" and rows["000000011"]["status"] == "ok"
    errs = [r for r in rows.values() if r["status"] == "error"]
    assert len(errs) == 3
    assert all("unsafe tar member" in r["error"] and r["image"] is None for r in errs)
    assert not (tmp_path / "escape.txt").exists()


@pytest.mark.parametrize("keep", [0.15, 0.4, 0.6, 0.85, 0.995])
def test_webdataset_truncated_shard_reports_and_continues(tmp_path, keep):
    _shard(tmp_path / "00000.tar", [f"{i:09d}" for i in range(4)])
    data = (tmp_path / "00000.tar").read_bytes()
    with tarfile.open(tmp_path / "00000.tar") as tf:
        last = tf.getmembers()[-1]
    data_end = last.offset_data + last.size + 512  # the cut may fall into the end-of-archive marker
    (tmp_path / "00000.tar").write_bytes(data[: int(data_end * keep)])
    _shard(tmp_path / "00001.tar", ["000000100"])
    t = _collect(WebDatasetReader([tmp_path], ColumnSpec()))
    status = dict(zip(t["item_id"].to_pylist(), t["status"].to_pylist()))
    assert status["000000100"] == "ok"  # the next shard is still read
    assert "error" in status.values()
    assert any("truncated or corrupt" in (e or "") for e in t["error"].to_pylist())


def test_webdataset_embedding_member_and_json_fields(tmp_path):
    vec = np.arange(8, dtype=np.float16) / 8

    def more(tf):
        buf = io.BytesIO()
        np.save(buf, vec)
        _add(tf, "000000007.npy", buf.getvalue())
        _add(tf, "000000007.json", json.dumps({"id": "custom-7", "text": "a flat grey square"}).encode())

    _shard(tmp_path / "s.tar", ["000000001"], extra=more)
    t = _collect(WebDatasetReader([tmp_path / "s.tar"], ColumnSpec(embedding="npy", id="id")))
    rows = {r["item_id"]: r for r in t.to_pylist()}
    assert np.allclose(rows["custom-7"]["embedding"], vec.astype(np.float32))
    assert rows["custom-7"]["text"] == "a flat grey square" and rows["custom-7"]["status"] == "ok"
    assert rows["000000001"]["embedding"] is None


def test_webdataset_rejects_non_tar(tmp_path):
    (tmp_path / "x.tar").write_bytes(b"this is not a tar archive" * 40)
    with pytest.raises(InputError, match="not one"):
        WebDatasetReader([tmp_path / "x.tar"], ColumnSpec())
    (tmp_path / "y.tar").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        WebDatasetReader([tmp_path / "y.tar"], ColumnSpec())


# ------------------------------------------------------------------------------------------ image folders


def test_image_folder_with_sidecars_and_metadata(tmp_path):
    root = tmp_path / "photos"
    (root / "beach").mkdir(parents=True)
    (root / "city" / "night").mkdir(parents=True)
    (root / ".cache").mkdir()
    (root / "beach" / "b1.png").write_bytes(_img(1, "PNG"))
    (root / "beach" / "b1.txt").write_text("sand and sea, a noise texture\n")
    (root / "beach" / "b2.jpg").write_bytes(_img(2))
    (root / "city" / "night" / "c1.webp").write_bytes(_img(3, "WEBP"))
    (root / "top.jpg").write_bytes(_img(4))
    (root / ".cache" / "hidden.jpg").write_bytes(_img(5))
    (root / "metadata.jsonl").write_text(
        json.dumps({"file_name": "beach/b2.jpg", "text": "a blue gradient", "url": "https://cdn.photos.org/b2"}) + "\n"
        + json.dumps({"file_name": "city/night/c1.webp", "text": "orange noise", "source": "archive"}) + "\n"
    )
    reader = open_input([str(root)], ColumnSpec())
    assert isinstance(reader, ImageFolderReader)
    assert reader.count_rows() == 4
    t = _collect(reader, batch_size=3)
    assert t["item_id"].to_pylist() == ["beach/b1.png", "beach/b2.jpg", "city/night/c1.webp", "top.jpg"]
    assert t["text"].to_pylist() == ["sand and sea, a noise texture", "a blue gradient", "orange noise", None]
    assert t["source"].to_pylist() == ["beach", "photos.org", "archive", "photos"]
    assert t["image"][0].as_py() == (root / "beach" / "b1.png").read_bytes()
    assert set(t["status"].to_pylist()) == {"ok"}
    assert root / "metadata.jsonl" in reader.files


def test_image_folder_captions_csv_by_bare_name_and_id(tmp_path):
    (tmp_path / "a.jpg").write_bytes(_img(1))
    (tmp_path / "b.jpg").write_bytes(_img(2))
    (tmp_path / "captions.csv").write_text("file_name,caption,key\na.jpg,\"red, green\",id-a\n")
    t = _collect(ImageFolderReader([tmp_path], ColumnSpec()))
    assert t["item_id"].to_pylist() == ["id-a", "b.jpg"]
    assert t["text"].to_pylist() == ["red, green", None]


def test_image_folder_refuses_symlinks_outside(tmp_path):
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(_img(9))
    root = tmp_path / "root"
    root.mkdir()
    (root / "in.jpg").write_bytes(_img(1))
    os.symlink(outside, root / "link_out.jpg")
    os.symlink(root / "in.jpg", root / "link_in.jpg")
    rows = {r["item_id"]: r for r in _collect(ImageFolderReader([root], ColumnSpec())).to_pylist()}
    assert rows["link_out.jpg"]["status"] == "error" and rows["link_out.jpg"]["image"] is None
    assert "outside" in rows["link_out.jpg"]["error"]
    assert rows["link_in.jpg"]["status"] == "ok"


def test_image_folder_errors(tmp_path):
    (tmp_path / "notes.md").write_text("no images")
    with pytest.raises(InputError, match="image files"):
        ImageFolderReader([tmp_path], ColumnSpec())
    (tmp_path / "x.png").write_bytes(_img(1, "PNG"))
    (tmp_path / "metadata.csv").write_text("caption\nno file column\n")
    with pytest.raises(InputError, match="file column"):
        ImageFolderReader([tmp_path], ColumnSpec())


def test_two_image_roots_get_prefixed_ids(tmp_path):
    for name in ("set1", "set2"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x.png").write_bytes(_img(1, "PNG"))
    t = _collect(ImageFolderReader([tmp_path / "set2", tmp_path / "set1"], ColumnSpec()))
    assert t["item_id"].to_pylist() == ["set1/x.png", "set2/x.png"]


# ------------------------------------------------------------------------------------------ Hugging Face


_HF_FEATURES = {"image": {"_type": "Image"}, "caption": {"dtype": "string", "_type": "Value"},
                "emb": {"feature": {"dtype": "float16", "_type": "Value"}, "length": 4, "_type": "Sequence"}}


def _hf_table(n: int, first: int = 0, with_path: Path | None = None) -> pa.Table:
    images = [{"bytes": _img(first + i, "PNG"), "path": None} for i in range(n)]
    if with_path is not None:
        images[-1] = {"bytes": None, "path": str(with_path)}
    emb = pa.FixedSizeListArray.from_arrays(
        pa.array(np.arange(n * 4, dtype=np.float16) / 10, type=pa.float16()), 4)
    schema = pa.schema([("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                        ("caption", pa.string()), ("emb", emb.type)],
                       metadata={"huggingface": json.dumps({"info": {"features": _HF_FEATURES}})})
    return pa.table([pa.array(images, type=schema.field("image").type),
                     pa.array([f"a soft gradient {first + i}" for i in range(n)]), emb], schema=schema)


def _save_to_disk(d: Path, tables: list[pa.Table], split="train"):
    d.mkdir(parents=True)
    names = []
    for i, t in enumerate(tables):
        name = f"data-{i:05d}-of-{len(tables):05d}.arrow"
        with pa.OSFile(str(d / name), "wb") as sink, pa.ipc.new_stream(sink, t.schema) as w:
            w.write_table(t, max_chunksize=2)
        names.append({"filename": name})
    (d / "state.json").write_text(json.dumps({"_data_files": names, "_split": split, "_fingerprint": "x"}))
    (d / "dataset_info.json").write_text(json.dumps({"features": _HF_FEATURES}))


def test_hf_save_to_disk_dataset(tmp_path):
    side = tmp_path / "side.png"
    side.write_bytes(_img(99, "PNG"))
    _save_to_disk(tmp_path / "ds", [_hf_table(3), _hf_table(2, first=3, with_path=side)])
    reader = open_input([str(tmp_path / "ds")], ColumnSpec(embedding="emb"))
    assert isinstance(reader, HFDatasetReader) and reader.embedding_dim() == 4
    t = _collect(reader, batch_size=2, start_row=10)
    assert t.num_rows == 5
    assert t["item_id"].to_pylist() == [f"train/{i}" for i in range(5)]
    assert t["row_idx"].to_pylist() == list(range(10, 15))
    assert t["text"][4].as_py() == "a soft gradient 4"
    assert t["image"][0].as_py() == _img(0, "PNG") and t["image"][4].as_py() == side.read_bytes()
    assert np.allclose(t["embedding"][1].as_py(), (np.arange(4, 8, dtype=np.float16) / 10).astype(np.float32))
    assert set(t["status"].to_pylist()) == {"ok"}


def test_hf_dataset_dict_and_missing_image_path(tmp_path):
    root = tmp_path / "dd"
    _save_to_disk(root / "train", [_hf_table(2)])
    _save_to_disk(root / "test", [_hf_table(2, first=5, with_path=tmp_path / "gone.png")], split="test")
    (root / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    t = _collect(HFDatasetReader([root], ColumnSpec()))
    assert t["item_id"].to_pylist() == ["train/0", "train/1", "test/0", "test/1"]
    assert t["status"].to_pylist() == ["ok", "ok", "ok", "error"]
    assert "missing" in t["error"][3].as_py()


def test_hf_parquet_export_with_list_float32_embeddings(tmp_path):
    d = tmp_path / "hub" / "data"
    d.mkdir(parents=True)
    table = _hf_table(3)
    emb = pa.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]], type=pa.list_(pa.float32()))
    table = table.set_column(2, "emb", emb).append_column("key", pa.array(["k0", "k1", "k2"]))
    pq.write_table(table, d / "train-00000-of-00001.parquet")
    assert is_hf_parquet(d / "train-00000-of-00001.parquet")
    t = _collect(HFDatasetReader([tmp_path / "hub"], ColumnSpec(embedding="emb")))
    assert t["item_id"].to_pylist() == ["k0", "k1", "k2"]
    assert t["embedding"].to_pylist()[2] == [0.5, 0.5]
    assert t["image"][1].as_py() == _img(1, "PNG")


def test_hf_fixed_size_float32_embeddings_without_images(tmp_path):
    emb = pa.FixedSizeListArray.from_arrays(pa.array([1.0, 0.0, np.nan, 1.0, 0.6, 0.8], type=pa.float32()), 2)
    table = pa.table({"text": ["a red kite", "a tall tree", "a stone bridge"], "vec": emb})
    _save_to_disk(tmp_path / "ds", [table])
    (tmp_path / "ds" / "dataset_info.json").write_text("{}")
    t = _collect(HFDatasetReader([tmp_path / "ds"], ColumnSpec(embedding="vec")))
    assert t["status"].to_pylist() == ["ok", "error", "ok"]
    assert np.allclose(t["embedding"][2].as_py(), [0.6, 0.8]) and t["embedding"][1].as_py() is None
    assert t["image"].null_count == 3
    from analyzer.ingest.schema import make_item_id
    assert t["item_id"][0].as_py() == make_item_id(None, "a red kite")  # no id, no image: the tabular rule


def test_hf_errors(tmp_path):
    with pytest.raises(InputError, match="Hugging Face"):
        HFDatasetReader([tmp_path], ColumnSpec())
    _save_to_disk(tmp_path / "ds", [_hf_table(2)])
    with pytest.raises(InputError, match="--text-column"):
        HFDatasetReader([tmp_path / "ds"], ColumnSpec(text="nope"))
    (tmp_path / "ds" / "data-00000-of-00001.arrow").write_bytes(b"corrupt")
    with pytest.raises(InputError, match="readable arrow"):
        HFDatasetReader([tmp_path / "ds"], ColumnSpec())
