"""Readers for the official UCF-101 and HMDB-51 split lists.

UCF-101 (`ucfTrainTestlist/`): `classInd.txt` ("1 ApplyEyeMakeup"), `trainlist0{k}.txt`
("Class/v_Class_gGG_cCC.avi 1", 1-based label) and `testlist0{k}.txt` (path only; the class
comes from the folder). HMDB-51 (`testTrainMulti_7030_splits/`): `<class>_test_split<k>.txt`
with lines "<video>.avi <id> ", id 1 = train, 2 = test, 0 = unused. Lists use CRLF.

Paths are taken verbatim from the lists (the UCF folder `HandstandPushups` holds files
`v_HandStandPushups_*`; rebuilding a path from the file name would miss them).
"""

from __future__ import annotations

import re
from pathlib import Path

UCF_HINT = (
    "get the lists from https://www.crcv.ucf.edu/data/UCF101/UCF101TrainTestSplits-RecognitionTask.zip "
    "(folder ucfTrainTestlist; see the README section 'Getting the data')"
)
HMDB_HINT = (
    "get the lists from https://serre-lab.clps.brown.edu/resource/hmdb-a-large-human-motion-database/ "
    "(test_train_splits.rar, folder testTrainMulti_7030_splits; see the README section 'Getting the data')"
)
_SUBSETS = ("train", "test")


def _lines(path: Path, hint: str) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"split list not found: {path}; {hint}")
    return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


def _check(split_dir: Path, split: int, subset: str, hint: str) -> None:
    if not split_dir.is_dir():
        raise FileNotFoundError(f"split folder not found: {split_dir}; {hint}")
    if split not in (1, 2, 3):
        raise ValueError(f"split must be 1, 2 or 3, got {split!r}")
    if subset not in _SUBSETS:
        raise ValueError(f"subset must be 'train' or 'test', got {subset!r}")


def ucf101_classes(split_dir: str | Path) -> list[str]:
    """Class names from `classInd.txt`, index i = label i (0-based)."""
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise FileNotFoundError(f"split folder not found: {split_dir}; {UCF_HINT}")
    rows = [ln.split() for ln in _lines(split_dir / "classInd.txt", UCF_HINT)]
    rows.sort(key=lambda r: int(r[0]))
    names = [r[1] for r in rows]
    if [int(r[0]) for r in rows] != list(range(1, len(rows) + 1)):
        raise ValueError(f"{split_dir / 'classInd.txt'}: class ids are not 1..{len(rows)}")
    return names


def read_ucf101_split(split_dir: str | Path, split: int, subset: str) -> list[tuple[str, int]]:
    """[(relative path 'Class/file.avi', 0-based label)] of one UCF-101 split list."""
    split_dir = Path(split_dir)
    _check(split_dir, split, subset, UCF_HINT)
    index = {name: i for i, name in enumerate(ucf101_classes(split_dir))}
    path = split_dir / f"{subset}list0{split}.txt"
    items = []
    for ln in _lines(path, UCF_HINT):
        rel = ln.split()[0].replace("\\", "/")
        folder = rel.split("/")[0]
        if folder not in index:
            raise ValueError(f"{path}: class folder {folder!r} of {rel!r} is not in classInd.txt")
        label = index[folder]
        parts = ln.split()
        if len(parts) > 1 and int(parts[1]) - 1 != label:
            raise ValueError(f"{path}: label {parts[1]} of {rel!r} disagrees with classInd.txt")
        items.append((rel, label))
    return items


_HMDB_RE = re.compile(r"^(?P<cls>.+)_test_split(?P<k>[123])\.txt$")


def hmdb51_classes(split_dir: str | Path, split: int = 1) -> list[str]:
    """Sorted class names from the `<class>_test_split<k>.txt` file names."""
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise FileNotFoundError(f"split folder not found: {split_dir}; {HMDB_HINT}")
    names = []
    for p in split_dir.iterdir():
        m = _HMDB_RE.match(p.name)
        if m and int(m["k"]) == split:
            names.append(m["cls"])
    if not names:
        raise FileNotFoundError(f"no *_test_split{split}.txt files in {split_dir}; {HMDB_HINT}")
    return sorted(names)


def read_hmdb51_split(split_dir: str | Path, split: int, subset: str) -> tuple[list[tuple[str, int]], list[str]]:
    """([(relative path '<class>/<video>.avi', 0-based label)], sorted class names)."""
    split_dir = Path(split_dir)
    _check(split_dir, split, subset, HMDB_HINT)
    classes = hmdb51_classes(split_dir, split)
    want = "1" if subset == "train" else "2"
    items = []
    for label, name in enumerate(classes):
        path = split_dir / f"{name}_test_split{split}.txt"
        for ln in _lines(path, HMDB_HINT):
            parts = ln.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise ValueError(f"{path}: malformed line {ln!r} (expected '<video>.avi <0|1|2>')")
            if parts[1] == want:
                items.append((f"{name}/{parts[0]}", label))
    return items, classes
