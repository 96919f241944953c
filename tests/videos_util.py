"""Tiny real videos made on the fly with PyAV, for tests (no binaries in the repo).

Stable helpers other test modules may import (`from tests.videos_util import ...`):
- `make_moving_square_video(path, shift=(4, 2), n_frames=24, size=(340, 256), gop_size=12,
  square=96, start=(64, 48), seed=0) -> SquareVideo`: a textured square moving by `shift`
  pixels per frame over a static textured background, encoded with `encode_video` (the csvr
  settings). `SquareVideo.box(t)` gives the square's (x0, y0, x1, y1) in frame t.
- `make_mpeg4_with_bframes(path, n_frames=24, size=(340, 256))`: MPEG-4 Part 2 with B-frames.
- `make_h264(path, n_frames=24, size=(320, 240))`: H.264 (libx264, B-frames on).
- `make_all_intra(path, n_frames=12, size=(340, 256))`: MPEG-4 Part 2, every frame an I-frame.
- `truncate_copy(src, dst, fraction=0.5)`, `flip_bytes_copy(src, dst)`, `write_random_bytes(dst)`,
  `write_empty(dst)`: damaged files.
- `textured(rng, height, width, cell=4)`: smooth random texture [H, W, 3] uint8. Smoothing over
  a few pixels keeps block matching unambiguous *and* lets the encoder's predictive motion
  search find the true vector (white noise sends it to intra blocks in the first P-frames).
- `SHARED`, `VIDEOS`, `UCF`: paths of the shared read-only data (may be absent: skip then).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from csvr.data.encode import encode_video

# CSVR_NO_SHARED=1 hides ../shared: the suite then runs as on a fresh clone.
SHARED = (
    Path(__file__).resolve().parents[1] / ".." / ("shared-hidden" if os.environ.get("CSVR_NO_SHARED") else "shared")
)
VIDEOS = SHARED / "videos"
UCF = SHARED / "data" / "ucf101_3cls"


def textured(rng: np.random.Generator, height: int, width: int, cell: int = 4) -> np.ndarray:
    """Random texture of `cell`-pixel cells, box-blurred over `cell` pixels: [H, W, 3] uint8."""
    small = rng.integers(0, 256, (-(-height // cell), -(-width // cell), 3)).astype(np.float32)
    t = small.repeat(cell, 0).repeat(cell, 1)[:height, :width]
    for ax in (0, 1):
        pad = [(cell, cell) if a == ax else (0, 0) for a in range(3)]
        c = np.cumsum(np.pad(t, pad, mode="edge"), axis=ax)
        n = c.shape[ax]
        t = (np.take(c, range(2 * cell, n), axis=ax) - np.take(c, range(0, n - 2 * cell), axis=ax)) / (2 * cell)
    return t.clip(0, 255).astype(np.uint8)


@dataclass
class SquareVideo:
    path: Path
    shift: tuple[int, int]
    start: tuple[int, int]
    square: int
    n_frames: int
    size: tuple[int, int]  # (width, height)

    def box(self, t: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of the square in frame t (x1, y1 exclusive)."""
        x0 = self.start[0] + self.shift[0] * t
        y0 = self.start[1] + self.shift[1] * t
        return x0, y0, x0 + self.square, y0 + self.square


def moving_square_frames(
    shift: tuple[int, int] = (4, 2),
    n_frames: int = 24,
    size: tuple[int, int] = (340, 256),
    square: int = 96,
    start: tuple[int, int] = (64, 48),
    seed: int = 0,
) -> Iterator[np.ndarray]:
    """Frames [H, W, 3] uint8 RGB of the moving square (positions may leave the frame: clipped)."""
    rng = np.random.default_rng(seed)
    w, h = size
    bg = textured(rng, h, w)
    sq = textured(rng, square, square)
    for t in range(n_frames):
        f = bg.copy()
        x0, y0 = start[0] + shift[0] * t, start[1] + shift[1] * t
        xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + square, w), min(y0 + square, h)
        if xa < xb and ya < yb:
            f[ya:yb, xa:xb] = sq[ya - y0 : yb - y0, xa - x0 : xb - x0]
        yield f


def make_moving_square_video(
    path: str | os.PathLike,
    shift: tuple[int, int] = (4, 2),
    n_frames: int = 24,
    size: tuple[int, int] = (340, 256),
    gop_size: int = 12,
    square: int = 96,
    start: tuple[int, int] = (64, 48),
    seed: int = 0,
) -> SquareVideo:
    """Encode the moving square with csvr's settings (MPEG-4 Part 2, no B-frames, qscale 3)."""
    path = Path(path)
    frames = moving_square_frames(shift, n_frames, size, square, start, seed)
    encode_video(frames, path, width=size[0], height=size[1], gop_size=gop_size)
    return SquareVideo(path, shift, start, square, n_frames, size)


def _encode_raw(path: str | os.PathLike, codec: str, n_frames: int, size: tuple[int, int], **ctx: object) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    with av.open(str(path), "w") as out:
        s = out.add_stream(codec, rate=25)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.time_base = Fraction(1, 25)
        for k, v in ctx.items():
            setattr(s.codec_context, k, v)
        for t, rgb in enumerate(moving_square_frames(n_frames=n_frames, size=size, square=64, start=(20, 20))):
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
            f.pts = t
            out.mux(s.encode(f))
        out.mux(s.encode(None))
    return path


