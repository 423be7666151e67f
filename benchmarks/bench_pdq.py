"""PDQ hash-list matching benchmark: prints one JSON object.

Builds a random PDQ list (default 1M entries) written as a 64-hex text file, loads it with
``load_hash_lists`` (parse time), builds the index (build time), then measures:

* ``hash_queries_per_s``: single 256-bit hashes searched within Hamming distance 31 (faiss
  IndexBinaryFlat range search, exact);
* ``items_per_s_search``: items searched with their 8 orientation hashes (search only, hashes given);
* ``images_per_s_end_to_end``: ``HashMatcher.match_batch`` on generated benign PNG images (decode + 8
  PDQ computations + search), for orientations "exact" and "dihedral";
* recall on planted near-duplicates (list entries 0..31 bits away from a query) and peak RSS;
* the orientation check: rotated/flipped copies (half re-encoded as JPEG q70) of generated images, and how
  many of them each orientation mode ("exact": 8 PDQ computations, "dihedral": compute_dihedral) misses.

Usage: ``python benchmarks/bench_pdq.py [--entries 1000000] [--queries 4000] [--images 64]
[--orientation-images 20] [--seed 0]``
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analyzer.hashes.matching import HashMatcher, load_hash_lists  # noqa: E402
from analyzer.hashes.pdq import PdqIndex  # noqa: E402


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _flip_bits(rng, row: np.ndarray, n: int) -> np.ndarray:
    bits = np.unpackbits(row)
    idx = rng.choice(256, size=n, replace=False)
    bits[idx] ^= 1
    return np.packbits(bits)


def _images(n: int, seed: int) -> list[bytes]:
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        w, h = 384, 288
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 255 / (w + h)], -1) * rng.uniform(0.3, 1, 3)
        im = Image.fromarray((base % 256).astype(np.uint8))
        draw = ImageDraw.Draw(im)
        for _ in range(12):
            x0, y0, r = int(rng.integers(0, w)), int(rng.integers(0, h)), int(rng.integers(10, 80))
            draw.ellipse([x0, y0, x0 + r, y0 + r], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        buf = io.BytesIO()
        im.save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def _orientation_recall(n_images: int, seed: int) -> dict:
    """Rotated/flipped copies (half re-encoded as JPEG q70) of generated images vs their original hash:
    how many each orientation mode finds within distance 31."""
    from PIL import Image, ImageDraw

    from analyzer.hashes.pdq import decode_rgb, pdq_hashes

    rng = np.random.default_rng(seed)
    dist = {"exact": [], "dihedral": []}
    done = 0
    while done < n_images:
        w, h = int(rng.integers(100, 900)), int(rng.integers(100, 900))
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 255 / (w + h)], -1) * rng.uniform(0.3, 1, 3)
        im = Image.fromarray((base % 256).astype(np.uint8))
        draw = ImageDraw.Draw(im)
        for _ in range(14):
            x0, y0, r = int(rng.integers(0, w)), int(rng.integers(0, h)), int(rng.integers(10, 70))
            draw.rectangle([x0, y0, x0 + r, y0 + r], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        arr = np.asarray(im)
        ref, quality = pdq_hashes(arr, "none")
        if quality < 50:
            continue
        done += 1
        for k in range(1, 8):
            t = np.rot90(arr, k % 4)
            t = np.ascontiguousarray(t[:, ::-1] if k >= 4 else t)
            for as_jpeg in (False, True):
                if as_jpeg:
                    buf = io.BytesIO()
                    Image.fromarray(t).save(buf, "JPEG", quality=70)
                    t2 = decode_rgb(buf.getvalue())
                else:
                    t2 = t
                for mode in dist:
                    rows = pdq_hashes(t2, mode)[0]
                    dist[mode].append(int(np.unpackbits(rows ^ ref[0], axis=1).sum(axis=1).min()))
    out = {"orientation_copies": len(dist["exact"])}
    for mode, d in dist.items():
        d = np.asarray(d)
        out[f"orientation_missed_{mode}"] = int((d > 31).sum())
        out[f"orientation_max_distance_{mode}"] = int(d.max())
        out[f"orientation_mean_distance_{mode}"] = round(float(d.mean()), 2)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=4000)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--planted", type=int, default=200)
    ap.add_argument("--orientation-images", type=int, default=20,
                    help="generated images for the exact-vs-dihedral orientation check (0: skip)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    result: dict = {"benchmark": "pdq_match", "entries": args.entries, "seed": args.seed,
                    "cpu_count": os.cpu_count(), "python": platform.python_version()}
    try:
        import faiss

        result["faiss_version"] = faiss.__version__
        result["faiss_threads"] = faiss.omp_get_max_threads()
    except ImportError:
        result["faiss_version"] = None

    entries = rng.integers(0, 256, (args.entries, 32), dtype=np.uint8)
    queries = rng.integers(0, 256, (args.queries, 32), dtype=np.uint8)
    # planted near-duplicates: list entries at known distances 0..31 from the first queries
    planted_dist = rng.integers(0, 32, args.planted)
    for j in range(args.planted):
        entries[j] = _flip_bits(rng, queries[j], int(planted_dist[j]))

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "random_pdq.txt"
        t = time.perf_counter()
        with open(path, "w") as fh:
            fh.writelines(row.tobytes().hex() + "\n" for row in entries)
        result["write_list_s"] = round(time.perf_counter() - t, 3)
        result["list_file_mb"] = round(path.stat().st_size / 1e6, 1)
        t = time.perf_counter()
        lists = load_hash_lists([f"pdq:random={path}"])
        result["load_list_s"] = round(time.perf_counter() - t, 3)
    result["unique_entries"] = lists.lists[0].n_entries
    rss_before_index = _peak_rss_mb()

    t = time.perf_counter()
    matcher = HashMatcher(lists).prepare()
    result["build_index_s"] = round(time.perf_counter() - t, 4)
    index: PdqIndex = matcher.pdq_indexes_["random"]

    index.range_search(queries[:8], 31)  # warm-up
    t = time.perf_counter()
    found = 0
    lims_all = []
    for start in range(0, len(queries), 512):
        lims, dist, rows = index.range_search(queries[start:start + 512], 31)
        found += int(lims[-1])
        lims_all.append(np.diff(lims))
    dt = time.perf_counter() - t
    per_query = np.concatenate(lims_all)
    result["hash_queries"] = int(len(queries))
    result["hash_queries_per_s"] = round(len(queries) / dt, 1)
    result["items_per_s_search"] = round(len(queries) / dt / 8, 1)
    result["planted"] = args.planted
    result["planted_recall"] = float((per_query[: args.planted] > 0).mean()) if args.planted else None
    result["matches_found"] = found

    if args.images:
        images = _images(args.images, args.seed + 1)
        ids = [f"img{i}" for i in range(len(images))]
        for mode in ("exact", "dihedral"):
            m = HashMatcher(lists, orientations=mode).prepare()
            t = time.perf_counter()
            m.match_batch(ids, [None] * len(ids), images)
            dt = time.perf_counter() - t
            result[f"images_per_s_end_to_end_{mode}"] = round(len(images) / dt, 2)
        from analyzer.hashes.pdq import pdq_from_bytes

        t = time.perf_counter()
        for data in images:
            pdq_from_bytes(data, orientations="exact")
        result["images_per_s_hash_only_exact"] = round(len(images) / (time.perf_counter() - t), 2)
        result["image_size"] = "384x288 PNG"

    if args.orientation_images:
        result.update(_orientation_recall(args.orientation_images, args.seed + 2))

    result["peak_rss_mb_after_list_load"] = round(rss_before_index, 1)
    result["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
