"""A synthetic motion dataset: the class is in the motion, not in any single frame.

Each video shows one large textured shape (square, disc or triangle, random colour, size and
position) over a static textured background, plus two small slowly drifting distractors.
Classes differ only in how the large shape moves (`CLASSES`); shapes, colours and positions
are drawn the same way for every class, and translations wrap around the frame edges, so
the position at any frame is uniform whatever the class: a single I-frame says nothing.

The direction classes are not mirror-invariant: train them without horizontal flips
(`SyntheticMotionDataModule` sets hflip=False).

Videos are encoded with `encode_video` (real MPEG-4 Part 2, GOP 12, no B-frames) into
`<root>/<class>/<class>_NNN.avi`, so they are read by the same `CompressedVideo` path as
real data. `<root>/splits.json` holds {"classes", "train", "val", "test"} as lists of
[relative path, label]; the `csvr_prepared.json` manifest marks the tree as prepared.
Generation is atomic (temp folder, then rename) and cached under
`$CSVR_CACHE/synthetic/<hash of the settings>` (CSVR_CACHE defaults to ~/.cache/csvr).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from csvr.data.encode import encode_video
from csvr.data.prepare import VERSION, cache_root, settings_dict
from csvr.io import MANIFEST_NAME, atomic_write_json, temp_path, write_manifest
from csvr.progress import progress as progress_bar
from csvr.workers import run_jobs

GENERATOR_VERSION = 2
SPLITS_NAME = "splits.json"
CLASSES = (
    "move_left",
    "move_right",
    "move_up",
    "move_down",
    "rotate",
    "zoom",
    "diagonal_down",
    "diagonal_up",
    "circle",
    "shake",
)


@dataclass(frozen=True)
class SyntheticMotionConfig:
    """Settings of one synthetic dataset (all of them enter the cache hash)."""

    num_classes: int = 6
    videos_per_class: int = 40
    frames: int = 36  # 3 GOPs of 12
    width: int = 128
    height: int = 96
    seed: int = 0
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    gop_size: int = 12
    qscale: int = 3

    def __post_init__(self) -> None:
        if not 2 <= self.num_classes <= len(CLASSES):
            raise ValueError(f"num_classes must be in 2..{len(CLASSES)}, got {self.num_classes}")
        if self.width % 16 or self.height % 16:
            raise ValueError(f"frame size must be a multiple of 16, got {self.width}x{self.height}")
        if self.videos_per_class < 3:
            raise ValueError("videos_per_class must be >= 3 (one each for train, val, test)")

    @property
    def class_names(self) -> list[str]:
        return list(CLASSES[: self.num_classes])

    def digest(self) -> str:
        blob = json.dumps({**asdict(self), "version": GENERATOR_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def synthetic_root(config: SyntheticMotionConfig, cache_dir: str | Path | None = None) -> Path:
    """Where `generate_synthetic` puts `config`'s dataset by default (a pure function)."""
    return cache_root(cache_dir).expanduser() / "synthetic" / config.digest()


