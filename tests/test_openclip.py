"""OpenClipEncoder on a tiny randomly initialised open_clip model saved to local checkpoints.

The model is a registered custom config (a few layers, 32-px images) so the whole real code path runs:
config registration, checkpoint loading with weights_only / safetensors, preprocessing, both towers.
Images are generated noise and gradients.
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from analyzer.encoders import get_encoder
from analyzer.encoders.openclip import OpenClipEncoder
from analyzer.errors import InputError

TINY = {"embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import open_clip
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("tinyclip")
    cfg = d / "TinyClipTest.json"
    cfg.write_text(json.dumps(TINY))
    open_clip.add_model_config(cfg)
    other = d / "TinyClipOther.json"
    other.write_text(json.dumps({**TINY, "embed_dim": 16}))
    open_clip.add_model_config(other)
    torch.manual_seed(1)
    model, _, preprocess = open_clip.create_model_and_transforms("TinyClipTest", pretrained=None)
    model.eval()
    state = model.state_dict()
    torch.save(state, d / "tiny.pt")
    save_file({k: v.contiguous() for k, v in state.items()}, d / "tiny.safetensors")
    return {"dir": d, "cfg": cfg, "model": model, "preprocess": preprocess}


def _img(seed: int, fmt="PNG", size=(48, 40)) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, fmt)
    return buf.getvalue()


def _reference(tiny, images: list[bytes]) -> np.ndarray:
    x = torch.stack([tiny["preprocess"](Image.open(io.BytesIO(b)).convert("RGB")) for b in images])
    with torch.no_grad():
        e = tiny["model"].encode_image(x).numpy()
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def test_checkpoint_round_trip_matches_the_model(tiny):
    enc = OpenClipEncoder(str(tiny["cfg"]), str(tiny["dir"] / "tiny.safetensors"), batch_size=3, device="cpu")
    assert enc.dim == 32 and enc.supports_images
    assert enc.name == f"openclip:{tiny['cfg']}:{tiny['dir'] / 'tiny.safetensors'}"
    assert enc.fingerprint == hashlib.sha256((tiny["dir"] / "tiny.safetensors").read_bytes()).hexdigest()
    images = [_img(i) for i in range(5)]
    emb = enc.encode_images(images)
    assert emb.dtype == np.float32 and emb.shape == (5, 32)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert np.allclose(emb, _reference(tiny, images), atol=1e-5)
    pt = OpenClipEncoder("TinyClipTest", str(tiny["dir"] / "tiny.pt"), device="cpu")
    assert np.allclose(pt.encode_images(images), emb, atol=1e-6)
    rnd = OpenClipEncoder("TinyClipTest", "random", device="cpu")
    assert not np.allclose(rnd.encode_images(images), emb, atol=1e-3)  # the checkpoint was really loaded
    assert rnd.fingerprint != enc.fingerprint


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_low_precision_path_matches_fp32(tiny, precision):
    """The half-precision path that runs on GPUs (fp16 there), exercised on the CPU."""
    ckpt = str(tiny["dir"] / "tiny.safetensors")
    images = [_img(i) for i in range(3)]
    full = OpenClipEncoder("TinyClipTest", ckpt, device="cpu")
    low = OpenClipEncoder("TinyClipTest", ckpt, device="cpu", precision=precision)
    e = low.encode_images(images)
    assert e.dtype == np.float32 and np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert np.abs(e - full.encode_images(images)).max() < 2e-2
    assert np.abs(low.encode_text(["a green field"]) - full.encode_text(["a green field"])).max() < 2e-2
    with pytest.raises(InputError, match="precision"):
        OpenClipEncoder("TinyClipTest", ckpt, precision="fp8")


def test_text_tower(tiny):
    enc = get_encoder(f"openclip:TinyClipTest:{tiny['dir'] / 'tiny.pt'}", device="cpu", batch_size=2)
    assert isinstance(enc, OpenClipEncoder)
    t = enc.encode_text(["a red circle", "a blue square", None, "a red circle"])
    assert t.shape == (4, 32) and t.dtype == np.float32
    assert np.allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)
    assert np.allclose(t[0], t[3]) and not np.allclose(t[0], t[1])
    import open_clip

    with torch.no_grad():
        ref = tiny["model"].encode_text(open_clip.get_tokenizer("TinyClipTest")(["a blue square"])).numpy()[0]
    assert np.allclose(t[1], ref / np.linalg.norm(ref), atol=1e-5)
    assert enc.encode_text([]).shape == (0, 32)


def test_encode_images_safe_reports_per_item_errors(tiny):
    enc = OpenClipEncoder("TinyClipTest", str(tiny["dir"] / "tiny.pt"), device="cpu", batch_size=2)
    good = _img(1, "JPEG")
    truncated = _img(2, "PNG")[:60]
    cmyk = io.BytesIO()
    Image.new("CMYK", (30, 30), (10, 200, 30, 0)).save(cmyk, "JPEG")
    pil = Image.new("P", (20, 20), 3)
    items = [good, b"not an image", truncated, cmyk.getvalue(), pil, b""]
    emb, errors = enc.encode_images_safe(items)
    assert [e is None for e in errors] == [True, False, False, True, True, False]
    assert np.all(emb[[1, 2, 5]] == 0)
    assert np.allclose(np.linalg.norm(emb[[0, 3, 4]], axis=1), 1.0, atol=1e-5)
    with pytest.raises(InputError, match="3 that failed"):
        enc.encode_images(items)
    assert enc.encode_images_safe([])[0].shape == (0, 32)


def test_worker_processes_give_the_same_embeddings(tiny):
    items = [_img(i, "JPEG") for i in range(9)] + [b"corrupt"]
    serial = OpenClipEncoder("TinyClipTest", str(tiny["dir"] / "tiny.pt"), device="cpu", num_workers=0, batch_size=4)
    pooled = OpenClipEncoder("TinyClipTest", str(tiny["dir"] / "tiny.pt"), device="cpu", num_workers=2,
                             batch_size=4, parallel_min_items=1)
    e1, err1 = serial.encode_images_safe(items)
    e2, err2 = pooled.encode_images_safe(items)
    assert err1 == err2 and err1[-1] is not None
    assert np.allclose(e1, e2, atol=1e-6)


def test_unpickling_checkpoint_is_refused_and_not_executed(tiny, tmp_path):
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (marker.touch, ())

    bad = tmp_path / "bad.pt"
    torch.save({"state_dict": {"x": Payload()}}, bad)
    with pytest.raises(InputError, match="unpickling"):
        OpenClipEncoder("TinyClipTest", str(bad), device="cpu").encode_text(["x"])
    assert not marker.exists()


def test_bad_arguments_are_one_clear_input_error(tiny, tmp_path):
    with pytest.raises(InputError, match="architecture"):
        OpenClipEncoder("NoSuchArch-99", "random")
    with pytest.raises(InputError, match="pretrained tag"):
        OpenClipEncoder("ViT-B-32", "no_such_tag")
    with pytest.raises(InputError, match="does not exist"):
        OpenClipEncoder("ViT-B-32", str(tmp_path / "missing.safetensors"))
    npz = tmp_path / "w.npz"
    np.savez(npz, a=np.zeros(2))
    with pytest.raises(InputError, match="safetensors"):
        OpenClipEncoder("ViT-B-32", str(npz))
    with pytest.raises(InputError, match="open_clip_config.json"):
        OpenClipEncoder("ViT-B-32", str(tmp_path))
    with pytest.raises(InputError, match="ARCH matches"):  # a TinyClipTest checkpoint in another arch
        OpenClipEncoder("TinyClipOther", str(tiny["dir"] / "tiny.safetensors"), device="cpu").encode_text(["x"])
    with pytest.raises(InputError, match="openclip:ARCH:PRETRAINED"):
        get_encoder("openclip:ViT-B-32")


def test_known_tag_without_cached_weights_fails_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    enc = OpenClipEncoder("ViT-B-32", "laion2b_s34b_b79k", device="cpu")
    assert enc.dim == 512  # read from the config, without weights
    with pytest.raises(InputError, match="expected cached weights.*openclip:ViT-B-32:/path"):
        enc.encode_text(["x"])


def test_local_dir_layout(tiny, tmp_path):
    d = tmp_path / "export"
    d.mkdir()
    (d / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY, "preprocess_cfg": {}}))
    (d / "open_clip_model.safetensors").write_bytes((tiny["dir"] / "tiny.safetensors").read_bytes())
    enc = OpenClipEncoder("TinyClipTest", str(d), device="cpu")
    images = [_img(7)]
    assert np.allclose(enc.encode_images(images), _reference(tiny, images), atol=1e-5)
    assert enc.fingerprint == hashlib.sha256((d / "open_clip_model.safetensors").read_bytes()).hexdigest()


def test_reader_rows_feed_the_encoder(tiny, tmp_path):
    """Image-folder rows -> encode_images_safe: one corrupt file is a per-item error, not a crash."""
    from analyzer.ingest.imagefolder import ImageFolderReader
    from analyzer.ingest.schema import ColumnSpec

    for i in range(3):
        (tmp_path / f"p{i}.png").write_bytes(_img(i))
    (tmp_path / "p3.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    batch = next(ImageFolderReader([tmp_path], ColumnSpec()).iter_batches(16))
    enc = OpenClipEncoder("TinyClipTest", str(tiny["dir"] / "tiny.pt"), device="cpu")
    emb, errors = enc.encode_images_safe(batch.column("image").to_pylist())
    assert [e is None for e in errors] == [True, True, True, False]
    assert np.allclose(emb[:3], _reference(tiny, [_img(i) for i in range(3)]), atol=1e-5)


def test_benchmark_script_exists():
    assert (Path(__file__).resolve().parents[1] / "benchmarks" / "bench_openclip.py").is_file()


def test_dimension_and_fingerprint_do_not_import_open_clip(tiny, tmp_path):
    """A scan of precomputed vectors needs only the dimension and the fingerprint: reading the config JSON must
    not import open_clip or torch (seconds and hundreds of MB). A config given by path still loads for real."""
    import subprocess
    import sys

    code = ("import sys, json; from analyzer.encoders import get_encoder; "
            f"a = get_encoder('openclip:ViT-B-32:random'); b = get_encoder('openclip:{tiny['cfg']}:random'); "
            "print(json.dumps([a.dim, b.dim, len(a.fingerprint), 'open_clip' in sys.modules, 'torch' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [512, 32, 64, False, False]
    enc = OpenClipEncoder(str(tiny["cfg"]), str(tiny["dir"] / "tiny.safetensors"), device="cpu")
    images = [_img(3)]
    assert np.allclose(enc.encode_images(images), _reference(tiny, images), atol=1e-5)
    bad = tmp_path / "NotAConfig.json"
    bad.write_text(json.dumps({"embed_dim": 8}))
    with pytest.raises(InputError, match="model config"):
        OpenClipEncoder(str(bad), "random")
