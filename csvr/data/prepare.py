"""`csvr prepare SRC DST`: re-encode a video tree to MPEG-4 Part 2, GOP 12, no B-frames (DESIGN 1, 8).

Any codec PyAV decodes (H.264, MPEG-4 with B-frames, Cinepak, ...) goes in; out comes a mirror of
the tree (same relative paths and names, container from the suffix) written by `encode_video`.
Frames are counted by decoding and re-stamped 0, 1, 2, ... (headers and pts of real files lie).

* Atomic: each file is written to a hidden temp name and renamed when complete, so a file is
  finished exactly when its final name exists. Idempotent: a second run skips finished files.
  Resumable: temp files left by a killed run are deleted at start.
* A file that cannot be decoded is skipped, named at the end and listed (path, TAB, reason) in
  `prepare_failures.txt` at the DST root; the exit status is then 1.
* `csvr_prepared.json` (settings, file count, failures, version) is written last.
* Only files with a video suffix (`VIDEO_SUFFIXES`) are read; hidden files are ignored; other
  files (split lists, READMEs) are not copied.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import av

from csvr.data.codec import CodecError, CorruptVideoError, truncation_reason
from csvr.data.encode import TMP_MARK, encode_video

MANIFEST_NAME = "csvr_prepared.json"
FAILURES_NAME = "prepare_failures.txt"
VERSION = 1
VIDEO_SUFFIXES = (".avi", ".mp4", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v")


class PrepareError(CodecError):
    """Some files of a tree could not be prepared (raised by `ensure_prepared`)."""


@dataclass
class PrepareReport:
    """Outcome of `prepare_tree`. Paths are relative to the tree roots (POSIX strings)."""

    dst: Path
    settings: dict
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    frames: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def num_files(self) -> int:
        return len(self.written) + len(self.skipped)


def settings_dict(width: int = 340, height: int = 256, gop_size: int = 12, qscale: int = 3) -> dict:
    """Everything that determines the output files (stored in the manifest)."""
    return {"codec": "mpeg4", "width": width, "height": height, "gop_size": gop_size,
            "qscale": qscale, "max_b_frames": 0, "fps": 25, "pix_fmt": "yuv420p"}


def find_videos(root: Path) -> list[Path]:
    """Video files under root (by suffix, case-insensitive), hidden names skipped, sorted."""
    out = []
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or p.suffix.lower() not in VIDEO_SUFFIXES:
            continue
        if p.is_file():
            out.append(p)
    return sorted(out)


def decoded_frames(path: Path) -> Iterator[av.VideoFrame]:
    """Every decodable frame of path's first video stream, in presentation order.

    Raises CorruptVideoError when FFmpeg fails, no frame decodes, or the file is truncated.
    """
    try:
        container = av.open(str(path))
    except av.FFmpegError as e:
        raise CorruptVideoError(path, f"FFmpeg cannot open it: {e}") from e
    with container:
        if not container.streams.video:
            raise CorruptVideoError(path, "no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        n, end = 0, None
        try:
            for pkt in container.demux(stream):
                stamp = pkt.pts if pkt.pts is not None else pkt.dts
                if pkt.size and stamp is not None:
                    end = max(end or 0, stamp + (pkt.duration or 1))
                for frame in pkt.decode():
                    n += 1
                    yield frame
        except av.FFmpegError as e:
            raise CorruptVideoError(path, f"decoding failed after {n} frames: {e}") from e
        if n == 0:
            raise CorruptVideoError(path, "no decodable video frames")
        if reason := truncation_reason(stream, end):
            raise CorruptVideoError(path, reason)


def prepare_file(src: Path, dst: Path, settings: dict) -> int:
    """Re-encode one file (atomically). Returns the number of frames written."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    return encode_video(decoded_frames(src), dst, width=settings["width"], height=settings["height"],
                        gop_size=settings["gop_size"], qscale=settings["qscale"], fps=settings["fps"])


def _job(src: str, dst: str, settings: dict) -> tuple[int, str | None]:
    """Worker: (frames, None) or (0, reason). Never raises."""
    try:
        return prepare_file(Path(src), Path(dst), settings), None
    except CodecError as e:
        return 0, str(e)
    except Exception as e:  # noqa: BLE001 - anything FFmpeg/PyAV throws is a per-file failure
        return 0, f"{src}: {type(e).__name__}: {e}"


