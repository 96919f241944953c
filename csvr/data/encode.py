"""Write RGB frames as MPEG-4 Part 2 with the CoViAR settings (docs/design.md sections 1 and 7).

Every file written here has GOPs of `gop_size` frames (one I-frame then P-frames), no B-frames
and a fixed quantiser, so `csvr.data.codec.CompressedVideo` can read it. Writes are atomic: the
stream goes to a hidden temp file in the target folder (never the final name) and is moved into
place with `os.replace` only when complete.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from csvr.io import TMP_MARK, atomic_path, temp_path  # noqa: F401 - TMP_MARK re-exported

# Container (FFmpeg muxer) per file suffix. WebM cannot hold MPEG-4 Part 2, so a `.webm`
# name gets a Matroska container (WebM's parent format; every demuxer reads it).
CONTAINERS = {
    ".avi": "avi",
    ".mp4": "mp4",
    ".m4v": "mp4",
    ".mov": "mov",
    ".mkv": "matroska",
    ".webm": "matroska",
    ".mpg": "mpeg",
    ".mpeg": "mpeg",
}

temp_path_for = temp_path  # the temp name used while writing a file (csvr.io's one scheme)


def container_for(path: str | os.PathLike) -> str:
    """FFmpeg muxer name for `path`'s suffix; ValueError for an unknown suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in CONTAINERS:
        raise ValueError(f"{path}: unsupported video suffix {suffix!r}; use one of {sorted(CONTAINERS)}")
    return CONTAINERS[suffix]


def open_encoder(
    container: av.container.OutputContainer, *, width: int, height: int, gop_size: int, qscale: int, fps: int
) -> av.video.stream.VideoStream:
    """Add an MPEG-4 Part 2 stream with fixed qscale, GOP `gop_size`, no B-frames."""
    stream = container.add_stream("mpeg4", rate=fps)
    stream.width, stream.height = width, height
    stream.pix_fmt = "yuv420p"
    stream.time_base = Fraction(1, fps)
    cc = stream.codec_context
    cc.time_base = Fraction(1, fps)
    cc.gop_size = gop_size
    cc.max_b_frames = 0
    cc.flags |= av.codec.context.Flags.qscale
    cc.global_quality = qscale * 118  # FF_QP2LAMBDA: lambda units per quantiser step
    # Keep the GOP exactly `gop_size` long: no scene-cut key frames in between.
    cc.options = {"sc_threshold": "1000000000"}
    return stream


def encode_video(
    frames: Iterable[np.ndarray],
    path: str | os.PathLike,
    *,
    width: int = 340,
    height: int = 256,
    gop_size: int = 12,
    qscale: int = 3,
    fps: int = 25,
    check: Callable[[Path, int], None] | None = None,
) -> int:
    """Encode `frames` (each [H, W, 3] uint8 RGB, any size: resized to width x height) to `path`.

    `frames` may also yield `av.VideoFrame`s (any pixel format), which skips an RGB round trip.

    The container comes from the suffix (`CONTAINERS`). Returns the number of frames written.
    `check(temp_path, frames_written)`, when given, runs on the complete temp file before it
    takes the final name; whatever it raises aborts the write. Raises ValueError when `frames`
    is empty; on any error (or interrupt) no file is left behind.
    """
    path = Path(path)
    fmt = container_for(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format=fmt) as out:
            stream = open_encoder(out, width=width, height=height, gop_size=gop_size, qscale=qscale, fps=fps)
            for rgb in frames:
                if isinstance(rgb, av.VideoFrame):
                    frame = rgb
                else:
                    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb, dtype=np.uint8), format="rgb24")
                frame = frame.reformat(width=width, height=height, format="yuv420p")
                frame.pict_type = 0  # NONE: let the encoder choose I/P by gop_size
                frame.pts = n
                frame.time_base = Fraction(1, fps)
                out.mux(stream.encode(frame))
                n += 1
            if n == 0:
                raise ValueError(f"{path}: no frames to encode")
            out.mux(stream.encode(None))
        if check is not None:
            check(tmp, n)
    return n
