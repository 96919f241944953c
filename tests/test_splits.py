from __future__ import annotations

from pathlib import Path

import pytest

from csvr.data.splits import read_hmdb51_split, read_ucf101_split, ucf101_classes

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
UCF = SHARED / "splits" / "ucf101"
HMDB = SHARED / "splits" / "hmdb51"
SLICE = SHARED / "data" / "ucf101_3cls" / "ucfTrainTestlist"


@pytest.mark.skipif(not UCF.is_dir(), reason=f"{UCF} absent (shared split lists)")
@pytest.mark.parametrize("split,n_train,n_test", [(1, 9537, 3783), (2, 9586, 3734), (3, 9624, 3696)])
def test_ucf101_counts(split: int, n_train: int, n_test: int) -> None:
    assert len(read_ucf101_split(UCF, split, "train")) == n_train
    assert len(read_ucf101_split(UCF, split, "test")) == n_test


@pytest.mark.skipif(not UCF.is_dir(), reason=f"{UCF} absent (shared split lists)")
def test_ucf101_labels_and_quirk() -> None:
    classes = ucf101_classes(UCF)
    assert len(classes) == 101 and classes[0] == "ApplyEyeMakeup" and classes[-1] == "YoYo"
    train = read_ucf101_split(UCF, 1, "train")
    test = read_ucf101_split(UCF, 1, "test")
    assert train[0] == ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", 0)
    assert test[0] == ("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", 0)
    assert all(not p.endswith("\r") and "\\" not in p for p, _ in train + test)
    # the HandstandPushups folder holds v_HandStandPushups_* files: path taken verbatim
    hsp = [(p, lab) for p, lab in train if p.startswith("HandstandPushups/")]
    assert hsp and all(Path(p).name.startswith("v_HandStandPushups_") for p, _ in hsp)
    assert {lab for p, lab in hsp} == {classes.index("HandstandPushups")}
    assert {lab for _, lab in train} == set(range(101))


@pytest.mark.skipif(not HMDB.is_dir(), reason=f"{HMDB} absent (shared split lists)")
def test_hmdb51_split1() -> None:
    train, classes = read_hmdb51_split(HMDB, 1, "train")
    test, classes2 = read_hmdb51_split(HMDB, 1, "test")
    assert (len(train), len(test), len(classes)) == (3570, 1530, 51) and classes == classes2
    assert classes == sorted(classes) and classes.index("kick") + 1 == classes.index("kick_ball")
    path, label = train[0]
    assert path.startswith("brush_hair/") and path.endswith(".avi") and label == 0
    assert not set(train) & set(test)


@pytest.mark.skipif(not SLICE.is_dir(), reason=f"{SLICE} absent (shared UCF-101 slice)")
def test_ucf101_slice() -> None:
    assert ucf101_classes(SLICE) == ["BabyCrawling", "Punch", "PushUps"]
    train, test = read_ucf101_split(SLICE, 1, "train"), read_ucf101_split(SLICE, 1, "test")
    assert (len(train), len(test)) == (179, 111)
    assert ("Punch/v_Punch_g15_c01.avi", 1) in train


def test_missing_lists_are_clear(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere.*ucfTrainTestlist"):
        read_ucf101_split(tmp_path / "nowhere", 1, "train")
    (tmp_path / "classInd.txt").write_text("1 A\r\n2 B\r\n")
    with pytest.raises(FileNotFoundError, match="trainlist02.txt"):
        read_ucf101_split(tmp_path, 2, "train")
    with pytest.raises(FileNotFoundError, match="test_split1.*testTrainMulti"):
        read_hmdb51_split(tmp_path, 1, "train")


def test_hmdb_written_lists(tmp_path: Path) -> None:
    (tmp_path / "kick_ball_test_split1.txt").write_text("b1.avi 1 \r\nb2.avi 2 \r\nb3.avi 0 \r\n")
    (tmp_path / "kick_test_split1.txt").write_text("a1.avi 2 \r\na2.avi 1 \r\n")
    items, classes = read_hmdb51_split(tmp_path, 1, "train")
    assert classes == ["kick", "kick_ball"]
    assert items == [("kick/a2.avi", 0), ("kick_ball/b1.avi", 1)]