def make_mpeg4_with_bframes(path: str | os.PathLike, n_frames: int = 24, size: tuple[int, int] = (340, 256)) -> Path:
    """MPEG-4 Part 2 with up to 2 B-frames between references (GOP 12)."""
    return _encode_raw(path, "mpeg4", n_frames, size, gop_size=12, max_b_frames=2)


def make_h264(path: str | os.PathLike, n_frames: int = 24, size: tuple[int, int] = (320, 240)) -> Path:
    """H.264 (libx264) with B-frames."""
    return _encode_raw(path, "libx264", n_frames, size, gop_size=12, max_b_frames=2)


def make_all_intra(path: str | os.PathLike, n_frames: int = 12, size: tuple[int, int] = (340, 256)) -> Path:
    """MPEG-4 Part 2 where every frame is a key frame (no P-frames)."""
    return _encode_raw(path, "mpeg4", n_frames, size, gop_size=1, max_b_frames=0)


def truncate_copy(src: str | os.PathLike, dst: str | os.PathLike, fraction: float = 0.5) -> Path:
    """Copy the first `fraction` of src's bytes (like `head -c`)."""
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * fraction)])
    return Path(dst)


def flip_bytes_copy(src: str | os.PathLike, dst: str | os.PathLike, n: int = 2000) -> Path:
    """Copy src with `n` bytes in its middle inverted."""
    data = bytearray(Path(src).read_bytes())
    mid = len(data) // 2
    for i in range(mid, min(mid + n, len(data))):
        data[i] ^= 0xFF
    Path(dst).write_bytes(bytes(data))
    return Path(dst)


def write_random_bytes(dst: str | os.PathLike, n: int = 100_000, seed: int = 0) -> Path:
    Path(dst).write_bytes(np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes())
    return Path(dst)


def write_empty(dst: str | os.PathLike) -> Path:
    Path(dst).write_bytes(b"")
    return Path(dst)


# Two clips per class of the shared UCF-101 slice: one train, one test (different groups).
UCF_MINI_TRAIN = [
    "BabyCrawling/v_BabyCrawling_g19_c01.avi",
    "Punch/v_Punch_g15_c06.avi",
    "PushUps/v_PushUps_g16_c04.avi",
]
UCF_MINI_TEST = [
    "BabyCrawling/v_BabyCrawling_g10_c02.avi",
    "Punch/v_Punch_g10_c03.avi",
    "PushUps/v_PushUps_g11_c03.avi",
]


def make_ucf_download(base: str | os.PathLike, n_frames: int = 24) -> Path:
    """A tiny UCF-101-shaped download made on the fly: `base/UCF-101/<Class>/v_<Class>_gGG_cCC.avi`
    for the UCF_MINI_* clips plus one clip of group 3 per class (in neither split), each a
    short MPEG-4 clip of a textured square moving in a class-specific direction."""
    from csvr.data.encode import encode_video

    root = Path(base) / "UCF-101"
    shifts = {"BabyCrawling": (3, 0), "Punch": (0, 3), "PushUps": (-2, 2)}
    extra = [f"{c}/v_{c}_g03_c01.avi" for c in shifts]
    for i, rel in enumerate(UCF_MINI_TRAIN + UCF_MINI_TEST + extra):
        frames = moving_square_frames(
            shifts[rel.split("/")[0]], n_frames, size=(96, 64), square=24, start=(36, 20), seed=i
        )
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        encode_video(frames, root / rel, width=96, height=64)
    return root


def make_generated_ucf_mini(base: str | os.PathLike) -> tuple[Path, Path]:
    """UCF_MINI_* generated (make_ucf_download) and cut by `csvr make-slice`, whether or not the
    shared slice exists: returns (base/UCF-101, base/ucfTrainTestlist)."""
    from csvr.data.slice import make_slice

    base = Path(base)
    download = make_ucf_download(base / "download")
    make_slice(
        download,
        base,
        ["BabyCrawling", "Punch", "PushUps"],
        train_groups=list(range(15, 26)),
        test_groups=list(range(8, 15)),
    )
    return base / "UCF-101", base / "ucfTrainTestlist"


def make_ucf_mini(base: str | os.PathLike) -> tuple[Path, Path]:
    """UCF_MINI_* in the official layout with CRLF list files: returns (base/UCF-101,
    base/ucfTrainTestlist). Real clips linked from the shared slice when it is there;
    otherwise a generated download (make_ucf_download) cut by `csvr make-slice`."""
    base = Path(base)
    if not UCF.is_dir():
        return make_generated_ucf_mini(base)
    root, lists = base / "UCF-101", base / "ucfTrainTestlist"
    for rel in UCF_MINI_TRAIN + UCF_MINI_TEST:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink((UCF / "UCF-101" / rel).resolve(), root / rel)
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_bytes((UCF / "ucfTrainTestlist" / "classInd.txt").read_bytes())
    (lists / "trainlist01.txt").write_text(
        "".join(f"{r} {i + 1}\r\n" for i, r in enumerate(UCF_MINI_TRAIN)), newline=""
    )
    (lists / "testlist01.txt").write_text("".join(f"{r}\r\n" for r in UCF_MINI_TEST), newline="")
    return root, lists
