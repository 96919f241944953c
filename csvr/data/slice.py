"""`csvr make-slice`: a few classes of a UCF-101 download, split by group, in the official layout.

    csvr make-slice --ucf-root UCF-101 --lists ucfTrainTestlist --out data/ucf101_3cls \\
        --classes BabyCrawling Punch PushUps --train-groups 15-25 --test-groups 8-14

writes `OUT/UCF-101/<Class>/v_<Class>_gGG_cCC.avi` (hard links, or copies across filesystems,
or symlinks with --symlink) and `OUT/ucfTrainTestlist/{classInd,trainlist01,testlist01}.txt`
in the official format with CRLF line endings: classes renumbered 1..N in the given order,
train lines `Class/file.avi label`, test lines `Class/file.avi`. Split by group (clips of one
group come from one long video, so a random split leaks). `configs/ucf101_3cls.yaml` and
`make real` read such a slice.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
from pathlib import Path

CLIP = re.compile(r"^v_(?P<cls>[A-Za-z0-9]+)_g(?P<group>\d+)_c(?P<clip>\d+)\.avi$")


def parse_groups(text: str) -> list[int]:
    """'15-25' or '8,9,12' or '8-10,14' -> sorted group numbers (1-25)."""
    groups: set[int] = set()
    for part in text.split(","):
        a, _, b = part.strip().partition("-")
        try:
            lo, hi = int(a), int(b or a)
        except ValueError:
            raise ValueError(f"groups {text!r}: write ranges like 15-25 or lists like 8,9,12") from None
        if not 1 <= lo <= hi <= 25:
            raise ValueError(f"groups {text!r}: UCF-101 groups run from 1 to 25")
        groups.update(range(lo, hi + 1))
    return sorted(groups)


def _place(src: Path, dst: Path, symlink: bool) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    if symlink:
        os.symlink(src.resolve(), dst)
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def make_slice(
    ucf_root: str | Path,
    out: str | Path,
    classes: list[str],
    train_groups: list[int],
    test_groups: list[int],
    symlink: bool = False,
) -> dict[str, int]:
    """Build the slice (see module doc); returns {"train": n, "test": n}."""
    ucf_root, out = Path(ucf_root), Path(out)
    if not ucf_root.is_dir():
        raise FileNotFoundError(f"--ucf-root {ucf_root} is not a folder: pass the UCF-101 folder of UCF101.rar")
    if set(train_groups) & set(test_groups):
        raise ValueError(f"--train-groups and --test-groups overlap: {sorted(set(train_groups) & set(test_groups))}")
    if len(set(classes)) != len(classes) or not classes:
        raise ValueError(f"--classes must name distinct classes, got {classes}")
    if out.resolve() == ucf_root.resolve() or ucf_root.resolve() in out.resolve().parents:
        raise ValueError(f"--out {out} must not be inside --ucf-root {ucf_root}")
    train, test = [], []
    for label, cls in enumerate(classes, 1):
        folder = ucf_root / cls
        if not folder.is_dir():
            raise FileNotFoundError(f"--classes: {folder} not found (class names are the folder names of UCF-101)")
        n = 0
        for f in sorted(folder.iterdir()):
            m = CLIP.match(f.name)
            if not m or m["cls"] != cls:
                continue
            group = int(m["group"])
            rel = f"{cls}/{f.name}"
            if group in train_groups:
                train.append(f"{rel} {label}")
            elif group in test_groups:
                test.append(rel)
            else:
                continue
            _place(f, out / "UCF-101" / rel, symlink)
            n += 1
        if n == 0:
            raise ValueError(f"--classes: no clip of {cls} in groups {train_groups + test_groups} under {folder}")
    lists = out / "ucfTrainTestlist"
    lists.mkdir(parents=True, exist_ok=True)
    for name, lines in (
        ("classInd.txt", [f"{i} {c}" for i, c in enumerate(classes, 1)]),
        ("trainlist01.txt", train),
        ("testlist01.txt", test),
    ):
        (lists / name).write_bytes("".join(f"{line}\r\n" for line in lines).encode())
    return {"train": len(train), "test": len(test)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="csvr make-slice",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--ucf-root", required=True, help="the UCF-101 folder (UCF-101/<Class>/*.avi)")
    ap.add_argument("--lists", default=None, help="ucfTrainTestlist of the download (checked to hold classInd.txt)")
    ap.add_argument("--out", required=True, help="output folder (gets UCF-101/ and ucfTrainTestlist/)")
    ap.add_argument("--classes", nargs="+", default=["BabyCrawling", "Punch", "PushUps"])
    ap.add_argument("--train-groups", default="15-25")
    ap.add_argument("--test-groups", default="8-14")
    ap.add_argument("--symlink", action="store_true", help="symlink the clips instead of hard links/copies")
    a = ap.parse_args(argv)
    if a.lists is not None:
        ind = Path(a.lists) / "classInd.txt"
        if not ind.is_file():
            raise FileNotFoundError(f"--lists: {ind} not found (unzip UCF101TrainTestSplits-RecognitionTask.zip)")
        known = {line.split()[1] for line in ind.read_text().splitlines() if len(line.split()) == 2}
        unknown = [c for c in a.classes if c not in known]
        if unknown:
            raise ValueError(f"--classes: {unknown} not in {ind}")
    n = make_slice(a.ucf_root, a.out, a.classes, parse_groups(a.train_groups), parse_groups(a.test_groups), a.symlink)
    print(f"csvr make-slice: {n['train']} train and {n['test']} test clips of {len(a.classes)} classes -> {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
