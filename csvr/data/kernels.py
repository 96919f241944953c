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

from dataclasses import dataclass

import numba as nb
import numpy as np

BLOCK = 16  # MPEG-4 Part 2 macroblock side, pixels


@dataclass(frozen=True)
class Window:
    """Where and how the kernels write: output pixel (r, c) reads source pixel (rows[r], cols[c])
    (int64 index arrays); mv = m2 * mv_mul_x|y, residual = 4 * residual * res_mul (float32)."""

    rows: np.ndarray
    cols: np.ndarray
    mv_mul_x: np.float32
    mv_mul_y: np.float32
    res_mul: np.float32

    @classmethod
    def full(cls, height: int, width: int) -> Window:
        """Every pixel, in pixel units (what `CompressedVideo.read_gop` returns)."""
        half = np.float32(0.5)
        return cls(np.arange(height), np.arange(width), half, half, np.float32(0.25))


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
            for r in range(BLOCK):
                y = by * BLOCK + r
                qy = min(max(y + oy, 0), height - 1)
                for c in range(BLOCK):
                    x = bx * BLOCK + c
                    qx = min(max(x + ox, 0), width - 1)
                    out[0, y, x] = mx + prev[0, qy, qx]
                    out[1, y, x] = my + prev[1, qy, qx]


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
                s = (np.int32(ref[y0, x0, ch]) + np.int32(ref[y0, x1, ch])
                     + np.int32(ref[y1, x0, ch]) + np.int32(ref[y1, x1, ch]))
                res_out[ch, r, c] = np.float32(4 * np.int32(cur[y, x, ch]) - s) * res_mul
            mv_out[0, r, c] = np.float32(mx) * mv_mul_x
            mv_out[1, r, c] = np.float32(my) * mv_mul_y


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
