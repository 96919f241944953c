"""Data-side speed as ratios measured in one process (no absolute timings in tests).

(a) loading K=3 sampled GOPs of a long video (open + GOP table + read_gop with accumulate)
    vs decoding every frame of it to RGB with PyAV. Aim <= 0.25.
(b) I-frame + MV + residual extraction of a GOP vs plain RGB decode of the same 12 frames.
    Aim <= 1.5.
The long video is Megamind.avi from ../shared/videos looped to ~3000 frames and re-encoded with
csvr's settings (a synthetic moving texture when the shared folder is absent).
Run: `python -m bench.bench_data` (or via bench/run.py, which calls `run()`).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import av
import numpy as np

from csvr.data.codec import CompressedVideo
from csvr.data.encode import encode_video

VIDEOS = Path(__file__).resolve().parents[1] / ".." / "shared" / "videos"


def _long_frames(n: int):
    src = VIDEOS / "Megamind.avi"
    if src.exists():
        with av.open(str(src)) as c:
            clip = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    else:
        rng = np.random.default_rng(0)
        base = rng.integers(0, 256, (256, 680, 3), dtype=np.uint8)
        clip = [base[:, 2 * t: 2 * t + 340] for t in range(170)]
    for t in range(n):
        yield clip[t % len(clip)]


def _best(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def _decode_all_rgb(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(f.to_ndarray(format="rgb24").shape[0] > 0 for f in c.decode(video=0))


def _decode_gop_rgb(path: Path, start_pts: int, n: int) -> None:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        c.seek(start_pts, stream=s, backward=True, any_frame=False)
        for k, f in enumerate(c.decode(s)):
            f.to_ndarray(format="rgb24")
            if k + 1 == n:
                break


def run(n_frames: int = 3000) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long.avi"
        encode_video(_long_frames(n_frames), path)

        def sampled(accumulate: bool) -> None:
            with CompressedVideo(path) as v:
                g = v.num_gops
                for i in (g // 6, g // 2, 5 * g // 6):  # TSN test-time: centre of each third
                    v.read_gop(i, accumulate=accumulate)

        full = _best(lambda: _decode_all_rgb(path), 2)
        gops_acc = _best(lambda: sampled(True))
        with CompressedVideo(path) as v:
            gops = list(range(1, v.num_gops - 1, max(1, v.num_gops // 12)))[:12]
            key_pts = [v._key_pts[i] for i in gops]

            def extract(accumulate: bool) -> None:
                for i in gops:
                    v.read_gop(i, accumulate=accumulate)

            ext = _best(lambda: extract(False))
            ext_acc = _best(lambda: extract(True))
        plain = _best(lambda: [_decode_gop_rgb(path, p, 12) for p in key_pts])
    return {
        "data/k3_gops_vs_full_decode": {"value": round(gops_acc / full, 4), "unit": "ratio",
                                        "aim": "<= 0.25"},
        "data/mv_residual_vs_rgb_decode": {"value": round(ext / plain, 3), "unit": "ratio",
                                           "aim": "<= 1.5"},
        "data/mv_residual_acc_vs_rgb_decode": {"value": round(ext_acc / plain, 3), "unit": "ratio",
                                               "aim": "<= 1.5"},
        "data/full_decode_fps": {"value": round(n_frames / full), "unit": "frames/s", "aim": "info"},
        "data/gop_read_ms": {"value": round(1000 * ext / len(gops), 1), "unit": "ms/GOP",
                             "aim": "info"},
    }


if __name__ == "__main__":
    for name, row in run().items():
        print(f"{name:40s} {row['value']:>10} {row['unit']:10s} aim {row['aim']}")
