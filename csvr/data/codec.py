"""Read I-frames, motion vectors and residuals of MPEG-4 Part 2 GOPs with PyAV (docs/design.md sections 1, 7).

Only the requested GOP is decoded: the GOP table comes from packet key-frame flags (demux, no
decoding); `CompressedVideo._decode` seeks to the GOP's key frame, decodes up to the last frame
it needs, stops, and converts to RGB only the frames the extraction reads (one persistent
converter, one thread). Two extractions share that decoding:
* `reference_gop`: numpy (`mv_field`, `accumulate_mv`, `warp`), full frames; the tests' oracle.
* `fast_gop`: compiled kernels (csvr/data/kernels.py) in half-pel integers, writing only the
  pixels of the requested output windows (a crop, resize and flip), already scaled; equal to
  the reference sampled there, bit for bit. `read_gop` (full frames) and `read_windows` (what
  the dataset uses) run it; GOPs it does not cover (quarter-pel, 8x8 blocks) go to the reference.

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
from av.video.reformatter import VideoReformatter

from csvr.data import kernels

try:  # PyAV's side-data container, built without `frame.side_data`'s cache on the frame: that
    # cache is a frame <-> container reference cycle, so every decoded frame (and its buffers)
    # lived until the garbage collector ran; ~5 us per frame (measured). Public API as fallback.
    from av.sidedata.sidedata import Type as _SideDataType
    from av.sidedata.sidedata import _SideDataContainer
except ImportError:  # pragma: no cover (another PyAV)
    _SideDataContainer = None

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


@functools.lru_cache(maxsize=1024)
def pick_p_frames(available: int, num_p: int) -> np.ndarray:
    """Indices (0-based among the GOP's P-frames) used for T = num_p; see module docstring.
    Cached (read-only array): every GOP of a dataset asks for the same few."""
    if available <= num_p:
        picks = np.arange(available)
    else:
        picks = np.round(np.linspace(0, available - 1, num_p)).astype(int)
    picks.flags.writeable = False
    return picks


def reference_gop(
    frames: dict[int, np.ndarray], vectors: list[np.ndarray | None], picks: np.ndarray, num_p: int, accumulate: bool
) -> GOP:
    """The numpy reference extraction (the tests' oracle for `fast_gop`): `mv_field`,
    `accumulate_mv` and `warp` applied as the module docstring says.

    frames: {frame index in the GOP: [H, W, 3] uint8 RGB}, holding 0, every picked P-frame
    p + 1 and, without accumulate, its reference p; vectors: the MOTION_VECTORS records of P-frames
    1..picks[-1] + 1 (None where a frame has none); picks: `pick_p_frames`. Returns a full GOP.
    """
    iframe = frames[0]
    h, w = iframe.shape[:2]
    mv_out = np.zeros((num_p, 2, h, w), np.float32)
    res_out = np.zeros((num_p, 3, h, w), np.float32)
    wanted = {int(p): k for k, p in enumerate(picks)}
    acc = np.zeros((2, h, w), np.float32)
    for p, vec in enumerate(vectors):
        mv = mv_field(vec, h, w)
        if accumulate:
            acc = accumulate_mv(acc, mv)
        if (k := wanted.get(p)) is not None:
            field, ref = (acc, iframe) if accumulate else (mv, frames[p])
            mv_out[k] = field
            res_out[k] = (frames[p + 1] - warp(ref, field)).transpose(2, 0, 1)
    return GOP(np.ascontiguousarray(iframe.transpose(2, 0, 1)), mv_out, res_out)


def fast_gop(
    frames: dict[int, np.ndarray],
    grids: np.ndarray,
    picks: np.ndarray,
    accumulate: bool,
    windows: list[kernels.Window],
    outs: list[tuple[np.ndarray, np.ndarray]],
) -> None:
    """The compiled extraction (`kernels`): writes mv [T, 2, R, C] and residual [T, 3, R, C]
    float32 of each output window into `outs`, every element (padded P-frames get zeros).

    frames: as `reference_gop`'s, but packed RGB [H, W] uint32 (`CompressedVideo._packed_rgb`);
    grids: the block vectors of P-frames 1..picks[-1] + 1, [n, gh, gw] (`CompressedVideo._grids`).
    Equals `reference_gop` sampled at the window's pixels and scaled by its multipliers, bit for bit.
    """
    iframe = frames[0]
    h, w = iframe.shape
    wanted = {int(p): k for k, p in enumerate(picks)}
    for mv_out, res_out in outs:  # no motion, no change beyond the GOP's last P-frame
        mv_out[len(picks) :] = 0
        res_out[len(picks) :] = 0

    def write(cur: np.ndarray, ref: np.ndarray, field: np.ndarray, shift: int, k: int) -> None:
        for win, (mv_out, res_out) in zip(windows, outs):
            mx, my, rm = win.mv_mul_x, win.mv_mul_y, win.res_mul
            kernels.residual_at(cur, ref, field, shift, win.rows, win.cols, mx, my, rm, mv_out[k], res_out[k])

    if not accumulate:
        for p, k in wanted.items():
            write(frames[p + 1], frames[p], grids[p], 4, k)
        return
    pad = lambda n: -(-n // kernels.BLOCK) * kernels.BLOCK  # noqa: E731  whole blocks
    acc, nxt = np.empty((2, pad(h), pad(w)), np.uint64)
    for p, grid in enumerate(grids):
        if p == 0:  # from the all-zero field: the block vectors themselves
            kernels.expand_grid(grid, acc)
        else:
            kernels.accumulate_step(acc, grid, nxt, h, w)
            acc, nxt = nxt, acc
        if (k := wanted.get(p)) is not None:
            write(frames[p + 1], iframe, acc, 0, k)


def _motion_vectors(frame: av.VideoFrame) -> av.sidedata.sidedata.SideData | None:
    """The frame's MOTION_VECTORS side data, or None: `frame.side_data.get("MOTION_VECTORS")`,
    through PyAV's container class directly while it behaves as in PyAV 18 (the first call
    checks it against the public API; any difference or error switches to the public API)."""
    global _PRIVATE_SIDE_DATA
    if _PRIVATE_SIDE_DATA is not False:
        sd = None
        try:
            sd = _SideDataContainer(frame)[_SideDataType.MOTION_VECTORS]
        except KeyError:  # no motion vectors in this frame
            pass
        except Exception:  # noqa: BLE001  another PyAV
            _PRIVATE_SIDE_DATA = False
        if _PRIVATE_SIDE_DATA is None:
            public = frame.side_data.get("MOTION_VECTORS")
            same = (sd is None) == (public is None) and (sd is None or bytes(sd) == bytes(public))
            _PRIVATE_SIDE_DATA = same
        if _PRIVATE_SIDE_DATA:
            return sd
    return frame.side_data.get("MOTION_VECTORS")


# None: not checked yet; False: PyAV's container class is absent or differs, use the public API
_PRIVATE_SIDE_DATA: bool | None = None if _SideDataContainer is not None else False


def _record_bytes(side_data: av.sidedata.sidedata.SideData) -> bytes:
    """The MOTION_VECTORS records (`kernels.MV_DTYPE`, 40 bytes each) as a copy of the buffer
    (bytes: a memcpy, 7x cheaper than copying the structured array)."""
    global _RECORDS_CHECKED
    if not _RECORDS_CHECKED:  # PyAV's own view once, to be sure the layout is the one we read
        if side_data.to_ndarray().dtype != kernels.MV_DTYPE:
            raise RuntimeError(
                f"PyAV {av.__version__} exports motion vectors as {side_data.to_ndarray().dtype}, "
                f"not the layout csvr.data.kernels.MV_DTYPE reads: update MV_DTYPE"
            )
        _RECORDS_CHECKED = True
    return bytes(side_data)


def _records(raw: bytes | None) -> np.ndarray | None:
    """`_record_bytes` as the structured array `reference_gop` reads (None stays None)."""
    return None if raw is None else np.frombuffer(raw, kernels.MV_DTYPE)


_RECORDS_CHECKED = False
_WORDS = kernels.MV_DTYPE.itemsize // 4  # int32 words per record
# Packet tables by (path, inode, size, mtime): a dataset opens the same file every epoch, and the demux
# pass that builds the table costs about a third of decoding a GOP (per process: each worker).
_GOP_TABLES: dict[tuple[str, int, int, int], tuple[list[int], list[int], int]] = {}


def _rgb(frame: np.ndarray, width: int) -> np.ndarray:
    """A frame as `_decode` keeps it (packed [H, W] uint32, or rgb24 rows [H, L] uint8) as RGB
    [H, W, 3] uint8 (a view)."""
    if frame.dtype == np.uint8:
        return frame[:, : 3 * width].reshape(frame.shape[0], width, 3)
    return frame.view(np.uint8).reshape(*frame.shape, 4)[..., :3]


def _reference_inputs(frames: dict[int, np.ndarray], vectors: list[bytes | None], width: int) -> tuple[dict, list]:
    """`_decode`'s frames and vectors as `reference_gop` takes them."""
    return {n: _rgb(f, width) for n, f in frames.items()}, [_records(v) for v in vectors]


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
        # One persistent converter, one thread: a fresh SwsContext per frame (frame.to_ndarray)
        # costs more than decoding the frame. Same RGB bytes as to_ndarray(format="rgb24").
        self._reformatter = VideoReformatter()
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
        st = os.stat(self.path)
        key = (str(self.path), st.st_ino, st.st_size, st.st_mtime_ns)
        if (table := _GOP_TABLES.get(key)) is None:
            table = self._scan_packets(s)
            if len(_GOP_TABLES) >= 100_000:  # a bound, far above any dataset's file count
                _GOP_TABLES.clear()
            _GOP_TABLES[key] = table
        self.gop_lengths, self._key_pts, self.num_frames = table
        self.num_gops = len(self.gop_lengths)
        self.nominal_p = max(self.gop_lengths) - 1
        s.codec_context.options = {"flags2": "+export_mvs", "err_detect": "explode"}

    def _scan_packets(self, s: av.video.stream.VideoStream) -> tuple[list[int], list[int], int]:
        """(GOP lengths, key-frame pts, frame count) from one demux pass (no decoding), with the
        checks that need every packet (truncation, B-frames by timestamps, no P-frames)."""
        keys, stamps, end = [], [], None
        try:
            for pkt in self._container.demux(s):
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
        return [b - a for a, b in zip(starts, starts[1:] + [len(keys)])], [stamps[i] for i in starts], len(keys)

    # -- context manager -------------------------------------------------------------------
    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> CompressedVideo:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- decoding --------------------------------------------------------------------------
    def _rgb24(self, frame: av.VideoFrame) -> np.ndarray:
        """The frame as rgb24 rows [H, L] uint8 (L >= 3 W, L % 4 == 0) from the persistent
        converter (swscale: the values of `frame.to_ndarray(format="rgb24")`), a view of
        FFmpeg's plane where its rows allow."""
        h, w = self.height, self.width
        rgb = self._reformatter.reformat(frame, format="rgb24", threads=1)
        plane = rgb.planes[0]
        if plane.line_size % 4 == 0 and plane.buffer_size >= plane.line_size * h:
            return np.frombuffer(plane, np.uint8, count=plane.line_size * h).reshape(h, -1)
        rows = np.zeros((h, -(-3 * w // 4) * 4), np.uint8)  # rows not word-aligned (FFmpeg aligns them)
        rows[:, : 3 * w] = rgb.to_ndarray().reshape(h, 3 * w)
        return rows

    def _packed_rgb(self, frame: av.VideoFrame) -> np.ndarray:
        """The frame as packed RGB [H, W] uint32 (`kernels.pack_rgb`), read from `_rgb24`."""
        rows = self._rgb24(frame)
        out = np.empty((self.height, self.width), np.uint32)
        kernels.pack_rgb(rows.view(np.uint32), self.width, out)
        return out

    def _frame_rgb(self, frame: av.VideoFrame, packed: bool) -> np.ndarray:
        """Packed RGB [H, W] uint32, or (packed=False: a frame the kernels read only at the
        output pixels, never warped) rgb24 rows [H, L] uint8, which the kernels also take."""
        return self._packed_rgb(frame) if packed else self._rgb24(frame)

    def _grids(self, vectors: list[bytes | None]) -> np.ndarray | None:
        """The half-pel block grids [n, gh, gw] uint64 of a GOP's P-frames from their
        MOTION_VECTORS records (`_record_bytes`; None: no side data, e.g. every block intra,
        means no motion), parsed in one `kernels.parse_gop` call; None when only the
        reference can read them (quarter-pel, 8x8 blocks)."""
        present = [r for r in vectors if r is not None]
        words = np.frombuffer(b"".join(present), np.int32).reshape(-1, _WORDS)
        starts = np.zeros(len(vectors) + 1, np.int64)
        starts[1:] = [0 if r is None else len(r) // (4 * _WORDS) for r in vectors]
        grids = np.empty((len(vectors), -(-self.height // kernels.BLOCK), -(-self.width // kernels.BLOCK)), np.uint64)
        status = kernels.parse_gop(words, np.cumsum(starts), grids)
        if status == 2:
            raise UnsupportedVideoError(self.path, "B-frames (forward references)")
        return grids if status == 0 else None

    def _decode(
        self, i: int, num_p: int | None, accumulate: bool
    ) -> tuple[dict, list, np.ndarray | None, np.ndarray, int]:
        """Seek to GOP i, decode up to its last picked P-frame, stop: (frames, vectors, grids,
        picks, T): frames as `fast_gop` takes them (only the frames the extraction reads; packed
        RGB, or rgb24 rows for a P-frame that is never a reference; `_reference_inputs` gives
        `reference_gop`'s), vectors as `_record_bytes` (ditto),
        grids as `fast_gop` takes them (None when only the reference can)."""
        if not 0 <= i < self.num_gops:
            raise IndexError(f"{self.path}: GOP {i} out of range (0..{self.num_gops - 1})")
        t_out = self.nominal_p if num_p is None else int(num_p)
        picks = pick_p_frames(self.gop_lengths[i] - 1, t_out)
        n_frames = 1 + (int(picks[-1]) + 1 if len(picks) else 0)
        # frame n -> packed? (references are warped: packed; accumulated P-frames are not)
        need = {int(p) + 1: not accumulate for p in picks} | ({} if accumulate else {int(p): True for p in picks})
        need[0] = True
        target = self._key_pts[i]
        s = self._stream
        frames: dict[int, np.ndarray] = {}
        vectors: list[bytes | None] = []
        n = 0
        try:
            self._container.seek(target, stream=s, backward=True, any_frame=False)
            for frame in self._container.decode(s):
                self.frames_decoded += 1
                if frame.pts is not None and frame.pts < target:
                    continue
                if n == 0 and frame.pts != target:
                    raise CorruptVideoError(self.path, f"seek to GOP {i} landed at pts {frame.pts}, not {target}")
                if n > 0:
                    if (pict := frame.pict_type) != PICT_P:
                        if pict == PICT_B:
                            raise UnsupportedVideoError(self.path, "B-frames")
                        raise UnsupportedVideoError(
                            self.path, f"GOP {i} has an intra frame after its key frame (pict_type {pict})"
                        )
                    sd = _motion_vectors(frame)
                    vectors.append(None if sd is None else _record_bytes(sd))
                if (packed := need.get(n)) is not None:
                    frames[n] = self._frame_rgb(frame, packed)
                n += 1
                if n == n_frames:
                    break
        except av.FFmpegError as e:
            raise CorruptVideoError(self.path, f"decoding GOP {i} failed: {e}") from e
        if n < n_frames:
            raise CorruptVideoError(self.path, f"GOP {i} holds {n} decodable frames, expected {n_frames}")
        return frames, vectors, self._grids(vectors), picks, t_out

    # -- reading ---------------------------------------------------------------------------
    def read_gop(self, i: int, num_p: int | None = None, accumulate: bool = False, reference: bool = False) -> GOP:
        """Decode GOP i only and return its I-frame, motion vectors and residuals (see module doc).

        iframe [3, H, W] uint8; mv [T, 2, H, W] float32; residual [T, 3, H, W] float32, T = num_p.
        The compiled kernels compute it (`reference=True`: the numpy reference, same values).
        """
        frames, vectors, grids, picks, t_out = self._decode(i, num_p, accumulate)
        h, w = self.height, self.width
        if reference or grids is None:
            return reference_gop(*_reference_inputs(frames, vectors, w), picks, t_out, accumulate)
        mv = np.empty((t_out, 2, h, w), np.float32)
        res = np.empty((t_out, 3, h, w), np.float32)
        fast_gop(frames, grids, picks, accumulate, [kernels.Window.full(h, w)], [(mv, res)])
        return GOP(np.ascontiguousarray(_rgb(frames[0], w).transpose(2, 0, 1)), mv, res)

    def read_windows(
        self,
        i: int,
        num_p: int | None,
        accumulate: bool,
        windows: list[kernels.Window],
        outs: list[tuple[np.ndarray, np.ndarray]],
    ) -> np.ndarray:
        """Decode GOP i and write its MVs and residuals at the pixels of each output window only.

        windows: where and how to sample (`kernels.Window`: a crop, resize and flip as index arrays,
        and the multipliers that scale and normalise); outs: per window, (mv [T, 2, R, C],
        residual [T, 3, R, C]) float32 arrays to fill (every element is written). Returns the I-frame
        as packed RGB [H, W] uint32 (`kernels.pack_rgb`; `transforms.iframe_at` samples it). Equal,
        bit for bit, to sampling `read_gop`'s arrays at the window.
        """
        frames, vectors, grids, picks, t_out = self._decode(i, num_p, accumulate)
        if grids is not None:
            fast_gop(frames, grids, picks, accumulate, windows, outs)
            return frames[0]
        g = reference_gop(*_reference_inputs(frames, vectors, self.width), picks, t_out, accumulate)  # quarter-pel, 8x8
        for win, (mv_out, res_out) in zip(windows, outs):
            at = np.ix_(win.rows, win.cols)
            mv_out[:, 0] = g.mv[:, 0][:, at[0], at[1]] * (2 * win.mv_mul_x)
            mv_out[:, 1] = g.mv[:, 1][:, at[0], at[1]] * (2 * win.mv_mul_y)
            res_out[:] = g.residual[:, :, at[0], at[1]] * (4 * win.res_mul)
        return frames[0]
