"""csvr.io: atomic writes, the temp naming scheme, the manifest."""

from __future__ import annotations

from pathlib import Path

import pytest

from csvr.io import (
    MANIFEST_NAME,
    TMP_MARK,
    atomic_path,
    atomic_write,
    atomic_write_json,
    is_temp,
    read_manifest,
    remove_temp_files,
    temp_path,
    write_manifest,
)


def test_temp_names_are_hidden_siblings(tmp_path: Path) -> None:
    a, b = temp_path(tmp_path / "x.avi"), temp_path(tmp_path / "x.avi")
    assert a != b and a.parent == tmp_path and a.name.startswith(".x.avi.") and is_temp(a)
    assert a.name.endswith(TMP_MARK) and not is_temp(tmp_path / "x.avi")


def test_atomic_write_replaces_or_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    atomic_write(target, "old")
    atomic_write(target, b"new")
    assert target.read_text() == "new"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer failed")
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]
    atomic_write_json(tmp_path / "d.json", {"a": 1})
    assert (tmp_path / "d.json").read_text() == '{\n  "a": 1\n}\n'


def test_manifest_and_leftovers(tmp_path: Path) -> None:
    assert read_manifest(tmp_path) is None
    write_manifest(tmp_path, {"version": 1, "files": 2})
    stamp = (tmp_path / MANIFEST_NAME).stat().st_mtime_ns
    write_manifest(tmp_path, {"version": 1, "files": 2})  # same content: not rewritten
    assert (tmp_path / MANIFEST_NAME).stat().st_mtime_ns == stamp and read_manifest(tmp_path)["files"] == 2
    (tmp_path / MANIFEST_NAME).write_text("{broken")
    assert read_manifest(tmp_path) is None
    (tmp_path / "a").mkdir()
    left = [temp_path(tmp_path / "a" / "v.avi"), temp_path(tmp_path / "top.avi")]
    for p in left:
        p.write_bytes(b"partial")
    assert remove_temp_files(tmp_path, recursive=False) == [left[1]]
    assert remove_temp_files(tmp_path) == [left[0]] and not any(p.exists() for p in left)
