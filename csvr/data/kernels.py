"""Compiled kernels of the fast GOP extraction (numba, `cache=True`): half-pel integer arithmetic.

Every vector here is an integer in half-pel units (m2 = 2 * mv), so the bilinear warp of
`codec.warp` is a sum of 4 pixels (exact in integers) and a residual is (4 * cur - sum) / 4.
The kernels write at the output pixels only: `rows[r]`, `cols[c]` are the source row/column
of output pixel (r, c) (a crop, a nearest-neighbour resize and a flip are index arrays), and
`mv_mul` / `res_mul` fold in the resize factor, the flip sign and the normalisation, so the
outputs are the values `transforms.apply_crop` + `transforms.normalize` give, bit for bit.

Fields: `field[0|1, y >> shift, x >> shift]` is (2 dx, 2 dy) at pixel (y, x): shift 4 reads a
16x16 block grid (frame-to-frame vectors), shift 0 a per-pixel field (accumulated vectors).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numba as nb
import numpy as np

BLOCK = 16  # MPEG-4 Part 2 macroblock side, pixels
# FFmpeg's AVMotionVector as PyAV 18 exports it (`MotionVectors.to_ndarray().dtype`); the
# codec reads the side data buffer with it directly (np.frombuffer) and checks it once.
MV_DTYPE = np.dtype(
    {
        "names": [
            "source",
            "w",
            "h",
            "src_x",
            "src_y",
            "dst_x",
            "dst_y",
            "flags",
            "motion_x",
            "motion_y",
            "motion_scale",
        ],
        "formats": ["<i4", "u1", "u1", "<i2", "<i2", "<i2", "<i2", "<u8", "<i4", "<i4", "<u2"],
        "offsets": [0, 4, 5, 6, 8, 10, 12, 16, 24, 28, 32],
        "itemsize": 40,
        "aligned": True,
    }
)


@dataclass(frozen=True)
class Window:
    """Where and how the kernels write: output pixel (r, c) reads source pixel (rows[r], cols[c])
    (int64 index arrays); mv = m2 * mv_mul_x|y, residual = 4 * residual * res_mul (float32)."""

    rows: np.ndarray
    cols: np.ndarray
    mv_mul_x: np.float32
    mv_mul_y: np.float32
    res_mul: np.float32

    @functools.cached_property
    def unique(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """(rows, cols) without repeats and the maps back, when an upsampling resize repeats
        source pixels (compute each once, then `expand`); None when nothing repeats."""
        ru, ri = np.unique(self.rows, return_inverse=True)
        cu, ci = np.unique(self.cols, return_inverse=True)
        if len(ru) == len(self.rows) and len(cu) == len(self.cols):
            return None
        return ru, cu, ri.astype(np.intp), ci.astype(np.intp)

    @classmethod
    def full(cls, height: int, width: int) -> Window:
        """Every pixel, in pixel units (what `CompressedVideo.read_gop` returns)."""
        half = np.float32(0.5)
        return cls(np.arange(height), np.arange(width), half, half, np.float32(0.25))


@nb.njit(cache=True, nogil=True)
def parse_vectors(vectors: np.ndarray, grid: np.ndarray) -> int:
    """Fill grid [2, gh, gw] int32 (zeroed first) with the half-pel vectors (2 dx, 2 dy) of
    FFmpeg's MOTION_VECTORS records, at block (dst_y // 16, dst_x // 16) (dst is the block
    centre; out-of-frame blocks dropped, later records win, as `codec.mv_field`).

    Returns 0, or 1 when a record is not a 16x16 block with full- or half-pel motion (only the
    numpy reference reads such a GOP), or 2 on a forward reference (a B-frame: an error).
    """
    gh, gw = grid.shape[1], grid.shape[2]
    grid[:] = 0
    status = 0
    for n in range(vectors.shape[0]):
        v = vectors[n]
        if v.source > 0:
            return 2
        scale = v.motion_scale
        if v.w != BLOCK or v.h != BLOCK or (scale != 1 and scale != 2):
            status = 1
            continue
        bx, by = v.dst_x // BLOCK, v.dst_y // BLOCK
        if 0 <= bx < gw and 0 <= by < gh:
            per_unit = 2 // scale  # half-pels per codec unit
            grid[0, by, bx] = -v.motion_x * per_unit
            grid[1, by, bx] = -v.motion_y * per_unit
    return status


@nb.njit(cache=True, nogil=True)
def accumulate_step(prev: np.ndarray, grid: np.ndarray, out: np.ndarray, height: int, width: int) -> None:
    """out(p) = m2(p) + prev(round(p - m2(p) / 2)), the source clamped to the frame.

    prev, out [2, gh * 16, gw * 16] int32 half-pel (padded to whole blocks: padding is written
    but never read); grid [2, gh, gw] int32 half-pel block vectors. `codec.accumulate_mv` in
    integers: round(x - m2 / 2) = floor((2 x - m2 + 1) / 2) = x + ((1 - m2) >> 1).
    """
    gh, gw = grid.shape[1], grid.shape[2]
    for by in range(gh):
        for bx in range(gw):
            mx, my = grid[0, by, bx], grid[1, by, bx]
            ox, oy = (1 - mx) >> 1, (1 - my) >> 1
            x0 = bx * BLOCK
            inside = x0 + ox >= 0 and x0 + BLOCK - 1 + ox <= width - 1
            for r in range(BLOCK):
                y = by * BLOCK + r
                qy = min(max(y + oy, 0), height - 1)
                if inside:  # a contiguous row: fixed-length loop over slices (vectorised)
                    s0, s1 = prev[0, qy, x0 + ox : x0 + ox + BLOCK], prev[1, qy, x0 + ox : x0 + ox + BLOCK]
                    d0, d1 = out[0, y, x0 : x0 + BLOCK], out[1, y, x0 : x0 + BLOCK]
                    for c in range(BLOCK):
                        d0[c] = mx + s0[c]
                        d1[c] = my + s1[c]
                else:
                    for c in range(BLOCK):
                        qx = min(max(x0 + c + ox, 0), width - 1)
                        out[0, y, x0 + c] = mx + prev[0, qy, qx]
                        out[1, y, x0 + c] = my + prev[1, qy, qx]


@nb.njit(cache=True, nogil=True)
def residual_at(
    cur: np.ndarray,
    ref: np.ndarray,
    field: np.ndarray,
    shift: int,
    rows: np.ndarray,
    cols: np.ndarray,
    mv_mul_x: np.float32,
    mv_mul_y: np.float32,
    res_mul: np.float32,
    mv_out: np.ndarray,
    res_out: np.ndarray,
) -> None:
    """At output pixel (r, c), source p = (rows[r], cols[c]) and m2 = field at p:
    mv_out[:, r, c] = m2 * mv_mul; res_out[:, r, c] = (4 cur[p] - 4 warp(ref, m2 / 2)[p]) * res_mul.

    cur, ref [H, W, 3] uint8 RGB; field [2, ., .] int32 read at (y >> shift, x >> shift);
    mv_out [2, R, C], res_out [3, R, C] float32. 4 warp = the sum of the pixels at floor/ceil
    of the half-pel source coordinates, clamped to the frame (as `codec._warp_rgba_sum`).
    """
    h, w = cur.shape[0], cur.shape[1]
    n_cols = cols.shape[0]
    fx = np.empty(n_cols, np.intp)
    for c in range(n_cols):
        fx[c] = cols[c] >> shift
    for r in range(rows.shape[0]):
        y = rows[r]
        fy = y >> shift
        for c in range(n_cols):
            x = cols[c]
            mx = field[0, fy, fx[c]]
            my = field[1, fy, fx[c]]
            sx = min(max(2 * x - mx, 0), 2 * (w - 1))
            sy = min(max(2 * y - my, 0), 2 * (h - 1))
            x0, x1 = sx >> 1, (sx + 1) >> 1
            y0, y1 = sy >> 1, (sy + 1) >> 1
            for ch in range(3):
                s = (
                    np.int32(ref[y0, x0, ch])
                    + np.int32(ref[y0, x1, ch])
                    + np.int32(ref[y1, x0, ch])
                    + np.int32(ref[y1, x1, ch])
                )
                res_out[ch, r, c] = np.float32(4 * np.int32(cur[y, x, ch]) - s) * res_mul
            mv_out[0, r, c] = np.float32(mx) * mv_mul_x
            mv_out[1, r, c] = np.float32(my) * mv_mul_y


@nb.njit(cache=True, nogil=True)
def expand(src: np.ndarray, ri: np.ndarray, ci: np.ndarray, out: np.ndarray) -> None:
    """out[:, r, c] = src[:, ri[r], ci[c]]: src [N, Ru, Cu] -> out [N, R, C] float32."""
    for n in range(out.shape[0]):
        for r in range(out.shape[1]):
            s, o = src[n, ri[r]], out[n, r]
            for c in range(out.shape[2]):
                o[c] = s[ci[c]]


@nb.njit(cache=True, nogil=True)
def lookup_at(rgb: np.ndarray, rows: np.ndarray, cols: np.ndarray, lut: np.ndarray, out: np.ndarray) -> None:
    """out[ch, r, c] = lut[ch, rgb[rows[r], cols[c], ch]]: rgb [H, W, 3] uint8, lut [3, 256]
    float32 -> out [3, R, C] float32 (the normalised I-frame at the window's pixels)."""
    for r in range(rows.shape[0]):
        y = rows[r]
        for c in range(cols.shape[0]):
            x = cols[c]
            for ch in range(3):
                out[ch, r, c] = lut[ch, rgb[y, x, ch]]


def warm_up() -> None:
    """Compile (first run) or load from numba's on-disk cache (later runs, DataLoader workers)
    every kernel for the argument types the codec passes, on tiny arrays."""
    rgb = np.zeros((BLOCK, BLOCK, 3), np.uint8)
    grid = np.zeros((2, 1, 1), np.int32)
    acc = np.zeros((2, BLOCK, BLOCK), np.int32)
    accumulate_step(acc, grid, np.empty_like(acc), BLOCK, BLOCK)
    win = Window.full(2, 2)
    out = np.zeros((2, 2, 2), np.float32), np.zeros((3, 2, 2), np.float32)
    residual_at(rgb, rgb, grid, 4, win.rows, win.cols, win.mv_mul_x, win.mv_mul_y, win.res_mul, *out)
    expand(out[0], win.rows, win.cols, out[0])
    lookup_at(rgb, win.rows, win.cols, np.zeros((3, 256), np.float32), out[1])
    parse_vectors(np.zeros(0, MV_DTYPE), grid)
