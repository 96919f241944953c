"""Checkpoint files: safe loading (tensors and plain data only) and atomic writing.

`load_checkpoint(path)` is the one way csvr reads a checkpoint outside Lightning's own resume
(`csvr energy`, `csvr lif-response`, `--ckpt_path best`); it never unpickles code.
`save_atomic(obj, path)` writes a temporary file in the same folder and renames it over
`path`, so an interrupted or failed write (full disk) leaves the previous file intact.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from io import BytesIO
from pathlib import Path
from typing import Any

import torch


class UnsafeCheckpointError(ValueError):
    """The checkpoint holds pickled objects other than tensors and plain data."""


def load_checkpoint(path: str | os.PathLike, option: str = "--ckpt_path") -> dict[str, Any]:
    """The checkpoint at `path` loaded on the CPU with `weights_only=True`.

    Raises FileNotFoundError (no such file) or UnsafeCheckpointError (the file would run
    code when unpickled, or is not a torch checkpoint), both naming the file and `option`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{option}: checkpoint {path} not found: pass the path of a .ckpt file written by `csvr fit`"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnsafeCheckpointError(
            f"{option}: refusing to load {path}: it holds pickled objects other than tensors and plain "
            f"data ({first}). csvr loads checkpoints with weights_only=True; only load files you trust, "
            "and re-save them as a plain state_dict."
        ) from None
    except (RuntimeError, EOFError, OSError) as e:
        raise UnsafeCheckpointError(f"{option}: {path} is not a readable torch checkpoint ({e})") from None
    if not isinstance(ckpt, dict):
        raise UnsafeCheckpointError(f"{option}: {path} holds a {type(ckpt).__name__}, not a checkpoint dict")
    return ckpt


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view[: 1 << 24])
        view = view[n:]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """`torch.save(obj)` to `path` via a temporary file in the same folder and `os.replace`
    (atomic on POSIX; the same folder means the same filesystem). On any failure the temporary
    file is removed and the previous `path`, if any, is left untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = BytesIO()
    torch.save(obj, buf)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        try:
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a checkpoint is a normal file
            _write_all(fd, buf.getbuffer())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
