"""LightningDataModules: UCF-101, HMDB-51, the synthetic motion set, and raw files to predict.

Every module reads only prepared trees (docs/design.md section 8): `prepare_data()` (run once per
node by Lightning) makes or finds the prepared copy with `ensure_prepared`, and `setup()`
finds that copy again by a pure path computation and fails clearly when it is missing.
`num_classes` and `class_names` come from the split lists (or the synthetic config) and are
available right after `__init__`, so the CLI can link them to the model.

Arguments: the loading ones are top level (`root`, `split_dir`, `split`, `num_segments`,
`num_p`, `accumulate`, `img_size`, `batch_size`, `num_workers`, `skip_missing`,
`skip_corrupt`, ...); preparation and noise are grouped (`prepare: PrepareOptions`,
`noise: NoiseOptions`), which the CLI exposes as `--data.prepare.width`, `--data.noise.rate`
(YAML: `prepare: {width: 170, height: 128}`). Every value is checked in `__init__`.

Before training or testing, `setup()` opens every listed file's GOP table (a demux: about
3 ms a file) and names the files the reader rejects; with skip_corrupt they are dropped
with one warning. `predict_paths` (raw files) are prepared by `prepare_files` into a temp
folder that is removed after prediction, also when it fails.

Validation: UCF-101 and HMDB-51 have no validation split; as usual in the literature (TSN,
CoViAR) `val` is the split's test list, evaluated cheaply during fit (one view of K
segments, centre crop) while `test` uses `test_segments` x `test_crops` views. The synthetic
set has a real held-out val list.

Noise (`noise.rate` > 0): `SpuriousMotion(noise.rate, noise.seed)` is applied to every
stage (train, val, test, predict), so one cached dataset serves every noise level.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from csvr.data.codec import CodecError, CompressedVideo
from csvr.data.datasets import CompressedVideoDataset, EpochSampler, collate
from csvr.data.prepare import PrepareError, ensure_prepared, prepare_files, prepared_path, reader_reason, settings_dict
from csvr.data.sampling import num_views
from csvr.data.splits import hmdb51_classes, read_hmdb51_split, read_ucf101_split, ucf101_classes
from csvr.data.synthetic import SyntheticMotionConfig, generate_synthetic, read_synthetic_splits, synthetic_root
from csvr.data.transforms import SpuriousMotion
from csvr.io import MANIFEST_NAME, read_manifest
from csvr.progress import progress as progress_bar
from csvr.workers import START_METHOD

DATA_HELP = "see the README section 'Getting the data' (download, then `csvr prepare SRC DST`)"


def _check(name: str, value: object, ok: bool, want: str) -> None:
    if not ok:
        raise ValueError(f"{name} must be {want}, got {value!r}")


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class PrepareOptions:
    """How a raw tree is re-encoded for the reader (`csvr prepare`): `workers` processes,
    output frame size `width` x `height` (340x256 is the CoViAR recipe; smaller is cheaper to
    decode on a CPU), `cache_dir` for prepared copies (default $CSVR_CACHE or ~/.cache/csvr)."""

    workers: int = 2
    width: int = 340
    height: int = 256
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        _check("prepare.workers", self.workers, _int(self.workers) and self.workers >= 1, "an integer >= 1")
        for name in ("width", "height"):
            value = getattr(self, name)
            _check(f"prepare.{name}", value, _int(value) and value >= 16, "an integer >= 16 (pixels)")


@dataclass(frozen=True)
class NoiseOptions:
    """Spurious background motion (`SpuriousMotion`) on every stage: `rate` in [0, 1] (0 = off), `seed`."""

    rate: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"noise.rate must be in [0, 1], got {self.rate!r}")


class CompressedVideoDataModule(L.LightningDataModule):
    """Base class: subclasses supply `class_names` and `items(subset)` for train/val/test.

    root: the video tree `<Class>/<video>` (raw or prepared); split_dir: the list files;
    split: 1-3; num_segments: K; test_segments: segments at test time (as V = ceil(
    test_segments / K) views of K); test_crops: 1 (centre) or 3; num_p: T (None = all
    P-frames of a GOP); accumulate: trace MVs/residuals back to the I-frame; img_size: side of
    the square crops; hflip: random horizontal flips in training; skip_missing / skip_corrupt:
    drop listed-but-absent / unreadable videos instead of failing; noise: `NoiseOptions`;
    prepare: `PrepareOptions`; predict_paths: raw video files for `predict` (prepared on the fly
    into a temp folder; label -1).
    """

    SIZE_OPTIONS = "prepare.width / prepare.height"  # the options that set the frame size

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
        noise: NoiseOptions = NoiseOptions(),
        prepare: PrepareOptions = PrepareOptions(),
        predict_paths: list[str] | None = None,
    ) -> None:
        super().__init__()
        noise = NoiseOptions(**noise) if isinstance(noise, dict) else noise
        prepare = PrepareOptions(**prepare) if isinstance(prepare, dict) else prepare
        _check("split", split, split in (1, 2, 3), "1, 2 or 3")
        _check("num_segments", num_segments, _int(num_segments) and num_segments >= 1, "an integer >= 1 (K)")
        _check("test_segments", test_segments, _int(test_segments) and test_segments >= 1, "an integer >= 1")
        _check("test_crops", test_crops, test_crops in (1, 3), "1 (centre crop) or 3 (left, centre, right)")
        _check(
            "num_p",
            num_p,
            num_p is None or (_int(num_p) and num_p >= 1),
            "an integer >= 1 (P-frames per GOP) or null (all of them)",
        )
        _check("img_size", img_size, _int(img_size) and img_size >= 8, "an integer >= 8 (pixels)")
        _check("batch_size", batch_size, _int(batch_size) and batch_size >= 1, "an integer >= 1")
        _check(
            "test_batch_size",
            test_batch_size,
            test_batch_size is None or (_int(test_batch_size) and test_batch_size >= 1),
            "an integer >= 1 or null",
        )
        _check("num_workers", num_workers, _int(num_workers) and num_workers >= 0, "an integer >= 0")
        self.root = Path(root).expanduser() if root is not None else None
        self.split_dir = Path(split_dir).expanduser() if split_dir is not None else None
        self.split, self.num_segments, self.test_segments = split, num_segments, test_segments
        self.test_crops, self.num_p, self.accumulate, self.img_size = test_crops, num_p, accumulate, img_size
        self.hflip = hflip
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory
        views = num_views(test_segments, num_segments) * test_crops
        self.test_batch_size = test_batch_size or max(1, batch_size // views)
        self.skip_missing, self.skip_corrupt = skip_missing, skip_corrupt
        self.noise_options, self.prepare_options = noise, prepare
        self.noise = SpuriousMotion(noise.rate, noise.seed) if noise.rate > 0 else None
        self.prepare_workers, self.cache_dir = prepare.workers, prepare.cache_dir
        self.prepare_size = {"width": prepare.width, "height": prepare.height}
        self.predict_paths = list(predict_paths) if predict_paths else None
        self.data_root: Path | None = None
        self.datasets: dict[str, CompressedVideoDataset] = {}
        self._predict_tmp: Path | None = None
        self._unreadable: dict[str, str] = {}  # relative path -> reason, from the split check
        self._checked: set[str] = set()
        self._check_img_size()
        self.save_hyperparameters(ignore=["noise", "prepare"])
        # plain dicts, not dataclasses: checkpoints stay loadable with weights_only=True
        self.save_hyperparameters({**self.hparams, "noise": asdict(noise), "prepare": asdict(prepare)})

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

    def prepared_size(self) -> tuple[int, int]:
        """(width, height) of the frames the datasets will read."""
        manifest = read_manifest(self.root) if self.root is not None else None
        if manifest and "settings" in manifest:
            return manifest["settings"]["width"], manifest["settings"]["height"]
        return self.prepare_size["width"], self.prepare_size["height"]

    def _check_img_size(self) -> None:
        """Crops are resized to img_size: refuse more than 2x upscaling, warn above 1x."""
        w, h = self.prepared_size()
        side = min(w, h)
        if self.img_size > 2 * side:
            raise ValueError(
                f"img_size {self.img_size} is more than twice the prepared frames' short side "
                f"({w}x{h}): crops would be upscaled {self.img_size / side:.1f}x; lower img_size "
                f"or use larger frames ({self.SIZE_OPTIONS})"
            )
        if self.img_size > side:
            warnings.warn(
                f"img_size {self.img_size} exceeds the prepared frames' short side ({w}x{h}): crops are upscaled",
                stacklevel=3,
            )

    # -- preparing ------------------------------------------------------------------------
    def _check_root(self) -> Path:
        if self.root is None or not self.root.is_dir():
            raise FileNotFoundError(f"data root {self.root} is not a folder of videos (<Class>/<video>); {DATA_HELP}")
        return self.root

    def prepare_data(self) -> None:
        if self.predict_paths and self.root is None:
            return
        ensure_prepared(
            self._check_root(),
            cache_dir=self.cache_dir,
            workers=self.prepare_workers,
            skip_failed=self.skip_corrupt,
            progress=True,
            **self.prepare_size,
        )

    def find_prepared(self) -> Path:
        """The prepared tree made by prepare_data (raises when it is not there)."""
        path = prepared_path(self._check_root(), self.cache_dir, **self.prepare_size)
        if not (path / MANIFEST_NAME).is_file():
            raise FileNotFoundError(
                f"no prepared copy of {self.root} at {path}: call prepare_data() first "
                f"(Lightning does so in fit/validate/test), or run `csvr prepare {self.root} DST` and set root to DST"
            )
        return path

    def _usable(self, items: list[tuple[str, int]], subset: str) -> list[tuple[str, int]]:
        """Items minus those prepare could not make (manifest) and those the reader rejects."""
        failed = set((read_manifest(self.data_root) or {}).get("failed", []))
        bad = [rel for rel, _ in items if rel in failed]
        if bad:
            warnings.warn(f"{len(bad)} listed videos could not be prepared and are skipped: {bad[:3]}", stacklevel=2)
        return self._readable([it for it in items if it[0] not in failed], subset)

    def _readable(self, items: list[tuple[str, int]], subset: str) -> list[tuple[str, int]]:
        """Open every file's GOP table (a demux, no decoding) once; name the files the reader
        rejects (PrepareError), or with skip_corrupt drop them with one warning."""
        root = self.data_root
        todo = [rel for rel, _ in items if rel not in self._checked and (root / rel).is_file()]
        with progress_bar(
            len(todo), f"checking {len(todo)} {subset} videos", len(todo) >= 500, transient=True
        ) as advance:
            for rel in todo:
                try:
                    with CompressedVideo(root / rel):
                        pass
                except CodecError as e:
                    self._unreadable[rel] = reader_reason(e, root / rel)
                self._checked.add(rel)
                advance()
        bad = [rel for rel, _ in items if rel in self._unreadable]
        if not bad:
            return items
        shown = "; ".join(f"{root / rel} ({self._unreadable[rel]})" for rel in bad[:3]) + (
            "; ..." if len(bad) > 3 else ""
        )
        msg = f"{len(bad)} of {len(items)} {subset} videos cannot be read: {shown}"
        if not self.skip_corrupt:
            if self.root is not None and root == self.root.resolve():
                fix = f"re-prepare them (`csvr prepare SRC {root} --force`, SRC = the raw videos) or delete them"
            else:
                fix = "delete them: the next run prepares them again from the raw videos"
            raise PrepareError(
                f"{msg}. They are prepared files that csvr's reader rejects: {fix}; "
                f"or set skip_corrupt=true to train and test without them."
            )
        warnings.warn(f"{msg}; skipping them (skip_corrupt=True)", stacklevel=2)
        return [it for it in items if it[0] not in self._unreadable]

    # -- datasets --------------------------------------------------------------------------
    def _dataset(
        self, items: list[tuple[str, int]], train: bool, views: int = 1, crops: int = 1, root: Path | None = None
    ) -> CompressedVideoDataset:
        return CompressedVideoDataset(
            root or self.data_root,
            items,
            num_segments=self.num_segments,
            num_p=self.num_p,
            accumulate=self.accumulate,
            img_size=self.img_size,
            train=train,
            test_views=views,
            test_crops=crops,
            hflip=self.hflip,
            skip_corrupt=self.skip_corrupt,
            skip_missing=self.skip_missing,
            noise=self.noise,
        )

    def setup(self, stage: str | None = None) -> None:
        if stage == "predict" and self.predict_paths:
            self.datasets["predict"] = self._predict_dataset()
            return
        self.data_root = self.find_prepared()
        views = num_views(self.test_segments, self.num_segments)
        if stage in ("fit", None) and "train" not in self.datasets:
            self.datasets["train"] = self._dataset(self._usable(self.items("train"), "train"), train=True)
        if stage in ("fit", "validate", None) and "val" not in self.datasets:
            self.datasets["val"] = self._dataset(self._usable(self.items("val"), "val"), train=False)
        if stage in ("test", "predict", None) and "test" not in self.datasets:
            self.datasets["test"] = self._dataset(
                self._usable(self.items("test"), "test"), train=False, views=views, crops=self.test_crops
            )
        if stage == "predict":
            self.datasets["predict"] = self.datasets["test"]

    # -- predicting raw files ---------------------------------------------------------------
    def _predict_dataset(self) -> CompressedVideoDataset:
        """Prepare `predict_paths` into a temp folder (removed by teardown / on_exception / at
        exit). Files that cannot be prepared are named (the user's paths) and fail the run, or
        with skip_corrupt are dropped with a warning; missing files likewise with skip_missing."""
        paths = [str(p) for p in self.predict_paths]
        missing = [p for p in paths if not Path(p).expanduser().is_file()]
        if missing:
            msg = f"video(s) to predict not found: {', '.join(missing)}"
            if not self.skip_missing or len(missing) == len(paths):
                raise FileNotFoundError(f"{msg}; check the paths (skip_missing=true predicts the others)")
            warnings.warn(f"{msg}; skipping them (skip_missing=True)", stacklevel=2)
        self._cleanup_predict()
        tmp = self._predict_tmp = Path(tempfile.mkdtemp(prefix="csvr-predict-"))
        self._predict_finalizer = weakref.finalize(self, shutil.rmtree, str(tmp), ignore_errors=True)
        try:
            jobs = {
                f"{i:04d}/{Path(p).name}": (Path(p).expanduser(), tmp / f"{i:04d}" / Path(p).name)
                for i, p in enumerate(paths)
                if p not in missing
            }
            names = {rel: paths[int(rel[:4])] for rel in jobs}
            failed: dict[str, str] = {}
            settings = settings_dict(**self.prepare_size)
            prepare_files(
                jobs,
                settings,
                workers=self.prepare_workers,
                done=lambda rel, _n, err: err is not None and failed.__setitem__(rel, err),
            )
            if failed:
                msg = f"{len(failed)} of {len(jobs)} video(s) to predict cannot be read: " + "; ".join(failed.values())
                if not self.skip_corrupt or len(failed) == len(jobs):
                    hint = " (skip_corrupt=true predicts the others)" if len(failed) < len(jobs) else ""
                    raise PrepareError(msg + hint)
                warnings.warn(f"{msg}; skipping them (skip_corrupt=True)", stacklevel=2)
            rels = [rel for rel in jobs if rel not in failed]
            ds = self._dataset(
                [(rel, -1) for rel in rels],
                train=False,
                views=num_views(self.test_segments, self.num_segments),
                crops=self.test_crops,
                root=tmp,
            )
            ds.video_ids = {rel: names[rel] for rel in rels}
            return ds
        except BaseException:
            self._cleanup_predict()
            raise

    def _cleanup_predict(self) -> None:
        if self._predict_tmp is not None:
            shutil.rmtree(self._predict_tmp, ignore_errors=True)
            self._predict_tmp = None
            self._predict_finalizer.detach()

    def teardown(self, stage: str | None = None) -> None:
        if stage in ("predict", None):
            self._cleanup_predict()

    def on_exception(self, exception: BaseException) -> None:
        """Lightning calls this when fit/test/predict fails: no temp folder is left behind."""
        self._cleanup_predict()

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
            self.datasets[name],
            batch_size=batch_size,
            num_workers=self.num_workers,
            sampler=EpochSampler(len(self.datasets[name]), seed, epoch) if shuffle else None,
            generator=torch.Generator().manual_seed(seed % 2**63),
            pin_memory=self.pin_memory,
            collate_fn=collate,
            persistent_workers=self.num_workers > 0,
            multiprocessing_context=START_METHOD if self.num_workers > 0 else None,
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

    SIZE_OPTIONS = "frame_width / frame_height"

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
        self.config = SyntheticMotionConfig(
            num_classes=num_classes,
            videos_per_class=videos_per_class,
            frames=frames,
            width=frame_width,
            height=frame_height,
            seed=seed,
        )
        super().__init__(
            root=root,
            num_segments=num_segments,
            test_segments=test_segments,
            num_p=num_p,
            img_size=img_size,
            hflip=hflip,
            batch_size=batch_size,
            **kwargs,
        )

    def prepared_size(self) -> tuple[int, int]:
        return self.config.width, self.config.height

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
            raise FileNotFoundError(
                f"no synthetic dataset at {path}: call prepare_data() first (Lightning does in fit)"
            )
        return path

    def items(self, subset: str) -> list[tuple[str, int]]:
        return read_synthetic_splits(self.data_root or self.find_prepared())[subset]
