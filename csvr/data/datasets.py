"""A Dataset of compressed videos: TSN-sampled GOPs -> (I-frame, MV, residual) tensors.

One sample (a dict):
  iframe   [S, 3, H, W] float32, normalised (transforms.IFRAME_MEAN / IFRAME_STD)
  mv       [S, T, 2, H, W] float32, pixels / MV_SCALE
  residual [S, T, 3, H, W] float32, pixel units / RESIDUAL_SCALE
  label    int (-1 when unknown); video_id str (the relative path)
S = K at training time; at test time S = crops * views * K, crop-major then view-major
(index (c * V + v) * K + k), every K-block a TSN sample of the whole video, so the model
folds [B, S, ...] into [B * S / K, K, ...] and averages the logits.

The MVs and residuals are computed only at the pixels the crop/resize keeps, already
normalised (`CompressedVideo.read_windows`, `transforms.crop_window`): the same values as
cropping full decoded GOPs (`transforms.apply_crop` + `normalize`), bit for bit. With
`noise`, which acts on whole GOPs, the full GOPs are read and cropped.

A file the codec cannot read raises its CodecError (which names the file), or with
skip_corrupt=True gives a `Skipped` marker that `collate` drops and lists in
`batch["skipped"]`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from csvr.data import kernels
from csvr.data.batch import Batch
from csvr.data.codec import CodecError, CompressedVideo
from csvr.data.sampling import sample_test, sample_train
from csvr.data.transforms import (
    Crop,
    SpuriousMotion,
    apply_crop,
    centre_crop_params,
    crop_window,
    iframe_at,
    normalize,
    random_crop_params,
    three_crop_params,
)

Sample = dict[str, Any]


def check_files(root: str | Path, items: list[tuple[str, int]], skip_missing: bool = False) -> list[tuple[str, int]]:
    """The items whose file exists under `root`. Missing files raise FileNotFoundError naming
    the first few and the count, or with skip_missing are dropped with one warning."""
    root = Path(root)
    missing = [rel for rel, _ in items if not (root / rel).is_file()]
    if not missing:
        return list(items)
    shown = ", ".join(str(root / m) for m in missing[:3]) + (", ..." if len(missing) > 3 else "")
    msg = f"{len(missing)} of {len(items)} listed videos are missing under {root}: {shown}"
    if not skip_missing:
        raise FileNotFoundError(
            f"{msg}. Check that the data root matches the split lists (README: 'Getting the data'), "
            "or set skip_missing=True to drop them."
        )
    warnings.warn(f"{msg}; skipping them (skip_missing=True)", stacklevel=2)
    gone = set(missing)
    return [it for it in items if it[0] not in gone]


class CompressedVideoDataset(Dataset):
    """Videos `items` = [(path relative to root, label)] of a prepared tree (see module doc).

    Training samples get one random resized crop (area fraction `crop_scale`) of all
    segments and streams, mirrored with probability 0.5 when `hflip`; test samples the
    centre crop (or 3 crops). `noise` (SpuriousMotion) acts on the decoded GOPs first.
    """

    def __init__(
        self,
        root: str | Path,
        items: list[tuple[str, int]],
        *,
        num_segments: int,
        num_p: int | None,
        accumulate: bool,
        img_size: int,
        train: bool,
        test_views: int = 1,
        test_crops: int = 1,
        skip_corrupt: bool = False,
        skip_missing: bool = False,
        noise: SpuriousMotion | None = None,
        crop_scale: tuple[float, float] = (0.6, 1.0),
        hflip: bool = True,
    ) -> None:
        if test_crops not in (1, 3):
            raise ValueError(f"test_crops must be 1 or 3, got {test_crops}")
        self.root = Path(root)
        self.items = check_files(self.root, items, skip_missing)
        self.num_segments, self.num_p, self.accumulate = num_segments, num_p, accumulate
        self.img_size, self.train = img_size, train
        self.test_views, self.test_crops = test_views, test_crops
        self.skip_corrupt, self.noise, self.crop_scale, self.hflip = skip_corrupt, noise, crop_scale, hflip
        self._warned: set[str] = set()
        kernels.warm_up()  # compile once here (or load the cache), not in every worker's first batch
        self.video_ids: dict[str, str] = {}  # relative path -> id to report (default: the path)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: int | tuple[int, int]) -> Sample:
        """`key`: an index, or `(index, seed)` from `EpochSampler` (seeded augmentation)."""
        index, seed = key if isinstance(key, tuple) else (key, None)
        rel, label = self.items[index]
        try:
            return self._load(rel, label, seed)
        except CodecError as e:
            if not self.skip_corrupt:
                raise
            if rel not in self._warned:
                self._warned.add(rel)
                warnings.warn(f"skipping unreadable video: {e}", stacklevel=2)
            return {"video_id": self.video_ids.get(rel, rel), "skipped": str(e)}

    def _load(self, rel: str, label: int, seed: int | None = None) -> Sample:
        with CompressedVideo(self.root / rel) as video:
            h, w = video.height, video.width
            if self.train:
                rng = np.random.default_rng(seed if seed is not None else int(torch.randint(0, 2**62, ()).item()))
                idx = sample_train(video.num_gops, self.num_segments, rng)
                crops = [random_crop_params(h, w, rng, scale=self.crop_scale, flip_p=0.5 if self.hflip else 0.0)]
            else:
                idx = sample_test(video.num_gops, self.num_segments, self.test_views)
                crops = three_crop_params(h, w) if self.test_crops == 3 else [centre_crop_params(h, w)]
            if self.noise is not None:
                iframe, mv, res = self._read_noisy(video, rel, idx, crops)
            else:
                iframe, mv, res = self._read(video, idx, crops)
        return {
            "iframe": iframe,
            "mv": mv,
            "residual": res,
            "label": int(label),
            "video_id": self.video_ids.get(rel, rel),
        }

    def _read(self, video: CompressedVideo, idx: list[int], crops: list[Crop]) -> tuple[torch.Tensor, ...]:
        """MVs and residuals computed at the crops' output pixels only, already normalised,
        written in place: index c * len(idx) + j is crop c of GOP idx[j] (crop-major)."""
        n, size = len(idx), self.img_size
        t = video.nominal_p if self.num_p is None else int(self.num_p)
        s = len(crops) * n
        iframe = np.empty((s, 3, size, size), np.float32)
        mv = np.empty((s, t, 2, size, size), np.float32)  # read_windows writes every element
        res = np.empty((s, t, 3, size, size), np.float32)
        windows = [crop_window(c, size) for c in crops]
        for i in dict.fromkeys(idx):
            slots = [j for j in range(n) if idx[j] == i]
            first = [c * n + slots[0] for c in range(len(crops))]
            packed = video.read_windows(i, self.num_p, self.accumulate, windows, [(mv[k], res[k]) for k in first])
            for c, k in enumerate(first):
                iframe_at(packed, windows[c], iframe[k])
                for j in slots[1:]:  # a GOP sampled twice (short video): copy
                    for a in (iframe, mv, res):
                        a[c * n + j] = a[k]
        return torch.from_numpy(iframe), torch.from_numpy(mv), torch.from_numpy(res)

    def _read_noisy(
        self, video: CompressedVideo, rel: str, idx: list[int], crops: list[Crop]
    ) -> tuple[torch.Tensor, ...]:
        """With spurious-motion noise, which acts on whole decoded GOPs before the crop."""
        done = {}  # GOP index -> [(iframe, mv, residual) per crop], already at img_size
        for i in dict.fromkeys(idx):
            g = video.read_gop(i, num_p=self.num_p, accumulate=self.accumulate)
            g.mv, g.residual = self.noise(g.mv, g.residual, rel, i)
            done[i] = [apply_crop(g.iframe, g.mv, g.residual, c, self.img_size) for c in crops]
        order = [(c, i) for c in range(len(crops)) for i in idx]  # crop-major, then view-major idx
        return normalize(*(np.stack([done[i][c][s] for c, i in order]) for s in range(3)))


class EpochSampler(torch.utils.data.Sampler):
    """Training order and per-item augmentation seeds from (seed, epoch) alone: yields
    `(index, item_seed)` keys, a new permutation each epoch. Lightning calls `set_epoch`;
    where it cannot reach the sampler (wrapped for DDP) the epoch advances per iteration."""

    def __init__(self, n: int, seed: int = 0, epoch: int = 0) -> None:
        self.n, self.seed, self.epoch = n, int(seed), epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) % 2**63)
        order = torch.randperm(self.n, generator=g).tolist()
        seeds = torch.randint(0, 2**62, (self.n,), generator=g).tolist()
        self.epoch += 1
        return iter(list(zip(order, seeds)))


# DataLoader workers must be spawned, not forked: PyAV objects left over from decoding in the
# parent (a VideoFrame <-> VideoReformatter cycle holding swscale slice threads) are freed by
# the GC of a forked child, which then deadlocks or segfaults (PyAV 18, seen with gdb).
WORKER_CONTEXT = "spawn"


def collate(samples: list[Sample | None]) -> Batch:
    """Stack samples into a Batch; None and skipped samples are dropped, their ids listed in
    `skipped`. A batch whose samples were all dropped has B = 0 (empty tensors)."""
    good = [s for s in samples if s is not None and "skipped" not in s]
    skipped = [s["video_id"] for s in samples if s is not None and "skipped" in s]
    if not good:
        empty = torch.zeros(0)
        return Batch(
            iframe=empty, mv=empty, residual=empty, label=torch.zeros(0, dtype=torch.long), video_id=[], skipped=skipped
        )
    return Batch(
        iframe=torch.stack([s["iframe"] for s in good]),
        mv=torch.stack([s["mv"] for s in good]),
        residual=torch.stack([s["residual"] for s in good]),
        label=torch.tensor([s["label"] for s in good], dtype=torch.long),
        video_id=[s["video_id"] for s in good],
        skipped=skipped,
    )
