"""LightningDataModules: UCF-101, HMDB-51, the synthetic motion set, and raw files to predict.

Every module reads only prepared trees (docs/design.md section 8): `prepare_data()` (run once per
node by Lightning) makes or finds the prepared copy with `ensure_prepared`, and `setup()`
finds that copy again by a pure path computation and fails clearly when it is missing.
`num_classes` and `class_names` come from the split lists (or the synthetic config) and are
available right after `__init__`, so the CLI can link them to the model.

Validation: UCF-101 and HMDB-51 have no validation split; as usual in the literature (TSN,
CoViAR) `val` is the split's test list, evaluated cheaply during fit (one view of K
segments, centre crop) while `test` uses `test_segments` x `test_crops` views. The synthetic
set has a real held-out val list.

Noise (`noise_rate` > 0): `SpuriousMotion(noise_rate, noise_seed)` is applied to every
stage (train, val, test, predict), so one cached dataset serves every noise level.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from csvr.data.datasets import WORKER_CONTEXT, CompressedVideoDataset, EpochSampler, collate
from csvr.data.prepare import MANIFEST_NAME, ensure_prepared, prepare_tree, prepared_path, read_manifest
from csvr.data.sampling import num_views
from csvr.data.splits import hmdb51_classes, read_hmdb51_split, read_ucf101_split, ucf101_classes
from csvr.data.synthetic import SyntheticMotionConfig, generate_synthetic, read_synthetic_splits, synthetic_root
from csvr.data.transforms import SpuriousMotion

DATA_HELP = "see the README section 'Getting the data' (download, then `csvr prepare SRC DST`)"


class CompressedVideoDataModule(L.LightningDataModule):
    """Base class: subclasses supply `class_names` and `items(subset)` for train/val/test.

    root: the video tree `<Class>/<video>` (raw or prepared); split_dir: the list files;
    split: 1-3; num_segments: K; test_segments: segments at test time (as V = ceil(
    test_segments / K) views of K); test_crops: 1 (centre) or 3; num_p: T (None = all
    P-frames of a GOP); accumulate: trace MVs/residuals back to the I-frame; img_size: side of
    the square crops; hflip: random horizontal flips in training; skip_missing / skip_corrupt: drop listed-but-absent / unreadable videos
    instead of failing; noise_rate / noise_seed: SpuriousMotion; prepare_workers: processes
    for `csvr prepare`; prepare_width / prepare_height: frame size of the re-encoded copy
    (340x256, the CoViAR recipe; smaller is cheaper to decode on a CPU); cache_dir: default $CSVR_CACHE or ~/.cache/csvr; predict_paths: raw
    video files for `predict` (prepared on the fly into a temp folder; label -1).
    """

    def __init__(
        self,
        root: str | None = None,
        split_dir: str | None = None,
        split: int = 1,
        num_segments: int = 3,
        test_segments: int = 25,
        test_crops: int = 1,
        num_p: int | None = 11,
        accumulate: bool = True,
        img_size: int = 224,
        hflip: bool = True,
        batch_size: int = 8,
        test_batch_size: int | None = None,
        num_workers: int = 2,
        pin_memory: bool = False,
        skip_missing: bool = False,
        skip_corrupt: bool = False,
        noise_rate: float = 0.0,
        noise_seed: int = 0,
        prepare_workers: int = 2,
        prepare_width: int = 340,
        prepare_height: int = 256,
        cache_dir: str | None = None,
        predict_paths: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.root = Path(root).expanduser() if root is not None else None
        self.split_dir = Path(split_dir).expanduser() if split_dir is not None else None
        self.split, self.num_segments, self.test_segments = split, num_segments, test_segments
        self.test_crops, self.num_p, self.accumulate, self.img_size = test_crops, num_p, accumulate, img_size
        self.hflip = hflip
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory
        views = num_views(test_segments, num_segments) * test_crops
        self.test_batch_size = test_batch_size or max(1, batch_size // views)
        self.skip_missing, self.skip_corrupt = skip_missing, skip_corrupt
        self.noise = SpuriousMotion(noise_rate, noise_seed) if noise_rate > 0 else None
        self.prepare_workers, self.cache_dir = prepare_workers, cache_dir
        self.prepare_size = {"width": prepare_width, "height": prepare_height}
        self.predict_paths = list(predict_paths) if predict_paths else None
        self.data_root: Path | None = None
        self.datasets: dict[str, CompressedVideoDataset] = {}
        self._predict_tmp: Path | None = None
        self.save_hyperparameters()

    # -- what subclasses provide -----------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        raise NotImplementedError

    def items(self, subset: str) -> list[tuple[str, int]]:
        """[(relative path, label)] of subset 'train' | 'val' | 'test'."""
        raise NotImplementedError

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    # -- preparing ------------------------------------------------------------------------
    def _check_root(self) -> Path:
        if self.root is None or not self.root.is_dir():
            raise FileNotFoundError(f"data root {self.root} is not a folder of videos (<Class>/<video>); {DATA_HELP}")
        return self.root

    def prepare_data(self) -> None:
        if self.predict_paths and self.root is None:
            return
        ensure_prepared(self._check_root(), cache_dir=self.cache_dir, workers=self.prepare_workers,
                        skip_failed=self.skip_corrupt, progress=True, **self.prepare_size)

    def find_prepared(self) -> Path:
        """The prepared tree made by prepare_data (raises when it is not there)."""
        path = prepared_path(self._check_root(), self.cache_dir, **self.prepare_size)
        if not (path / MANIFEST_NAME).is_file():
            raise FileNotFoundError(
                f"no prepared copy of {self.root} at {path}: call prepare_data() first "
                f"(Lightning does so in fit/validate/test), or run `csvr prepare {self.root} DST` and set root to DST"
            )
        return path

    def _usable(self, items: list[tuple[str, int]]) -> list[tuple[str, int]]:
        failed = set((read_manifest(self.data_root) or {}).get("failed", []))
        bad = [rel for rel, _ in items if rel in failed]
        if bad:
            warnings.warn(f"{len(bad)} listed videos could not be prepared and are skipped: {bad[:3]}", stacklevel=2)
        return [it for it in items if it[0] not in failed]

    # -- datasets --------------------------------------------------------------------------
    def _dataset(self, items: list[tuple[str, int]], train: bool, views: int = 1, crops: int = 1,
                 root: Path | None = None) -> CompressedVideoDataset:
        return CompressedVideoDataset(
            root or self.data_root, items, num_segments=self.num_segments, num_p=self.num_p,
            accumulate=self.accumulate, img_size=self.img_size, train=train, test_views=views,
            test_crops=crops, hflip=self.hflip, skip_corrupt=self.skip_corrupt, skip_missing=self.skip_missing, noise=self.noise,
        )

    def setup(self, stage: str | None = None) -> None:
        if stage == "predict" and self.predict_paths:
            self.datasets["predict"] = self._predict_dataset()
            return
        self.data_root = self.find_prepared()
        views = num_views(self.test_segments, self.num_segments)
        if stage in ("fit", None) and "train" not in self.datasets:
            self.datasets["train"] = self._dataset(self._usable(self.items("train")), train=True)
        if stage in ("fit", "validate", None) and "val" not in self.datasets:
            self.datasets["val"] = self._dataset(self._usable(self.items("val")), train=False)
        if stage in ("test", "predict", None) and "test" not in self.datasets:
            self.datasets["test"] = self._dataset(self._usable(self.items("test")), train=False, views=views,
                                                  crops=self.test_crops)
        if stage == "predict":
            self.datasets["predict"] = self.datasets["test"]

    def _predict_dataset(self) -> CompressedVideoDataset:
        missing = [p for p in self.predict_paths if not Path(p).is_file()]
        if missing:
            raise FileNotFoundError(f"video(s) to predict not found: {', '.join(missing)}")
        self._predict_tmp = Path(tempfile.mkdtemp(prefix="csvr-predict-"))
        src = self._predict_tmp / "src"
        rels = []
        for i, p in enumerate(self.predict_paths):
            rel = f"{i:04d}/{Path(p).name}"
            (src / rel).parent.mkdir(parents=True)
            shutil.copyfile(p, src / rel)
            rels.append(rel)
        report = prepare_tree(src, self._predict_tmp / "dst", workers=1, progress=False, **self.prepare_size)
        if report.failed:
            raise FileNotFoundError("cannot decode: " + "; ".join(report.failed.values()))
        ds = self._dataset([(r, -1) for r in rels], train=False, views=num_views(self.test_segments, self.num_segments),
                           crops=self.test_crops, root=self._predict_tmp / "dst")
        ds.video_ids = dict(zip(rels, map(str, self.predict_paths)))
        return ds

    def teardown(self, stage: str | None = None) -> None:
        if stage == "predict" and self._predict_tmp is not None:
            shutil.rmtree(self._predict_tmp, ignore_errors=True)
            self._predict_tmp = None

    # -- loaders ---------------------------------------------------------------------------
    def _loader(self, name: str, batch_size: int, shuffle: bool) -> DataLoader:
        """Training order and augmentation come from `EpochSampler` (seeded by the run's seed
        and the epoch), and the loader has its own generator: data loading never touches the
        global RNGs, so `--ckpt_path last` resumes exactly."""
        if name not in self.datasets:
            raise RuntimeError(f"call setup() before asking for the {name} loader")
        seed = torch.initial_seed()  # seed_everything's seed
        # workers prefetch as soon as the loader is iterated, which on resume happens before
        # Lightning's set_epoch: start at the (restored) epoch
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        return DataLoader(
            self.datasets[name], batch_size=batch_size, num_workers=self.num_workers,
            sampler=EpochSampler(len(self.datasets[name]), seed, epoch) if shuffle else None,
            generator=torch.Generator().manual_seed(seed % 2**63),
            pin_memory=self.pin_memory, collate_fn=collate, persistent_workers=self.num_workers > 0,
            multiprocessing_context=WORKER_CONTEXT if self.num_workers > 0 else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.test_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", self.test_batch_size, shuffle=False)


class UCF101DataModule(CompressedVideoDataModule):
    """UCF-101: root = the `UCF-101` folder, split_dir = `ucfTrainTestlist` (default: next to
    root). val = the split's test list (UCF-101 has no validation split)."""

    def __init__(self, root: str | None = None, split_dir: str | None = None, **kwargs) -> None:
        if split_dir is None and root is not None:
            split_dir = str(Path(root).expanduser().parent / "ucfTrainTestlist")
        super().__init__(root=root, split_dir=split_dir, **kwargs)
        self._classes = ucf101_classes(self.split_dir)

    @property
    def class_names(self) -> list[str]:
        return self._classes

    def items(self, subset: str) -> list[tuple[str, int]]:
        return read_ucf101_split(self.split_dir, self.split, "train" if subset == "train" else "test")


