"""Read I-frames, motion vectors and residuals of MPEG-4 Part 2 GOPs with PyAV (docs/design.md sections 1, 7).

Only the requested GOP is decoded: the GOP table comes from packet key-frame flags (demux, no
decoding); `read_gop` seeks to the GOP's key frame, decodes up to the last frame it needs and stops.

Conventions (fixed for the whole project)
-----------------------------------------
* Motion vectors are stored as the *displacement of content from the reference frame to the
  current frame*, in pixels, (dx, dy): a square that moves 4 px right and 2 px down between two
  frames has mv = (+4, +2) on its blocks. FFmpeg exports the opposite, backward vector
  (source = dst + motion / motion_scale), so mv = -motion / motion_scale. A horizontal flip of
  the frames negates dx.
* Every pixel gets the vector of the block that covers it (blocks cover the whole frame, the
  last column/row may be partial: 340 px wide -> 22 columns of 16). Intra blocks, which FFmpeg
  leaves out of the side data, get (0, 0).
* `warp(ref, mv)[p] = ref[p - mv[p]]`, sampled bilinearly (exact for the codec's half-pel
  vectors: the mean of the 2 or 4 neighbouring pixels), coordinates clamped to the frame
  (FFmpeg extends edges the same way). residual_t = frame_t - warp(reference, mv_t), in RGB
  pixel units (about -255..255). It is not the codec's DCT residual bit for bit (the codec
  predicts in YUV with its own rounding), but it is the same quantity in RGB.
* accumulate=False: reference = previous decoded frame, mv = the frame's own vectors.
  accumulate=True (CoViAR): vectors are traced back to the I-frame,
  acc_t(p) = mv_t(p) + acc_{t-1}(round(p - mv_t(p))), acc_0 = 0, and
  residual_t = frame_t - warp(iframe, acc_t).
* T = `num_p`; default: the video's nominal P-frames per GOP (longest GOP - 1, i.e. 11 for GOP
  12), so every GOP of a file gives the same T. A GOP with at most T P-frames uses all of them
  and is zero-padded at the end (no motion, no change). A GOP with more P-frames uses T evenly
  spaced ones, round(linspace(0, P-1, T)) (always the first and the last), in both modes; the
  residual/mv of a picked P-frame is relative to its own reference (previous frame or I-frame).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

SUPPORTED_CODECS = ("mpeg4",)
PICT_I, PICT_P, PICT_B = 1, 2, 3


class CodecError(RuntimeError):
    """A video that the compressed-domain reader cannot use; the message names the file."""


class UnsupportedVideoError(CodecError):
    """Readable, but not a GOP structure we read (B-frames, no P-frames, no exported MVs)."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(
            f"{path}: {reason}. csvr reads MPEG-4 Part 2 with GOP 12 and no B-frames: "
            f"re-encode the tree with `csvr prepare SRC DST` and point the data root at DST."
        )


