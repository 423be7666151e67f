"""Media throughput: video decode and embedding (frames/s, videos/s), vPDQ hashing, the image detector, audio files/s.

Generated benign media only (flat colours with a moving bar, sine tones plus noise), encoded with PyAV. Models are
randomly initialised at their real sizes (no download): ``openclip:ViT-B-32:random`` for frames (the compute of
the real ViT-B-32) and transformers' default ``ClapConfig`` (HTSAT-tiny audio tower + RoBERTa text tower, the
``laion/clap-htsat-unfused`` architecture) for audio. Prints one JSON object.

    python benchmarks/bench_media.py [--videos 8] [--seconds 10] [--fps 30] [--size 320x240] [--audio-files 8]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_video(seconds: float, fps: int, size: tuple[int, int], seed: int) -> bytes:
    import av

    w, h = size
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, 3)
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as out:
        s = out.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"preset": "veryfast", "crf": "23"}  # libx264 defaults: keyframes every 250 frames at most
        s.time_base = Fraction(1, fps)
        for i in range(int(seconds * fps)):
            arr = np.empty((h, w, 3), np.uint8)
            arr[:] = (base + i) % 256
            x = (i * 7) % w
            arr[:, x:x + 16] = 255 - arr[:, x:x + 16]
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            frame.pts = i
            for p in s.encode(frame):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return buf.getvalue()


def make_audio(seconds: float, seed: int) -> bytes:
    import av

    rate = 44100
    t = np.arange(int(seconds * rate)) / rate
    x = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * np.random.default_rng(seed).normal(size=len(t))).astype(np.float32)
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="flac") as out:
        s = out.add_stream("flac", rate=rate, layout="mono")
        res = av.AudioResampler(format=s.codec_context.format.name, layout="mono", rate=rate)
        frame = av.AudioFrame.from_ndarray(x[None, :], format="flt", layout="mono")
        frame.sample_rate = rate
        for f in res.resample(frame) + res.resample(None):
            for p in s.encode(f):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return buf.getvalue()


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--size", default="320x240")
    ap.add_argument("--encoder", default="openclip:ViT-B-32:random")
    ap.add_argument("--audio-files", type=int, default=8)
    ap.add_argument("--audio-seconds", type=float, default=10.0)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from analyzer.encoders import get_encoder
    from analyzer.encoders.nudity_detector import NudityDetector
    from analyzer.hashes.vpdq import vpdq_hash
    from analyzer.ingest.audio import decode_windows
    from analyzer.ingest.video import sample_frames

    w, h = (int(v) for v in args.size.split("x"))
    videos = [make_video(args.seconds, args.fps, (w, h), i) for i in range(args.videos)]
    res: dict = {"videos": args.videos, "video_seconds": args.seconds, "fps": args.fps, "size": args.size,
                 "cpu_count": os.cpu_count(), "load_avg_start": [round(x, 2) for x in os.getloadavg()]}

    # decode: the tag stage's bounded sampling (keyframes + uniform, seek per target)
    sampled, dt = timed(lambda: [sample_frames(v)[1] for v in videos])
    n_frames = sum(len(f) for f in sampled)
    res["sample_decode"] = {"seconds": round(dt, 3), "sampled_frames": n_frames,
                            "sampled_frames_per_s": round(n_frames / dt, 1), "videos_per_s": round(len(videos) / dt, 2)}
    # vPDQ: every frame decoded, one PDQ a second at full resolution
    feats, dt = timed(lambda: [vpdq_hash(v) for v in videos])
    decoded = int(args.videos * args.seconds * args.fps)
    res["vpdq"] = {"seconds": round(dt, 3), "decoded_frames_per_s": round(decoded / dt, 1),
                   "hashes": int(sum(len(f.hashes) for f in feats)), "videos_per_s": round(len(videos) / dt, 2)}
    # embedding the sampled frames with the image tower
    enc = get_encoder(args.encoder)
    frames = [f.image for fs in sampled for f in fs]
    enc.encode_images_safe(frames[:8])  # load and warm up
    _, dt = timed(lambda: enc.encode_images_safe(frames))
    res["embed"] = {"encoder": args.encoder, "device": enc.resolved_device, "seconds": round(dt, 3),
                    "frames_per_s": round(len(frames) / dt, 1), "videos_per_s": round(len(videos) / dt, 2)}
    det = NudityDetector()
    det.score(frames[:4])
    _, dt = timed(lambda: det.score(frames))
    res["nudenet"] = {"seconds": round(dt, 3), "frames_per_s": round(len(frames) / dt, 1)}
    res["video_end_to_end_videos_per_s"] = round(
        len(videos) / (res["sample_decode"]["seconds"] + res["embed"]["seconds"] + res["nudenet"]["seconds"]), 2)

    # audio: decode + window + CLAP (default architecture, random weights, saved and loaded like a real checkpoint)
    audio = [make_audio(args.audio_seconds, i) for i in range(args.audio_files)]
    _, dt = timed(lambda: [decode_windows(a, rate=48000, window_s=10.0) for a in audio])
    res["audio_decode"] = {"files_per_s": round(len(audio) / dt, 1), "seconds": round(dt, 3)}
    import torch
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, RobertaTokenizerFast

    with tempfile.TemporaryDirectory(prefix="bench-clap-") as tmp:
        torch.manual_seed(0)
        ClapModel(ClapConfig()).save_pretrained(tmp)
        ClapFeatureExtractor(truncation="rand_trunc").save_pretrained(tmp)
        vocab = Path(tmp) / "vocab.json"
        vocab.write_text(json.dumps({"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "a": 4}))
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n")
        RobertaTokenizerFast(vocab_file=str(vocab), merges_file=str(Path(tmp) / "merges.txt")).save_pretrained(tmp)
        clap = get_encoder(f"clap:{tmp}")

        def run_audio():
            for a in audio:
                _, wins = decode_windows(a, rate=clap.audio_sample_rate, window_s=clap.audio_window_s)
                clap.encode_audio([x for _, x in wins])

        clap.encode_audio([np.zeros(48000, np.float32)])
        _, dt = timed(run_audio)
    res["audio_clap"] = {"device": clap.resolved_device, "files_per_s": round(len(audio) / dt, 2),
                         "seconds": round(dt, 3), "file_seconds": args.audio_seconds}
    res["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
