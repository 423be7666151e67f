"""Images/s of the open_clip image tower on whatever device is present; prints one JSON object.

Randomly initialised weights of a real architecture (default ViT-B-32: speed does not depend on the
weights), generated JPEG images (gradients plus noise, img2dataset-like 256 px). Three figures:

- ``model_images_per_s``: the image tower alone on preprocessed tensors (the roofline of this device);
- ``end_to_end_images_per_s``: ``OpenClipEncoder.encode_images_safe`` on JPEG bytes (decode, preprocess in
  DataLoader workers, transfer, fp16 forward on GPU);
- ``decode_only_images_per_s``: decode + preprocess in one process (what one CPU core sustains).

Usage: ``python benchmarks/bench_openclip.py [--arch ViT-B-32] [--n 512] [--batch-size 256] [--workers N]``
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def make_images(n: int, side: int = 256, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 255, side, dtype=np.float32)
    out = []
    for i in range(n):
        base = (x[None, :, None] * rng.uniform(0.3, 1.0, 3)[None, None, :] + x[:, None, None] * 0.2) % 256
        noise = rng.normal(0, 12, (side, side, 3))
        arr = np.clip(base + noise, 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr, "RGB").save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def main(argv=None) -> dict:
    import torch

    from analyzer.encoders.openclip import OpenClipEncoder

    ap = argparse.ArgumentParser()
    cuda = torch.cuda.is_available()
    ap.add_argument("--arch", default="ViT-B-32")
    ap.add_argument("--n", type=int, default=4096 if cuda else 192)
    ap.add_argument("--batch-size", type=int, default=256 if cuda else 32)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--device", default=None)
    args = ap.parse_args(argv)

    enc = OpenClipEncoder(args.arch, "random", batch_size=args.batch_size, device=args.device,
                          num_workers=args.workers)
    device = enc.resolved_device
    t0 = time.perf_counter()
    model, preprocess, _, dtype, dim = enc._load()
    load_s = time.perf_counter() - t0
    images = make_images(args.n)

    # decode + preprocess only (one process)
    k = min(len(images), 128)
    from analyzer.ingest.images import decode_image

    t0 = time.perf_counter()
    for b in images[:k]:
        preprocess(decode_image(b)[0])
    decode_rate = k / (time.perf_counter() - t0)

    # model only
    x = torch.stack([preprocess(Image.open(io.BytesIO(b)).convert("RGB")) for b in images[: args.batch_size]])
    x = x.to(device, dtype=dtype)
    with torch.inference_mode():
        model.encode_image(x)  # warm-up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        reps = max(1, args.n // args.batch_size)
        t0 = time.perf_counter()
        for _ in range(reps):
            model.encode_image(x)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        model_rate = reps * len(x) / (time.perf_counter() - t0)

    # end to end
    enc.encode_images_safe(images[: args.batch_size])  # warm-up
    t0 = time.perf_counter()
    emb, errors = enc.encode_images_safe(images)
    e2e_rate = len(images) / (time.perf_counter() - t0)

    result = {
        "benchmark": "openclip_image_embedding",
        "arch": args.arch,
        "weights": "random-init",
        "device": device,
        "device_name": torch.cuda.get_device_name(0) if device.startswith("cuda") else platform.processor()
        or platform.machine(),
        "precision": str(dtype).replace("torch.", ""),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "n_images": len(images),
        "image_size": "256x256 JPEG",
        "batch_size": args.batch_size,
        "num_workers": enc.num_workers if enc.num_workers is not None else max(0, min(8, (os.cpu_count() or 1) - 1)),
        "embedding_dim": dim,
        "model_load_s": round(load_s, 2),
        "model_images_per_s": round(model_rate, 1),
        "end_to_end_images_per_s": round(e2e_rate, 1),
        "decode_only_images_per_s_one_process": round(decode_rate, 1),
        "failed": sum(e is not None for e in errors),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
