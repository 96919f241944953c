"""Joint crop / resize / flip of the three compressed streams, normalisation, and noise.

All geometric transforms act on numpy arrays whose last two axes are (H, W) and whose
third-last axis is the channel: iframe [..., 3, H, W], mv [..., 2, H, W] (dx, dy in
pixels), residual [..., 3, H, W]. One crop is applied to all three streams. Resizing is a
nearest-neighbour index sample (two `np.take`), which is exact for the block-constant MVs
and cheap on 2 cores (docs/design.md section 7: per-sample `F.interpolate` in a loop is slow).

Because MVs are in pixels, resizing a crop of w x h pixels to `size` x `size` multiplies dx by
size/w and dy by size/h; a horizontal flip mirrors x and negates dx.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
import torch

from csvr.data.kernels import Window, lookup_at

# Normalisation (the data side normalises; the model never does).
IFRAME_MEAN: tuple[float, float, float] = (0.45, 0.45, 0.45)  # of RGB / 255
IFRAME_STD: tuple[float, float, float] = (0.225, 0.225, 0.225)
MV_SCALE: float = 16.0  # pixels: one 16x16 block of motion maps to 1.0
RESIDUAL_SCALE: float = 64.0  # pixel units (residuals span about -255..255)


@dataclass(frozen=True)
class Crop:
    """A crop box in source pixels (x0, y0, w, h) and whether to mirror it."""

    x0: int
    y0: int
    w: int
    h: int
    flip: bool = False


def random_crop_params(
    height: int,
    width: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.6, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip_p: float = 0.5,
) -> Crop:
    """Random box covering `scale` of the frame's area with aspect w/h log-uniform in `ratio`
    (clipped to the frame), at a random position, flipped with probability `flip_p`."""
    area = height * width * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
    w = int(round(min(width, math.sqrt(area * aspect))))
    h = int(round(min(height, math.sqrt(area / aspect))))
    w, h = max(1, w), max(1, h)
    x0 = int(rng.integers(0, width - w + 1))
    y0 = int(rng.integers(0, height - h + 1))
    return Crop(x0, y0, w, h, bool(rng.random() < flip_p))


def centre_crop_params(height: int, width: int, crop_frac: float = 1.0) -> Crop:
    """The centred square of side crop_frac * min(height, width)."""
    return three_crop_params(height, width, crop_frac)[1]


def three_crop_params(height: int, width: int, crop_frac: float = 1.0) -> list[Crop]:
    """Three squares of side crop_frac * short side along the long axis: left (top),
    centre, right (bottom)."""
    side = max(1, int(round(crop_frac * min(height, width))))
    cy, cx = (height - side) // 2, (width - side) // 2
    if width >= height:
        return [Crop(0, cy, side, side), Crop(cx, cy, side, side), Crop(width - side, cy, side, side)]
    return [Crop(cx, 0, side, side), Crop(cx, cy, side, side), Crop(cx, height - side, side, side)]


def _index(start: int, length: int, size: int, reverse: bool = False) -> np.ndarray:
    idx = start + np.minimum(((np.arange(size) + 0.5) * length / size).astype(np.int64), length - 1)
    return idx[::-1].copy() if reverse else idx


def crop_resize(x: np.ndarray, crop: Crop, size: int) -> np.ndarray:
    """Crop `x` [..., H, W] to `crop`, nearest-resize to [..., size, size], mirror if flip."""
    rows = _index(crop.y0, crop.h, size)
    cols = _index(crop.x0, crop.w, size, reverse=crop.flip)
    return np.take(np.take(x, rows, axis=-2), cols, axis=-1)


def crop_resize_mv(mv: np.ndarray, crop: Crop, size: int) -> np.ndarray:
    """Like crop_resize for MVs [..., 2, H, W] in pixels: dx *= size/w, dy *= size/h, and a
    flip negates dx."""
    out = crop_resize(mv, crop, size).astype(np.float32, copy=False)
    sx = size / crop.w * (-1.0 if crop.flip else 1.0)
    out[..., 0, :, :] *= sx
    out[..., 1, :, :] *= size / crop.h
    return out


def apply_crop(
    iframe: np.ndarray, mv: np.ndarray, residual: np.ndarray, crop: Crop, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The same crop/resize/flip on the three streams (shapes as in the module docstring)."""
    return crop_resize(iframe, crop, size), crop_resize_mv(mv, crop, size), crop_resize(residual, crop, size)


def crop_window(crop: Crop, size: int) -> Window:
    """The output window of `crop` resized to size x size, already normalised: the kernels
    then write what `apply_crop` followed by `normalize` gives, bit for bit (the float32
    resize factor is applied first, then the exact power-of-two scales)."""
    sx = np.float32(size / crop.w * (-1.0 if crop.flip else 1.0))
    sy = np.float32(size / crop.h)
    half_over_scale = np.float32(0.5 / MV_SCALE)  # m2 is 2 x the vector; MV_SCALE a power of 2
    return Window(
        _index(crop.y0, crop.h, size),
        _index(crop.x0, crop.w, size, reverse=crop.flip),
        sx * half_over_scale,
        sy * half_over_scale,
        np.float32(0.25 / RESIDUAL_SCALE),
    )