class HMDB51DataModule(CompressedVideoDataModule):
    """HMDB-51: root = `<class>/<video>.avi`, split_dir = `testTrainMulti_7030_splits`
    (default: next to root). val = the split's test list (id 2)."""

    def __init__(self, root: str | None = None, split_dir: str | None = None, **kwargs) -> None:
        if split_dir is None and root is not None:
            split_dir = str(Path(root).expanduser().parent / "testTrainMulti_7030_splits")
        super().__init__(root=root, split_dir=split_dir, **kwargs)
        self._classes = hmdb51_classes(self.split_dir, self.split)

    @property
    def class_names(self) -> list[str]:
        return self._classes

    def items(self, subset: str) -> list[tuple[str, int]]:
        return read_hmdb51_split(self.split_dir, self.split, "train" if subset == "train" else "test")[0]


class SyntheticMotionDataModule(CompressedVideoDataModule):
    """The synthetic motion set (csvr.data.synthetic), generated by prepare_data into
    `root` or the cache. Train / val / test lists come from its `splits.json`. No flips by
    default: a mirrored move_left is a move_right."""

    def __init__(
        self,
        num_classes: int = 6,
        videos_per_class: int = 40,
        frames: int = 36,
        frame_width: int = 128,
        frame_height: int = 96,
        seed: int = 0,
        root: str | None = None,
        num_segments: int = 3,
        test_segments: int = 3,
        num_p: int | None = 4,
        img_size: int = 64,
        hflip: bool = False,
        batch_size: int = 16,
        **kwargs,
    ) -> None:
        super().__init__(root=root, num_segments=num_segments, test_segments=test_segments, num_p=num_p,
                         img_size=img_size, hflip=hflip, batch_size=batch_size, **kwargs)
        self.config = SyntheticMotionConfig(num_classes=num_classes, videos_per_class=videos_per_class,
                                            frames=frames, width=frame_width, height=frame_height, seed=seed)

    @property
    def class_names(self) -> list[str]:
        return self.config.class_names

    def _target(self) -> Path:
        return self.root if self.root is not None else synthetic_root(self.config, self.cache_dir)

    def prepare_data(self) -> None:
        generate_synthetic(self._target(), config=self.config, workers=self.prepare_workers)

    def find_prepared(self) -> Path:
        path = self._target()
        if not (path / MANIFEST_NAME).is_file():
            raise FileNotFoundError(f"no synthetic dataset at {path}: call prepare_data() first (Lightning does in fit)")
        return path

    def items(self, subset: str) -> list[tuple[str, int]]:
        return read_synthetic_splits(self.data_root or self.find_prepared())[subset]
