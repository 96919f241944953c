from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import pytest
import torch

from csvr.data import HMDB51DataModule, SyntheticMotionDataModule, UCF101DataModule, prepared_path
from csvr.data.datamodules import NoiseOptions, PrepareOptions
from csvr.data.prepare import MANIFEST_NAME, PrepareError, ensure_prepared, prepare_tree
from tests.videos_util import UCF_MINI_TEST as TEST
from tests.videos_util import UCF_MINI_TRAIN as TRAIN
from tests.videos_util import make_all_intra, make_moving_square_video, make_ucf_mini, write_random_bytes

SMALL = dict(num_segments=3, num_p=2, img_size=32, batch_size=3, num_workers=0, test_segments=6)


def _shapes(batch: dict, b: int, s: int, t: int = 2, size: int = 32) -> None:
    assert batch["iframe"].shape == (b, s, 3, size, size) and batch["iframe"].dtype == torch.float32
    assert batch["mv"].shape == (b, s, t, 2, size, size)
    assert batch["residual"].shape == (b, s, t, 3, size, size)
    assert batch["label"].dtype == torch.long and len(batch["video_id"]) == b and batch["skipped"] == []


@pytest.fixture
def ucf_slice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two clips per class, official layout and list format (real clips of the shared slice
    when present, else generated: tests/videos_util.make_ucf_mini)."""
    monkeypatch.setenv("CSVR_CACHE", str(tmp_path / "cache"))
    return make_ucf_mini(tmp_path)[0]


def test_ucf101_datamodule(ucf_slice: Path, tmp_path: Path) -> None:
    dm = UCF101DataModule(root=str(ucf_slice), **SMALL)
    assert dm.num_classes == 3 and dm.class_names == ["BabyCrawling", "Punch", "PushUps"]  # before setup
    with pytest.raises(FileNotFoundError, match="prepare_data"):
        dm.setup("fit")
    dm.prepare_data()
    prepared = prepared_path(ucf_slice)
    assert prepared == ensure_prepared(ucf_slice)  # the pure path agrees with prepare.py
    assert tmp_path / "cache" in prepared.parents and not (ucf_slice / MANIFEST_NAME).exists()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    _shapes(batch, 3, 3)
    assert sorted(batch["label"].tolist()) == [0, 1, 2] and sorted(batch["video_id"]) == TRAIN
    val = next(iter(dm.val_dataloader()))
    _shapes(val, 3, 3)
    assert val["video_id"] == TEST and val["label"].tolist() == [0, 1, 2]
    dm.setup("test")  # V = ceil(6 / 3) = 2 views: S = 6, test batch = 3 // 2
    test = next(iter(dm.test_dataloader()))
    _shapes(test, 1, 6)
    # a second DataModule reuses the prepared cache: nothing is re-encoded
    stamps = {p: p.stat().st_mtime_ns for p in prepared.rglob("*.avi")}
    assert len(stamps) == 6
    UCF101DataModule(root=str(ucf_slice), **SMALL).prepare_data()
    assert {p: p.stat().st_mtime_ns for p in prepared.rglob("*.avi")} == stamps


def test_missing_root_and_lists(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="ucfTrainTestlist"):
        UCF101DataModule(root=str(tmp_path / "UCF-101"))
    lists = tmp_path / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 A\r\n")
    dm = UCF101DataModule(root=str(tmp_path / "UCF-101"))
    assert dm.num_classes == 1
    with pytest.raises(FileNotFoundError, match=r"UCF-101 is not a folder.*Getting the data.*csvr prepare"):
        dm.prepare_data()


def _hmdb_tree(tmp_path: Path) -> tuple[Path, Path]:
    """kick (2 videos) and kick_ball (2 videos) as raw MPEG-4 .avi, with split-1 lists."""
    root, lists = tmp_path / "hmdb51", tmp_path / "testTrainMulti_7030_splits"
    lists.mkdir()
    for c, (cls, shift) in enumerate([("kick", (3, 0)), ("kick_ball", (0, 3))]):
        (root / cls).mkdir(parents=True)
        for v in range(2):
            make_moving_square_video(
                root / cls / f"{cls}_{v}.avi",
                shift=shift,
                n_frames=24,
                size=(128, 128),
                square=32,
                start=(16, 16),
                seed=c * 2 + v,
            )
        (lists / f"{cls}_test_split1.txt").write_text(f"{cls}_0.avi 1 \r\n{cls}_1.avi 2 \r\n", newline="")
    return root, lists


def test_hmdb51_datamodule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CSVR_CACHE", str(tmp_path / "cache"))
    root, lists = _hmdb_tree(tmp_path)
    dm = HMDB51DataModule(root=str(root), **{**SMALL, "batch_size": 2, "num_workers": 1})
    assert dm.class_names == ["kick", "kick_ball"] and dm.split_dir == lists
    dm.prepare_data()
    dm.setup("fit")
    dm.datasets["train"][0]  # decode in this process first: the (spawned) worker must not inherit PyAV state
    batch = next(iter(dm.train_dataloader()))
    _shapes(batch, 2, 3)
    got = dict(zip(batch["video_id"], batch["label"].tolist()))
    assert got == {"kick/kick_0.avi": 0, "kick_ball/kick_ball_0.avi": 1}
    val = next(iter(dm.val_dataloader()))
    assert val["video_id"] == ["kick/kick_1.avi", "kick_ball/kick_ball_1.avi"]
    # kick moves right (dx > 0), kick_ball down (dy > 0): the MVs survive prepare + crop
    mv = val["mv"]
    assert mv[0, :, :, 0].sum() > 0 and mv[1, :, :, 1].sum() > 0
    assert abs(mv[0, :, :, 1].sum()) < 0.1 * mv[0, :, :, 0].sum()


def test_synthetic_datamodule_and_predict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CSVR_CACHE", str(tmp_path / "cache"))
    kw = dict(
        num_classes=3,
        videos_per_class=3,
        frames=24,
        frame_width=64,
        frame_height=48,
        img_size=32,
        num_p=2,
        batch_size=3,
        num_workers=0,
        prepare={"workers": 1},
    )
    dm = SyntheticMotionDataModule(**kw)
    assert dm.num_classes == 3 and dm.class_names == ["move_left", "move_right", "move_up"]
    with pytest.raises(FileNotFoundError, match="prepare_data"):
        dm.setup("fit")
    dm.prepare_data()
    assert (tmp_path / "cache" / "synthetic").is_dir()
    dm.setup("fit")
    train = next(iter(dm.train_dataloader()))
    _shapes(train, 3, 3)
    # no flips for the synthetic set: move_left keeps dx < 0 and move_right dx > 0 after augmentation
    for mv, label in zip(train["mv"], train["label"].tolist()):
        dx = mv[:, :, 0]
        if label < 2:
            assert (dx[dx != 0].mean() > 0) == (label == 1)
    assert next(iter(dm.val_dataloader()))["label"].tolist() == [0, 1, 2]
    # predict on a raw video of another size, prepared on the fly into a temp folder
    raw = tmp_path / "clip.avi"
    make_moving_square_video(raw, n_frames=30, size=(160, 128), square=48, start=(20, 20))
    pdm = SyntheticMotionDataModule(**kw, predict_paths=[str(raw)])
    pdm.setup("predict")
    batch = next(iter(pdm.predict_dataloader()))
    _shapes(batch, 1, 3)
    assert batch["label"].tolist() == [-1] and batch["video_id"] == [str(raw)]
    tmp = pdm._predict_tmp
    pdm.teardown("predict")
    assert not tmp.exists()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_p=0), "num_p must be an integer >= 1"),
        (dict(num_p=-1), "num_p must be an integer >= 1"),
        (dict(num_segments=0), "num_segments must be an integer >= 1"),
        (dict(test_crops=2), "test_crops must be 1 (centre crop) or 3"),
        (dict(img_size=1000), "img_size 1000 is more than twice the prepared frames' short side (64x48)"),
        (dict(batch_size=0), "batch_size must be an integer >= 1"),
        (dict(prepare={"width": 0}), "prepare.width must be an integer >= 16"),
        (dict(prepare={"workers": -3}), "prepare.workers must be an integer >= 1"),
        (dict(noise={"rate": 1.5}), "noise.rate must be in [0, 1]"),
    ],
)
def test_bad_values_are_refused_at_construction(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as info:
        SyntheticMotionDataModule(frame_width=64, frame_height=48, **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_option_groups_and_plain_hparams() -> None:
    dm = SyntheticMotionDataModule(prepare=PrepareOptions(workers=1, width=170, height=128), noise={"rate": 0.25})
    assert dm.prepare_workers == 1 and dm.prepare_size == {"width": 170, "height": 128}
    assert dm.noise.rate == 0.25 and dm.noise_options == NoiseOptions(rate=0.25)
    # checkpoints store plain values (loadable with weights_only=True)
    assert dm.hparams["prepare"] == {"workers": 1, "width": 170, "height": 128, "cache_dir": None}
    assert dm.hparams["noise"] == {"rate": 0.25, "seed": 0}
    with pytest.warns(UserWarning, match="img_size 100 exceeds"):
        SyntheticMotionDataModule(img_size=100)


def test_setup_names_prepared_files_the_reader_rejects(tmp_path: Path) -> None:
    """A prepared tree with an all-intra file: named before training starts, or dropped with
    skip_corrupt. The message says it is a prepared file (not 'run csvr prepare')."""
    raw, lists = _hmdb_tree(tmp_path)
    root = tmp_path / "prepared"
    assert prepare_tree(raw, root, workers=1, progress=False, width=128, height=128).ok
    make_all_intra(root / "kick" / "kick_0.avi", n_frames=24, size=(128, 128))  # replaced after prepare
    kw = dict(SMALL, split_dir=str(lists))
    dm = HMDB51DataModule(root=str(root), **kw)
    dm.prepare_data()  # a tree with a manifest is used as it is
    with pytest.raises(PrepareError) as info:
        dm.setup("fit")
    msg = str(info.value)
    assert "1 of 2 train videos cannot be read" in msg and str(root / "kick" / "kick_0.avi") in msg
    assert "no P-frames" in msg and "prepared files" in msg and "--force" in msg and "skip_corrupt" in msg
    dm = HMDB51DataModule(root=str(root), skip_corrupt=True, **kw)
    with pytest.warns(UserWarning, match="kick_0.avi") as record:
        dm.setup("fit")
    assert len([w for w in record if "kick_0.avi" in str(w.message)]) == 1
    assert [rel for rel, _ in dm.datasets["train"].items] == ["kick_ball/kick_ball_0.avi"]
    assert len(dm.datasets["val"].items) == 2


def test_predict_bad_file_named_skipped_and_no_temp_left(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))  # where csvr-predict-* folders go
    good = make_moving_square_video(tmp_path / "good.avi", n_frames=24, size=(96, 64), square=24, start=(8, 8)).path
    bad = write_random_bytes(tmp_path / "bad.avi")
    kw = dict(
        frame_width=64,
        frame_height=48,
        img_size=32,
        num_p=2,
        num_workers=0,
        prepare={"workers": 1},
        predict_paths=[str(good), str(bad)],
    )
    with pytest.raises(PrepareError) as info:
        SyntheticMotionDataModule(**kw).setup("predict")
    assert str(bad) in str(info.value) and "csvr-predict" not in str(info.value) and "skip_corrupt" in str(info.value)
    assert list(temp.iterdir()) == []
    dm = SyntheticMotionDataModule(skip_corrupt=True, **kw)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        dm.setup("predict")
    assert any(str(bad) in str(w.message) and "csvr-predict" not in str(w.message) for w in record)
    batch = next(iter(dm.predict_dataloader()))
    assert batch["video_id"] == [str(good)] and batch["label"].tolist() == [-1]
    assert len(list(temp.iterdir())) == 1
    dm.on_exception(RuntimeError("a failed predict run"))  # what Lightning calls when predict fails
    assert list(temp.iterdir()) == []