def _write_atomic(path: Path, text: str) -> None:
    """Write text to path via a temp file; leave path untouched when it already holds text."""
    try:
        if path.read_text() == text:
            return
    except OSError:
        pass
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_MARK}")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_manifest(root: str | os.PathLike) -> dict | None:
    """The manifest at root, or None when absent or unreadable."""
    try:
        return json.loads((Path(root) / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def prepare_tree(src: str | os.PathLike, dst: str | os.PathLike, *, width: int = 340,
                 height: int = 256, gop_size: int = 12, qscale: int = 3, workers: int = 2,
                 progress: bool = True) -> PrepareReport:
    """Re-encode every video under src into the mirrored tree dst; see the module docstring."""
    src, dst = Path(src).resolve(), Path(dst).resolve()
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: not a folder (csvr prepare SRC DST needs SRC to be a video tree)")
    if _inside(dst, src) or _inside(src, dst):
        raise ValueError(f"DST {dst} and SRC {src} must not contain each other")
    settings = settings_dict(width, height, gop_size, qscale)
    old = read_manifest(dst)
    if old is not None and old.get("settings") != settings:
        raise ValueError(f"{dst} was prepared with other settings {old.get('settings')}; "
                         f"use another DST or delete it")
    dst.mkdir(parents=True, exist_ok=True)
    for leftover in dst.rglob(f"*{TMP_MARK}"):  # from a killed run: never a finished file
        leftover.unlink(missing_ok=True)
    report = PrepareReport(dst=dst, settings=settings)
    start = time.perf_counter()
    todo = []
    for path in find_videos(src):
        rel = path.relative_to(src).as_posix()
        (report.skipped if (dst / rel).exists() else todo).append(rel)

    def done(rel: str, frames: int, error: str | None) -> None:
        if error is None:
            report.written.append(rel)
            report.frames += frames
        else:
            report.failed[rel] = error

    with _progress(progress, len(todo), f"preparing {src.name}") as advance:
        if workers <= 1 or len(todo) <= 1:
            for rel in todo:
                done(rel, *_job(str(src / rel), str(dst / rel), settings))
                advance()
        else:
            # fork: workers start at once (spawn re-imports csvr and its deps in each worker);
            # they only run PyAV/numpy, never torch, so the parent's threads do not matter.
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                futures = {pool.submit(_job, str(src / rel), str(dst / rel), settings): rel for rel in todo}
                for fut in as_completed(futures):
                    done(futures[fut], *fut.result())
                    advance()
    report.written.sort()
    report.seconds = time.perf_counter() - start
    failures = dst / FAILURES_NAME
    if report.failed:
        _write_atomic(failures, "".join(f"{rel}\t{why}\n" for rel, why in sorted(report.failed.items())))
    else:
        failures.unlink(missing_ok=True)
    manifest = {"version": VERSION, "settings": settings, "files": report.num_files,
                "failed": sorted(report.failed), "source": str(src)}
    _write_atomic(dst / MANIFEST_NAME, json.dumps(manifest, indent=2) + "\n")
    return report


class _progress:
    """A rich progress bar (or nothing); the context value is a no-argument `advance()`."""

    def __init__(self, enabled: bool, total: int, label: str) -> None:
        self.enabled, self.total, self.label = enabled and total > 0, total, label

    def __enter__(self):
        if not self.enabled:
            return lambda: None
        from rich.progress import Progress

        self.bar = Progress(transient=False)
        self.bar.start()
        task = self.bar.add_task(self.label, total=self.total)
        return lambda: self.bar.advance(task)

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.bar.stop()


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """`cache_dir`, else $CSVR_CACHE, else ~/.cache/csvr."""
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get("CSVR_CACHE") or Path.home() / ".cache" / "csvr")


def prepared_path(root: str | os.PathLike, cache_dir: str | os.PathLike | None = None, *, width: int = 340,
                  height: int = 256, gop_size: int = 12, qscale: int = 3) -> Path:
    """Where `ensure_prepared` puts (or finds) the prepared tree, touching nothing: root itself
    when it holds a manifest, else <cache>/prepared/<name>-<hash of abs root + settings>/."""
    root = Path(root).resolve()
    if (root / MANIFEST_NAME).is_file():
        return root
    settings = settings_dict(width, height, gop_size, qscale)
    key = hashlib.sha1(f"{root}|{json.dumps(settings, sort_keys=True)}".encode()).hexdigest()[:10]
    return (cache_root(cache_dir) / "prepared" / f"{root.name}-{key}").resolve()


def ensure_prepared(root: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None,
                    workers: int = 2, skip_failed: bool = False, progress: bool = False,
                    width: int = 340, height: int = 256, gop_size: int = 12, qscale: int = 3) -> Path:
    """A prepared tree for `root`: root itself when it holds a manifest, else a cached copy.

    The copy lives in <cache>/prepared/<name>-<hash of abs root + settings>/ and is brought up
    to date by `prepare_tree` on every call (finished files are skipped, so a complete copy
    costs one directory scan). All files or none: raises PrepareError when any
    file failed (unless skip_failed). Never writes under root.
    """
    root = Path(root).resolve()
    if (root / MANIFEST_NAME).is_file():
        return root
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such video folder")
    settings = settings_dict(width, height, gop_size, qscale)
    target = prepared_path(root, cache_dir, width=width, height=height, gop_size=gop_size, qscale=qscale)
    if _inside(target, root):
        raise ValueError(f"cache folder {target} is inside the source tree {root}; set CSVR_CACHE elsewhere")
    # Always run: finished files are skipped (a directory scan), and files added to the
    # source since the last call are prepared too.
    report = prepare_tree(root, target, workers=workers, progress=progress, **{
        k: settings[k] for k in ("width", "height", "gop_size", "qscale")})
    failed = report.failed
    if failed and not skip_failed:
        raise PrepareError(
            f"{root}: {len(failed)} file(s) could not be prepared (see {target / FAILURES_NAME}): "
            f"{', '.join(sorted(failed)[:5])}{' ...' if len(failed) > 5 else ''}. "
            f"Fix or remove them, or pass skip_failed=True (skip_corrupt) to train without them.")
    return target


def main(argv: list[str] | None = None) -> int:
    """`csvr prepare SRC DST`: exit status 0 when every file was prepared, 1 otherwise."""
    parser = argparse.ArgumentParser(
        prog="csvr prepare",
        description="Re-encode every video under SRC into DST (same relative paths and names) as "
                    "MPEG-4 Part 2 with a fixed GOP, no B-frames and a fixed quantiser, the format "
                    "csvr reads I-frames, motion vectors and residuals from. Re-running skips "
                    "finished files; failures are listed in DST/" + FAILURES_NAME + ".")
    parser.add_argument("src", type=Path, metavar="SRC", help="folder of videos (any codec FFmpeg decodes)")
    parser.add_argument("dst", type=Path, metavar="DST", help="output folder (created; must not be inside SRC)")
    parser.add_argument("--workers", type=int, default=2, help="parallel encoder processes (default 2)")
    parser.add_argument("--width", type=int, default=340, help="output width in pixels (default 340)")
    parser.add_argument("--height", type=int, default=256, help="output height in pixels (default 256)")
    parser.add_argument("--gop-size", type=int, default=12, help="frames per GOP: 1 I-frame + P-frames (default 12)")
    parser.add_argument("--qscale", type=int, default=3, help="fixed MPEG-4 quantiser, 1 (best) to 31 (default 3)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        report = prepare_tree(args.src, args.dst, width=args.width, height=args.height,
                              gop_size=args.gop_size, qscale=args.qscale, workers=args.workers,
                              progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as e:
        print(f"csvr prepare: error: {e}", file=sys.stderr)
        return 2
    print(f"prepared {len(report.written)} file(s) ({report.frames} frames) in {report.seconds:.1f} s, "
          f"skipped {len(report.skipped)} finished, {len(report.failed)} failed -> {report.dst}")
    if report.failed:
        print(f"FAILED ({report.dst / FAILURES_NAME}):", file=sys.stderr)
        for rel, why in sorted(report.failed.items()):
            print(f"  {rel}: {why}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