def _iframe_lut() -> np.ndarray:
    """[3, 256] float32: the normalised value of every uint8 level, by `normalize`'s own ops."""
    mean = np.asarray(IFRAME_MEAN, np.float32).reshape(3, 1)
    std = np.asarray(IFRAME_STD, np.float32).reshape(3, 1)
    return (np.arange(256, dtype=np.uint8)[None].repeat(3, 0).astype(np.float32) / 255.0 - mean) / std


IFRAME_LUT = _iframe_lut()


def iframe_at(packed: np.ndarray, window: Window, out: np.ndarray) -> None:
    """Write the normalised I-frame [3, R, C] at the window's pixels of a packed RGB frame
    [H, W] uint32 (`kernels.pack_rgb`, what `CompressedVideo.read_windows` returns)."""
    lookup_at(packed, window.rows, window.cols, IFRAME_LUT, out)


def normalize(
    iframe: np.ndarray, mv: np.ndarray, residual: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """uint8 I-frames [..., 3, H, W] -> (x/255 - mean)/std; mv / MV_SCALE; residual /
    RESIDUAL_SCALE. Returns float32 tensors."""
    mean = np.asarray(IFRAME_MEAN, np.float32).reshape(3, 1, 1)
    std = np.asarray(IFRAME_STD, np.float32).reshape(3, 1, 1)
    i = (iframe.astype(np.float32) / 255.0 - mean) / std
    m = mv.astype(np.float32, copy=False) / MV_SCALE
    r = residual.astype(np.float32, copy=False) / RESIDUAL_SCALE
    return (
        torch.from_numpy(np.ascontiguousarray(i)),
        torch.from_numpy(np.ascontiguousarray(m)),
        torch.from_numpy(np.ascontiguousarray(r)),
    )


class SpuriousMotion:
    """Low-rate spurious background motion added to one GOP's decoded MVs and residuals.

    A fraction `rate` of the 16x16 blocks each get one random vector (magnitude uniform in
    `magnitude` pixels, random direction) in a single P-frame chosen at random (in a
    second, adjacent P-frame with probability `p_second`), plus a matching residual blob
    (a random colour offset of +-`blob` pixel units over the block). So at any pixel the
    noise is on in at most 2 of the T frames: the low temporal rate a LIF neuron filters.
    The draw is seeded by (seed, video_id, gop) so the same sample always gets the same
    noise; rate 0 is the identity. Works on mv [T, 2, H, W] and residual [T, 3, H, W] in
    pixel units, before cropping (so blocks line up with the codec's blocks).
    """

    def __init__(
        self,
        rate: float,
        seed: int = 0,
        block: int = 16,
        magnitude: tuple[float, float] = (2.0, 8.0),
        blob: float = 48.0,
        p_second: float = 0.2,
    ) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"noise rate must be in [0, 1], got {rate}")
        self.rate, self.seed, self.block = float(rate), int(seed), int(block)
        self.magnitude, self.blob, self.p_second = magnitude, float(blob), float(p_second)

    def rng(self, video_id: str, gop: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, zlib.crc32(video_id.encode()), int(gop)])

    def __call__(self, mv: np.ndarray, residual: np.ndarray, video_id: str, gop: int) -> tuple[np.ndarray, np.ndarray]:
        if self.rate == 0.0:
            return mv, residual
        t, _, h, w = mv.shape
        b = self.block
        hb, wb = -(-h // b), -(-w // b)
        rng = self.rng(video_id, gop)
        on = rng.random((hb, wb)) < self.rate
        first = rng.integers(0, t, (hb, wb))
        second = (rng.random((hb, wb)) < self.p_second) & (first + 1 < t)
        angle = rng.uniform(0, 2 * np.pi, (hb, wb))
        mag = rng.uniform(*self.magnitude, (hb, wb))
        colour = rng.uniform(-self.blob, self.blob, (3, hb, wb))
        frames = np.arange(t)[:, None, None]
        active = on & ((frames == first) | (second & (frames == first + 1)))  # [T, hb, wb]
        vec = np.stack([mag * np.cos(angle), mag * np.sin(angle)])  # [2, hb, wb]
        nmv = active[:, None] * vec[None]  # [T, 2, hb, wb]
        nres = active[:, None] * colour[None]  # [T, 3, hb, wb]
        up = lambda a: np.repeat(np.repeat(a, b, -2), b, -1)[..., :h, :w].astype(np.float32)  # noqa: E731
        return mv + up(nmv), residual + up(nres)