# ------------------------------------------------------------------ rendering
def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    coarse = rng.uniform(-1, 1, (h // 8 + 1, w // 8 + 1, 1))
    smooth = np.kron(coarse, np.ones((8, 8, 1)))[:h, :w]
    base = rng.uniform(60, 190, 3)
    fine = rng.uniform(-1, 1, (h, w, 1))
    return np.clip(base + 45 * smooth + 18 * fine, 0, 255).astype(np.float32)


def _shape_mask(kind: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    if kind == 0:  # square
        return (np.abs(u) < 1) & (np.abs(v) < 1)
    if kind == 1:  # disc
        return u * u + v * v < 1
    return (v < 0.8) & (v > -1 + 2 * np.abs(u) * 0.9)  # triangle, apex up


class _Sprite:
    """A textured shape; draw() at centre (cx, cy), angle, scale, wrapping at the edges."""

    def __init__(self, rng: np.random.Generator, radius: float) -> None:
        self.kind = int(rng.integers(0, 3))
        self.radius = radius
        self.colour = rng.uniform(30, 255, 3)
        self.texture = rng.uniform(0.45, 1.0, (6, 6))

    def draw(self, img: np.ndarray, cx: float, cy: float, angle: float = 0.0, scale: float = 1.0) -> None:
        h, w = img.shape[:2]
        r = self.radius * scale
        half = int(math.ceil(1.5 * r)) + 1  # the shape fits in a square of side 2*sqrt(2)*r
        ys = np.arange(int(cy) - half, int(cy) + half + 1)
        xs = np.arange(int(cx) - half, int(cx) + half + 1)
        dy, dx = (ys - cy)[:, None], (xs - cx)[None, :]
        c, s = math.cos(angle), math.sin(angle)
        u = (c * dx + s * dy) / r
        v = (-s * dx + c * dy) / r
        mask = _shape_mask(self.kind, u, v)
        iu = np.clip(((u[mask] + 1) * 3).astype(int), 0, 5)
        iv = np.clip(((v[mask] + 1) * 3).astype(int), 0, 5)
        gy, gx = np.broadcast_arrays((ys % h)[:, None], (xs % w)[None, :])  # wrap at the edges
        img[gy[mask], gx[mask]] = self.colour * self.texture[iv, iu][:, None]


def _trajectory(name: str, rng: np.random.Generator, t: np.ndarray, h: int) -> tuple[np.ndarray, ...]:
    """(x offset, y offset, angle, scale) per frame for class `name`."""
    n = len(t)
    zero, one = np.zeros(n), np.ones(n)
    speed = rng.uniform(1.5, 3.0)
    diag = speed / math.sqrt(2)
    phase = rng.uniform(0, 2 * math.pi)
    if name == "move_left":
        return -speed * t, zero, zero, one
    if name == "move_right":
        return speed * t, zero, zero, one
    if name == "move_up":
        return zero, -speed * t, zero, one
    if name == "move_down":
        return zero, speed * t, zero, one
    if name == "diagonal_down":
        return diag * t, diag * t, zero, one
    if name == "diagonal_up":
        return diag * t, -diag * t, zero, one
    if name == "rotate":
        sign = rng.choice([-1.0, 1.0])
        return zero, zero, sign * math.radians(rng.uniform(4, 7)) * t, one
    if name == "zoom":
        # triangle wave, +-25 % over 6 frames, turning mid-GOP: every I-frame (t = 0, 12, ...)
        # shows the base size, so size says nothing; the motion is strongly radial
        sign = rng.choice([-1.0, 1.0])
        tri = np.abs((t + 6) % 24 - 12) / 6.0 - 1.0  # 0 at t = 0, 12, 24; +-1 at 6, 18
        return zero, zero, zero, 1.0 + sign * 0.25 * tri
    if name == "circle":
        rad = 0.12 * h
        w_ = 2 * math.pi / 24 * rng.choice([-1.0, 1.0])
        return rad * np.cos(w_ * t + phase), rad * np.sin(w_ * t + phase), zero, one
    if name == "shake":
        return 0.1 * h * np.sin(2 * math.pi * t / 8 + phase), zero, zero, one
    raise ValueError(f"unknown synthetic class {name!r}")


def render_video(name: str, config: SyntheticMotionConfig, rng: np.random.Generator) -> list[np.ndarray]:
    """The frames ([H, W, 3] uint8 RGB) of one video of class `name`."""
    h, w = config.height, config.width
    bg = _background(rng, h, w)
    short = min(h, w)
    main = _Sprite(rng, short * rng.uniform(0.22, 0.32))
    x0, y0, a0 = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0, 2 * math.pi)
    distractors = []
    for _ in range(2):
        ang = rng.uniform(0, 2 * math.pi)
        vel = rng.uniform(0, 0.8)
        distractors.append(
            (_Sprite(rng, short * 0.08), rng.uniform(0, w), rng.uniform(0, h), vel * math.cos(ang), vel * math.sin(ang))
        )
    t = np.arange(config.frames, dtype=np.float64)
    ox, oy, angle, scale = _trajectory(name, rng, t, h)
    frames = []
    for i in range(config.frames):
        img = bg.copy()
        for sprite, dx0, dy0, vx, vy in distractors:
            sprite.draw(img, dx0 + vx * i, dy0 + vy * i)
        main.draw(img, x0 + ox[i], y0 + oy[i], a0 + angle[i], scale[i])
        frames.append(img.astype(np.uint8))
    return frames


# ------------------------------------------------------------------ the tree
def _split_items(config: SyntheticMotionConfig) -> dict[str, list[list]]:
    out: dict[str, list[list]] = {"train": [], "val": [], "test": []}
    n = config.videos_per_class
    n_val = max(1, round(n * config.val_fraction))
    n_test = max(1, round(n * config.test_fraction))
    for label, name in enumerate(config.class_names):
        for i in range(n):
            subset = "val" if i < n_val else "test" if i < n_val + n_test else "train"
            out[subset].append([f"{name}/{name}_{i:03d}.avi", label])
    return out


def read_synthetic_splits(root: str | Path) -> dict:
    """{"classes": [...], "train"|"val"|"test": [(relative path, label)]} of a generated tree."""
    path = Path(root) / SPLITS_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: generate the synthetic dataset first (prepare_data / generate_synthetic)"
        )
    data = json.loads(path.read_text())
    return {k: (v if k == "classes" else [(p, int(lab)) for p, lab in v]) for k, v in data.items()}


def generate_synthetic(
    root: str | Path | None = None,
    *,
    config: SyntheticMotionConfig | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    workers: int = 1,
    **settings: object,
) -> Path:
    """Generate (or find cached) the dataset of `config` (or of `settings`, the config
    fields) at `root` (default `synthetic_root(config, cache_dir)`) with `workers`
    processes (> 1 spawns them, see `csvr.workers`: call from under `if __name__ ==
    "__main__"`); returns the root. Interrupted, it leaves no partial dataset behind."""
    config = config or SyntheticMotionConfig(**settings)  # type: ignore[arg-type]
    root = Path(root) if root is not None else synthetic_root(config, cache_dir)
    manifest = root / MANIFEST_NAME
    if manifest.is_file():
        found = json.loads(manifest.read_text()).get("synthetic")
        if found != asdict(config):
            raise FileExistsError(
                f"{root} holds a different synthetic dataset ({found}); pick another root or delete it"
            )
        return root
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} exists but is not a finished synthetic dataset (no {MANIFEST_NAME}); delete it")
    tmp = temp_path(root)  # a hidden sibling folder, renamed into place when complete
    shutil.rmtree(tmp, ignore_errors=True)
    splits = _split_items(config)
    items = [it for subset in ("train", "val", "test") for it in splits[subset]]
    items.sort()
    try:
        tmp.mkdir(parents=True)
        _encode_all(tmp, items, config, progress, workers)
        atomic_write_json(tmp / SPLITS_NAME, {"classes": config.class_names, **splits})
        _write_manifest(tmp, config, len(items))
        if root.exists():
            root.rmdir()  # an empty folder is fine to replace
        os.rename(tmp, root)
    except OSError:
        if (root / MANIFEST_NAME).is_file():  # another process finished first
            return root
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def _write_manifest(dst: Path, config: SyntheticMotionConfig, count: int) -> None:
    settings = settings_dict(config.width, config.height, config.gop_size, config.qscale)
    body = {"version": VERSION, "settings": settings, "files": count, "failed": [], "synthetic": asdict(config)}
    write_manifest(dst, body)


def _encode_one(dst: str, rel: str, label: int, config: SyntheticMotionConfig) -> None:
    # one generator per video: the content does not depend on the order, split or worker
    index = int(rel.rsplit("_", 1)[1].split(".")[0])
    rng = np.random.default_rng([config.seed, label, index])
    path = Path(dst) / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = render_video(config.class_names[label], config, rng)
    encode_video(frames, path, width=config.width, height=config.height, gop_size=config.gop_size, qscale=config.qscale)


def _encode_all(dst: Path, items: list[list], config: SyntheticMotionConfig, progress: bool, workers: int) -> None:
    with progress_bar(
        len(items), f"synthetic videos ({config.num_classes} classes)", progress, transient=True
    ) as advance:
        run_jobs(
            _encode_one,
            [(rel, (str(dst), rel, label, config)) for rel, label in items],
            workers,
            lambda _key, _result: advance(),
        )
