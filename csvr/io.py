"""Small file helpers every csvr writer uses: atomic writes, one temp naming scheme, the manifest.

Atomic write: the bytes go to a hidden temp file *in the target's folder* (same filesystem, so
`os.replace` is an atomic rename, never a copy) and replace the target only when complete: a
reader sees the old file or the new one, never half of one. A killed writer leaves at most a
temp file, recognisable by `TMP_MARK`, which `remove_temp_files` deletes.

Temp names: `.<name>.<pid>-<random>.csvr-tmp` next to the target (hidden, no video suffix, so
no tree scan mistakes one for a finished file).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TMP_MARK = ".csvr-tmp"
MANIFEST_NAME = "csvr_prepared.json"


def temp_path(path: str | os.PathLike) -> Path:
    """A fresh temp name for writing `path`: hidden, in the same folder, ending in TMP_MARK."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(3)}{TMP_MARK}")


def is_temp(path: str | os.PathLike) -> bool:
    """True for a temp file of `temp_path` (finished files never end in TMP_MARK)."""
    return Path(path).name.endswith(TMP_MARK)


def remove_temp_files(root: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Delete every leftover temp file in root (and below, when recursive); returns them."""
    root = Path(root)
    found = root.rglob(f"*{TMP_MARK}") if recursive else root.glob(f"*{TMP_MARK}")
    gone = [p for p in found if p.is_file()] if root.is_dir() else []
    for p in gone:
        p.unlink(missing_ok=True)
    return gone


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path next to `path`; when the block ends normally the temp file replaces
    `path`, otherwise (error, interrupt) it is deleted. For writers that want a file name
    (`torch.save`, `savefig`: pass the format explicitly, the temp name has no image suffix)."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Write data (str as UTF-8) to path atomically (temp file in the same folder, fsync, replace)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """`atomic_write` of obj as indented JSON with a final newline."""
    atomic_write(path, json.dumps(obj, indent=2) + "\n")


def read_manifest(root: str | os.PathLike) -> dict | None:
    """The manifest (`csvr_prepared.json`) of a prepared tree, or None when absent or unreadable."""
    try:
        return json.loads((Path(root) / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None


def write_manifest(root: str | os.PathLike, manifest: dict) -> None:
    """Write root's manifest atomically; a manifest that already holds the same data is left
    untouched (no write into a finished tree that did not change)."""
    if read_manifest(root) == json.loads(json.dumps(manifest)):
        return
    atomic_write_json(Path(root) / MANIFEST_NAME, manifest)