class CorruptVideoError(CodecError):
    """Unreadable, truncated, empty or garbage file."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(
            f"{path}: cannot be read ({reason}). Replace the file (re-download it), or remove it, "
            f"or set skip_corrupt=True to skip it."
        )


@dataclass
class GOP:
    """One segment. iframe [3, H, W] uint8 RGB; mv [T, 2, H, W] float32 (dx, dy in pixels);
    residual [T, 3, H, W] float32 (RGB pixel units)."""

    iframe: np.ndarray
    mv: np.ndarray
    residual: np.ndarray


def mv_field(vectors: np.ndarray, height: int, width: int) -> np.ndarray:
    """Per-pixel motion [2, H, W] float32 (dx, dy) from FFmpeg's MOTION_VECTORS array.

    Vectorised: a block grid per block size is filled by fancy indexing and expanded with
    np.repeat; smaller blocks (sub-partitions) overwrite larger ones. Missing blocks are 0.
    """
    field = np.zeros((2, height, width), np.float32)
    if vectors is None or len(vectors) == 0:
        return field
    scale = vectors["motion_scale"].astype(np.float32)
    scale[scale == 0] = 1.0
    dx = -vectors["motion_x"].astype(np.float32) / scale
    dy = -vectors["motion_y"].astype(np.float32) / scale
    bw_all, bh_all = vectors["w"].astype(np.int64), vectors["h"].astype(np.int64)
    codes = np.unique(bw_all * 256 + bh_all)
    sizes = sorted(((int(c) // 256, int(c) % 256) for c in codes), key=lambda s: -s[0] * s[1])
    for bw, bh in sizes:
        sel = (bw_all == bw) & (bh_all == bh)
        gh, gw = -(-height // bh), -(-width // bw)
        bx = vectors["dst_x"][sel].astype(np.int64) // bw  # dst is the block centre
        by = vectors["dst_y"][sel].astype(np.int64) // bh
        ok = (bx >= 0) & (bx < gw) & (by >= 0) & (by < gh)
        grid = np.zeros((3, gh, gw), np.float32)  # dx, dy, present
        grid[0, by[ok], bx[ok]] = dx[sel][ok]
        grid[1, by[ok], bx[ok]] = dy[sel][ok]
        grid[2, by[ok], bx[ok]] = 1.0
        full = grid.repeat(bh, axis=1).repeat(bw, axis=2)[:, :height, :width]
        if len(sizes) == 1:
            return np.ascontiguousarray(full[:2])
        np.copyto(field, full[:2], where=full[2:3] > 0)
    return field


@functools.lru_cache(maxsize=8)
def _grid2(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Twice the pixel coordinates (half-pel units), intp [H, W] each: (2y, 2x)."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.intp)
    return 2 * ys, 2 * xs


def _half_pel(mv: np.ndarray) -> np.ndarray | None:
    """mv * 2 as int32 when every component is a multiple of 0.5, else None."""
    m2 = mv * 2
    m2i = np.rint(m2).astype(np.intp)
    return m2i if np.array_equal(m2i, m2) else None


def _warp_bilinear(reference: np.ndarray, mv: np.ndarray) -> np.ndarray:
    """Generic bilinear warp (any fractional vectors). [H, W, C] -> [H, W, C] float32."""
    h, w = reference.shape[:2]
    ref = reference.reshape(h * w, -1).astype(np.float32)
    ys, xs = (g.astype(np.float32) / 2 for g in _grid2(h, w))
    x = np.clip(xs - mv[0], 0, w - 1)
    y = np.clip(ys - mv[1], 0, h - 1)
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = (x - x0).reshape(-1, 1), (y - y0).reshape(-1, 1)
    x0, y0 = x0.astype(np.intp).ravel(), y0.astype(np.intp).ravel()
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    top = ref[y0 * w + x0] * (1 - fx) + ref[y0 * w + x1] * fx
    bottom = ref[y1 * w + x0] * (1 - fx) + ref[y1 * w + x1] * fx
    return (top * (1 - fy) + bottom * fy).reshape(reference.shape)


def _warp_rgba_sum(rgba: np.ndarray, m2: np.ndarray) -> np.ndarray:
    """4 x the half-pel warp of an [H, W, 4] uint8 frame: [H, W, 4] uint16.

    For half-pel vectors bilinear sampling is the mean of the pixels at floor/ceil of each
    coordinate, so four gathers of packed 32-bit pixels do it (fast, exact).
    """
    h, w = rgba.shape[:2]
    gy2, gx2 = _grid2(h, w)
    x = np.clip(gx2 - m2[0], 0, 2 * (w - 1))
    y = np.clip(gy2 - m2[1], 0, 2 * (h - 1))
    x0, x1 = x >> 1, (x + 1) >> 1
    y0, y1 = (y >> 1) * w, ((y + 1) >> 1) * w
    packed = rgba.reshape(h * w, 4).view(np.uint32).ravel()
    out = packed[y0 + x0].view(np.uint8).astype(np.uint16)
    for idx in (y0 + x1, y1 + x0, y1 + x1):
        out += packed[idx].view(np.uint8)
    return out.reshape(h, w, 4)


def warp(reference: np.ndarray, mv: np.ndarray) -> np.ndarray:
    """out[p] = reference[p - mv[p]], bilinear, clamped. reference [H, W, C]; mv [2, H, W].

    Returns [H, W, C] float32. Half-pel vectors take a fast exact path.
    """
    h, w, c = reference.shape
    m2 = _half_pel(mv)
    if m2 is None or reference.dtype != np.uint8 or c > 4:
        return _warp_bilinear(reference, mv)
    rgba = np.zeros((h, w, 4), np.uint8)
    rgba[..., :c] = reference
    return _warp_rgba_sum(rgba, m2)[..., :c].astype(np.float32) * 0.25


def accumulate_mv(previous: np.ndarray, mv: np.ndarray) -> np.ndarray:
    """acc_t(p) = mv_t(p) + acc_{t-1}(round(p - mv_t(p))) (clamped). All [2, H, W] float32."""
    _, h, w = mv.shape
    ys, xs = (g // 2 for g in _grid2(h, w))
    qx = np.clip(np.floor(xs - mv[0] + 0.5), 0, w - 1).astype(np.intp)
    qy = np.clip(np.floor(ys - mv[1] + 0.5), 0, h - 1).astype(np.intp)
    return mv + previous[:, qy, qx]


def truncation_reason(stream: av.video.stream.VideoStream, end_pts: int | None) -> str | None:
    """A reason string when the packets end well before the header's declared frame count.

    `end_pts`: pts + duration of the last packet (stream time base). Counting packets would
    misjudge variable-rate files (tree.avi declares 444 frames and holds 68 spread over them),
    so this compares times: declared frames / average rate against where the packets end.
    """
    rate = stream.average_rate or stream.guessed_rate
    if not stream.frames or not rate or end_pts is None or stream.time_base is None:
        return None
    declared = stream.frames / float(rate)
    present = float(end_pts * stream.time_base)
    if present < declared - 1.5 / float(rate):
        return f"header declares {stream.frames} frames ({declared:.2f} s), packets end at {present:.2f} s (truncated?)"
    return None


def pick_p_frames(available: int, num_p: int) -> np.ndarray:
    """Indices (0-based among the GOP's P-frames) used for T = num_p; see module docstring."""
    if available <= num_p:
        return np.arange(available)
    return np.round(np.linspace(0, available - 1, num_p)).astype(int)


def _to_rgba(frame: av.VideoFrame, height: int, width: int) -> np.ndarray:
    """RGB of a frame in a fresh [H, W, 4] uint8 array (4th byte 0), ready for packed gathers.

    (FFmpeg's direct rgba conversion garbles the last columns at widths like 340 and PyAV may
    hand back a reused buffer, so convert to rgb24 and copy.)
    """
    out = np.zeros((height, width, 4), np.uint8)
    out[..., :3] = frame.to_ndarray(format="rgb24")
    return out


class CompressedVideo:
    """An MPEG-4 Part 2 file read GOP by GOP. Use as a context manager.

    Attributes: path, width, height, num_gops, gop_lengths (frames per GOP, from packet flags),
    num_frames, frames_decoded (a counter of decoded frames, for tests and benchmarks).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such video file")
        self.frames_decoded = 0
        try:
            self._container = av.open(str(self.path))
        except av.FFmpegError as e:
            raise CorruptVideoError(self.path, f"FFmpeg cannot open it: {e}") from e
        try:
            self._index()
        except BaseException:
            self._container.close()
            raise

    def _index(self) -> None:
        c = self._container
        if not c.streams.video:
            raise UnsupportedVideoError(self.path, "no video stream")
        s = self._stream = c.streams.video[0]
        name = s.codec_context.name
        if name not in SUPPORTED_CODECS:
            raise UnsupportedVideoError(self.path, f"codec {name!r} (need MPEG-4 Part 2 motion vectors)")
        self.width, self.height = s.codec_context.width, s.codec_context.height
        keys, stamps, end = [], [], None
        try:
            for pkt in c.demux(s):
                if pkt.size == 0:
                    continue
                keys.append(bool(pkt.is_keyframe))
                stamps.append(pkt.pts if pkt.pts is not None else pkt.dts)
                if stamps[-1] is not None:
                    end = max(end or 0, stamps[-1] + (pkt.duration or 1))
        except av.FFmpegError as e:
            raise CorruptVideoError(self.path, f"demuxing failed: {e}") from e
        if not keys or self.width <= 0 or self.height <= 0:
            raise CorruptVideoError(self.path, "no video frames")
        if reason := truncation_reason(s, end):
            raise CorruptVideoError(self.path, reason)
        if not keys[0]:
            raise UnsupportedVideoError(self.path, "does not start with a key frame")
        if all(keys):
            raise UnsupportedVideoError(self.path, "no P-frames (all frames are intra)")
        if any(t is None for t in stamps):
            raise UnsupportedVideoError(self.path, "packets without timestamps")
        if any(b <= a for a, b in zip(stamps, stamps[1:])):
            raise UnsupportedVideoError(self.path, "B-frames (timestamps out of decode order)")
        starts = [i for i, k in enumerate(keys) if k]
        self.gop_lengths = [b - a for a, b in zip(starts, starts[1:] + [len(keys)])]
        self._key_pts = [stamps[i] for i in starts]
        self.num_gops = len(starts)
        self.num_frames = len(keys)
        self.nominal_p = max(self.gop_lengths) - 1
        s.codec_context.options = {"flags2": "+export_mvs", "err_detect": "explode"}

    # -- context manager -------------------------------------------------------------------
    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> CompressedVideo:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ---------------------------------------------------------------------------
    def _decode_gop(self, i: int, n_frames: int) -> list[av.VideoFrame]:
        """Decode the first n_frames frames of GOP i (seek to its key frame, stop early)."""
        target = self._key_pts[i]
        s = self._stream
        frames: list[av.VideoFrame] = []
        try:
            self._container.seek(target, stream=s, backward=True, any_frame=False)
            for frame in self._container.decode(s):
                self.frames_decoded += 1
                if frame.pts is not None and frame.pts < target:
                    continue
                if not frames and frame.pts != target:
                    raise CorruptVideoError(self.path, f"seek to GOP {i} landed at pts {frame.pts}, not {target}")
                if frame.pict_type == PICT_B:
                    raise UnsupportedVideoError(self.path, "B-frames")
                frames.append(frame)
                if len(frames) == n_frames:
                    break
        except av.FFmpegError as e:
            raise CorruptVideoError(self.path, f"decoding GOP {i} failed: {e}") from e
        if len(frames) < n_frames:
            raise CorruptVideoError(self.path, f"GOP {i} holds {len(frames)} decodable frames, expected {n_frames}")
        return frames

    def _vectors(self, frame: av.VideoFrame, i: int) -> tuple[np.ndarray, bool]:
        """(mv [2, H, W], True when every vector is half-pel or coarser)."""
        sd = frame.side_data.get("MOTION_VECTORS")
        if frame.pict_type != PICT_P:
            raise UnsupportedVideoError(self.path, f"GOP {i} has an intra frame after its key frame (pict_type {frame.pict_type})")
        if sd is None:
            vectors = None  # an all-intra P-frame also has no vectors: tolerated, mv = 0
        else:
            vectors = sd.to_ndarray()
            if len(vectors) and (vectors["source"] > 0).any():
                raise UnsupportedVideoError(self.path, "B-frames (forward references)")
        halfpel = vectors is None or len(vectors) == 0 or bool((vectors["motion_scale"] <= 2).all())
        return mv_field(vectors, self.height, self.width), halfpel

    def read_gop(self, i: int, num_p: int | None = None, accumulate: bool = False) -> GOP:
        """Decode GOP i only and return its I-frame, motion vectors and residuals (see module doc).

        iframe [3, H, W] uint8; mv [T, 2, H, W] float32; residual [T, 3, H, W] float32, T = num_p.
        """
        if not 0 <= i < self.num_gops:
            raise IndexError(f"{self.path}: GOP {i} out of range (0..{self.num_gops - 1})")
        t_out = self.nominal_p if num_p is None else int(num_p)
        h, w = self.height, self.width
        picks = pick_p_frames(self.gop_lengths[i] - 1, t_out)
        n_frames = 1 + (int(picks[-1]) + 1 if len(picks) else 0)
        frames = self._decode_gop(i, n_frames)
        rgba = lambda f: _to_rgba(f, h, w)  # noqa: E731  [H, W, 4] uint8
        iframe = rgba(frames[0])
        mv_out = np.zeros((t_out, 2, h, w), np.float32)
        res_out = np.zeros((t_out, 3, h, w), np.float32)
        wanted = {int(p): k for k, p in enumerate(picks)}
        acc = np.zeros((2, h, w), np.float32)
        halfpel = True  # motion_scale <= 2 on every vector so far: fields are multiples of 0.5
        prev = iframe
        for p in range(n_frames - 1):
            frame = frames[p + 1]
            mv, scale_ok = self._vectors(frame, i)
            halfpel = (halfpel and scale_ok) if accumulate else scale_ok
            if accumulate:
                acc = accumulate_mv(acc, mv)
            k = wanted.get(p)
            cur = rgba(frame) if k is not None or (not accumulate and p + 1 in wanted) else None
            if k is not None:
                field, ref = (acc, iframe) if accumulate else (mv, prev)
                mv_out[k] = field
                m2 = (field * 2).astype(np.intp) if halfpel else _half_pel(field)
                if m2 is None:
                    pred = _warp_bilinear(ref[..., :3], field)
                else:
                    pred = _warp_rgba_sum(ref, m2)[..., :3] * np.float32(0.25)
                res_out[k] = (cur[..., :3] - pred).transpose(2, 0, 1)
            prev = cur
        iframe = iframe[..., :3]
        return GOP(np.ascontiguousarray(iframe.transpose(2, 0, 1)), mv_out, res_out)
