"""`csvr prepare SRC DST`: re-encode a video tree to MPEG-4 Part 2, GOP 12, no B-frames (DESIGN 1, 8).

Any codec PyAV decodes (H.264, MPEG-4 with B-frames, Cinepak, ...) goes in; out comes a mirror of
the tree (same relative paths and names, container from the suffix) written by `encode_video`.
Frames are counted by decoding and re-stamped 0, 1, 2, ... (headers and pts of real files lie).

* Atomic: each file is written to a hidden temp name (`csvr.io`) and renamed when complete, so
  a file is finished exactly when its final name exists. Idempotent: a second run skips
  finished files (`--force` re-encodes them). Resumable: temp files left by a killed run are
  deleted at start.
* Validated: before it takes its final name, every output is opened with the reader
  (`CompressedVideo`: GOP table, then the first P-frame of GOP 0). A source of one frame (a
  still image with a video suffix) or anything else the reader would reject fails here, not
  hours into training.
* A file that cannot be prepared is skipped, named at the end and listed (path, TAB, reason)
  in `prepare_failures.txt` at the DST root; the exit status is then 1.
* `csvr_prepared.json` (settings, file count, failures, version) is written last.
* Interruptible: Ctrl-C (once or twice) or SIGTERM stops the workers within seconds (see
  `csvr.workers`), removes the temp files of unfinished outputs, says what was done and exits
  with 130 (143 for SIGTERM); rerunning resumes. Workers die with a SIGKILLed parent.
* Only files with a video suffix (`VIDEO_SUFFIXES`) are read; hidden files are ignored; other
  files (split lists, READMEs) are not copied. Symlinked folders and files are followed; a
  symlink loop or a broken symlink is reported as a failure by name, never skipped silently.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av

from csvr.data.codec import CodecError, CompressedVideo, CorruptVideoError, truncation_reason
from csvr.data.encode import encode_video
from csvr.io import MANIFEST_NAME, atomic_write, read_manifest, remove_temp_files, write_manifest  # noqa: F401 - re-exported
from csvr.progress import progress as progress_bar
from csvr.workers import Interrupted, WorkerDied, deferred_interrupts, exit_status, run_jobs, sigterm_as_interrupt

FAILURES_NAME = "prepare_failures.txt"
VERSION = 1
VIDEO_SUFFIXES = (".avi", ".mp4", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v")
MIN_FRAMES = 2  # an I-frame and a P-frame: the least the compressed-domain reader can use


class PrepareError(CodecError):
    """Some files could not be prepared, or a prepared file fails the reader."""


@dataclass
class PrepareReport:
    """Outcome of `prepare_tree`. Paths are relative to the tree roots (POSIX strings)."""

    dst: Path
    settings: dict
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    unfinished: list[str] = field(default_factory=list)  # left undone by an interruption
    frames: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def num_files(self) -> int:
        return len(self.written) + len(self.skipped)


class PrepareInterrupted(Interrupted):
    """`prepare_tree` was stopped by SIGINT/SIGTERM; `report` says what was finished."""

    def __init__(self, report: PrepareReport, signum: int = signal.SIGINT) -> None:
        super().__init__(signum)
        self.report = report


def _at_least(name: str, value: int, low: int, flag: str | None = None) -> None:
    if not isinstance(value, int) or value < low:
        shown = f"{name} ({flag})" if flag else name
        raise ValueError(f"{shown} must be an integer >= {low}, got {value!r}")


def check_workers(workers: int) -> None:
    """ValueError unless workers >= 1."""
    _at_least("workers", workers, 1, "--workers")


def settings_dict(width: int = 340, height: int = 256, gop_size: int = 12, qscale: int = 3) -> dict:
    """Everything that determines the output files (stored in the manifest); checks each value."""
    _at_least("width", width, 16, "--width")
    _at_least("height", height, 16, "--height")
    if not isinstance(gop_size, int) or gop_size < 2:
        raise ValueError(
            f"gop_size (--gop-size) must be >= 2 (an I-frame then P-frames, whose motion "
            f"vectors csvr reads), got {gop_size!r}"
        )
    if not isinstance(qscale, int) or not 1 <= qscale <= 31:
        raise ValueError(f"qscale (--qscale) must be an MPEG-4 quantiser 1..31, got {qscale!r}")
    return {
        "codec": "mpeg4",
        "width": width,
        "height": height,
        "gop_size": gop_size,
        "qscale": qscale,
        "max_b_frames": 0,
        "fps": 25,
        "pix_fmt": "yuv420p",
    }


def find_videos(root: Path, exclude: Path | None = None) -> tuple[list[Path], dict[str, str]]:
    """Video files under root (by suffix, case-insensitive), hidden names skipped, sorted.

    Symlinked folders and files are followed. Returns (videos, problems): problems maps the
    relative path of a symlink loop, a broken symlink, an unreadable folder or a link into
    `exclude` (DST) to the reason it was not read.
    """
    videos: list[Path] = []
    problems: dict[str, str] = {}
    ident = lambda st: (st.st_dev, st.st_ino)  # noqa: E731
    avoid = ident(exclude.stat()) if exclude is not None and exclude.exists() else None

    def link_text(path: Path) -> str:
        return f" -> {os.readlink(path)}" if path.is_symlink() else ""

    def walk(folder: Path, ancestors: frozenset) -> None:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as e:
            problems[folder.relative_to(root).as_posix()] = f"cannot list this folder: {e.strerror}"
            return
        for e in entries:
            if e.name.startswith("."):
                continue
            path = Path(e.path)
            rel = path.relative_to(root).as_posix()
            try:
                st = path.stat()  # follows symlinks
            except OSError as err:
                problems[rel] = f"symlink cannot be followed ({err.strerror}){link_text(path)}"
                continue
            if e.is_dir():
                if ident(st) in ancestors:
                    problems[rel] = (
                        f"symlink loop{link_text(path)}: leads back to a folder above it; not followed (remove the link)"
                    )
                elif ident(st) == avoid:
                    problems[rel] = f"symlink into DST{link_text(path)}; not followed"
                else:
                    walk(path, ancestors | {ident(st)})
            elif e.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
                videos.append(path)

    walk(root, frozenset({ident(root.stat())}))
    return sorted(videos), problems


def decoded_frames(path: Path, min_frames: int = 1) -> Iterator[av.VideoFrame]:
    """Every decodable frame of path's first video stream, in presentation order.

    Raises CorruptVideoError when FFmpeg fails, fewer than `min_frames` frames decode, or the
    file is truncated.
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
        if n < min_frames:
            raise PrepareError(
                f"{path}: only {n} decodable frame (FFmpeg reads it as {container.format.name!r}, a still "
                f"image?); csvr needs a video of at least {min_frames} frames (an I-frame and a P-frame)"
            )
        if reason := truncation_reason(stream, end):
            raise CorruptVideoError(path, reason)


def reader_reason(e: Exception, path: Path) -> str:
    """The reader's complaint about path, without the path and the advice meant for raw files."""
    msg = str(e).removeprefix(f"{path}: ")
    for advice in (". csvr reads", ". Replace the file"):
        msg = msg.split(advice)[0]
    return msg.replace(str(path), "<output>")


def check_output(path: Path, shown: str | os.PathLike | None = None) -> None:
    """Open a written file with the reader (GOP table) and decode GOP 0 up to its first P-frame.

    Raises PrepareError naming `shown` (default: path) when the reader cannot use the file.
    """
    try:
        with CompressedVideo(path) as video:
            video.read_gop(0, num_p=1)
    except (CodecError, IndexError) as e:
        raise PrepareError(f"{shown or path}: the re-encoded output fails the reader ({reader_reason(e, path)})") from e


def prepare_file(src: Path, dst: Path, settings: dict) -> int:
    """Re-encode one file atomically, checked with the reader. Returns the frames written."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    return encode_video(
        decoded_frames(src, MIN_FRAMES),
        dst,
        width=settings["width"],
        height=settings["height"],
        gop_size=settings["gop_size"],
        qscale=settings["qscale"],
        fps=settings["fps"],
        check=lambda tmp, _n: check_output(tmp, src),
    )


def _job(src: str, dst: str, settings: dict) -> tuple[int, str | None]:
    """Worker: (frames, None) or (0, reason). Never raises (but SIGTERM/Ctrl-C end it)."""
    try:
        return prepare_file(Path(src), Path(dst), settings), None
    except CodecError as e:
        return 0, str(e)
    except Exception as e:  # noqa: BLE001 - anything FFmpeg/PyAV throws is a per-file failure
        return 0, f"{src}: {type(e).__name__}: {e}"


def prepare_files(
    jobs: dict[str, tuple[Path, Path]],
    settings: dict,
    *,
    workers: int = 2,
    done: Callable[[str, int, str | None], None],
    progress: bool = False,
    label: str = "preparing",
) -> None:
    """Prepare each `key: (src, dst)` with `workers` processes; `done(key, frames, error or None)`
    as each ends. On an interrupt the workers are stopped and the temp files of unfinished
    outputs removed before the KeyboardInterrupt propagates (finished outputs stay)."""
    finished: set[str] = set()

    with progress_bar(len(jobs), label, progress) as advance:

        def on_result(key: str, result: tuple[int, str | None] | WorkerDied) -> None:
            frames, error = (0, f"{jobs[key][0]}: {result}") if isinstance(result, WorkerDied) else result
            finished.add(key)
            done(key, frames, error)
            advance()

        try:
            run_jobs(_job, [(k, (str(s), str(d), settings)) for k, (s, d) in jobs.items()], workers, on_result)
        except KeyboardInterrupt:
            with deferred_interrupts():
                for folder in {d.parent for k, (_, d) in jobs.items() if k not in finished}:
                    remove_temp_files(folder, recursive=False)
            raise


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def prepare_tree(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    width: int = 340,
    height: int = 256,
    gop_size: int = 12,
    qscale: int = 3,
    workers: int = 2,
    progress: bool = True,
    force: bool = False,
) -> PrepareReport:
    """Re-encode every video under src into the mirrored tree dst; see the module docstring.

    Raises ValueError for bad settings, FileNotFoundError for a missing src, and
    PrepareInterrupted (a KeyboardInterrupt) when stopped by SIGINT / SIGTERM.
    """
    src, dst = Path(src).resolve(), Path(dst).resolve()
    settings = settings_dict(width, height, gop_size, qscale)
    check_workers(workers)
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: not a folder (csvr prepare SRC DST needs SRC to be a video tree)")
    if _inside(dst, src) or _inside(src, dst):
        raise ValueError(f"DST {dst} and SRC {src} must not contain each other")
    old = read_manifest(dst)
    if old is not None and old.get("settings") != settings:
        raise ValueError(f"{dst} was prepared with other settings {old.get('settings')}; use another DST or delete it")
    report = PrepareReport(dst=dst, settings=settings)
    start = time.perf_counter()
    todo: dict[str, tuple[Path, Path]] = {}

    def done(rel: str, frames: int, error: str | None) -> None:
        if error is None:
            report.written.append(rel)
            report.frames += frames
        else:
            report.failed[rel] = error

    try:
        dst.mkdir(parents=True, exist_ok=True)
        remove_temp_files(dst)  # from a killed run: never a finished file
        videos, problems = find_videos(src, exclude=dst)
        report.failed.update(problems)
        for path in videos:
            rel = path.relative_to(src).as_posix()
            if (dst / rel).exists() and not force:
                report.skipped.append(rel)
            else:
                todo[rel] = (path, dst / rel)
        prepare_files(todo, settings, workers=workers, done=done, progress=progress, label=f"preparing {src.name}")
    except KeyboardInterrupt as e:
        report.unfinished = sorted(set(todo) - set(report.written) - set(report.failed))
        report.seconds = time.perf_counter() - start
        raise PrepareInterrupted(report, getattr(e, "signum", signal.SIGINT)) from None
    report.written.sort()
    report.seconds = time.perf_counter() - start
    failures = dst / FAILURES_NAME
    if report.failed:
        atomic_write(failures, "".join(f"{rel}\t{why}\n" for rel, why in sorted(report.failed.items())))
    else:
        failures.unlink(missing_ok=True)
    write_manifest(
        dst,
        {
            "version": VERSION,
            "settings": settings,
            "files": report.num_files,
            "failed": sorted(report.failed),
            "source": str(src),
        },
    )
    return report


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """`cache_dir`, else $CSVR_CACHE, else ~/.cache/csvr."""
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get("CSVR_CACHE") or Path.home() / ".cache" / "csvr")


def prepared_path(
    root: str | os.PathLike,
    cache_dir: str | os.PathLike | None = None,
    *,
    width: int = 340,
    height: int = 256,
    gop_size: int = 12,
    qscale: int = 3,
) -> Path:
    """Where `ensure_prepared` puts (or finds) the prepared tree, touching nothing: root itself
    when it holds a manifest, else <cache>/prepared/<name>-<hash of abs root + settings>/."""
    root = Path(root).resolve()
    if (root / MANIFEST_NAME).is_file():
        return root
    settings = settings_dict(width, height, gop_size, qscale)
    key = hashlib.sha1(f"{root}|{json.dumps(settings, sort_keys=True)}".encode()).hexdigest()[:10]
    return (cache_root(cache_dir) / "prepared" / f"{root.name}-{key}").resolve()


def ensure_prepared(
    root: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    workers: int = 2,
    skip_failed: bool = False,
    progress: bool = False,
    width: int = 340,
    height: int = 256,
    gop_size: int = 12,
    qscale: int = 3,
) -> Path:
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
    report = prepare_tree(
        root,
        target,
        workers=workers,
        progress=progress,
        **{k: settings[k] for k in ("width", "height", "gop_size", "qscale")},
    )
    failed = report.failed
    if failed and not skip_failed:
        raise PrepareError(
            f"{root}: {len(failed)} file(s) could not be prepared (see {target / FAILURES_NAME}): "
            f"{', '.join(sorted(failed)[:5])}{' ...' if len(failed) > 5 else ''}. "
            f"Fix or remove them, or pass skip_failed=True (skip_corrupt) to train without them."
        )
    return target


def main(argv: list[str] | None = None) -> int:
    """`csvr prepare SRC DST`: exit status 0 when every file was prepared, 1 when some failed,
    2 for bad arguments, 130 / 143 when interrupted by Ctrl-C / SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="csvr prepare",
        description="Re-encode every video under SRC into DST (same relative paths and names) as "
        "MPEG-4 Part 2 with a fixed GOP, no B-frames and a fixed quantiser, the format "
        "csvr reads I-frames, motion vectors and residuals from. Every output is checked "
        "with csvr's reader. Re-running skips finished files (Ctrl-C is safe: rerun to "
        "resume); failures are listed in DST/" + FAILURES_NAME + ".",
    )
    parser.add_argument("src", type=Path, metavar="SRC", help="folder of videos (any codec FFmpeg decodes)")
    parser.add_argument("dst", type=Path, metavar="DST", help="output folder (created; must not be inside SRC)")
    parser.add_argument("--workers", type=int, default=2, help="parallel encoder processes, >= 1 (default 2)")
    parser.add_argument("--width", type=int, default=340, help="output width in pixels, >= 16 (default 340)")
    parser.add_argument("--height", type=int, default=256, help="output height in pixels, >= 16 (default 256)")
    parser.add_argument(
        "--gop-size", type=int, default=12, help="frames per GOP: 1 I-frame + P-frames, >= 2 (default 12)"
    )
    parser.add_argument("--qscale", type=int, default=3, help="fixed MPEG-4 quantiser, 1 (best) to 31 (default 3)")
    parser.add_argument(
        "--force",
        action="store_true",
        help="re-encode files that are already finished in DST (e.g. one the reader rejects)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    with sigterm_as_interrupt():
        try:
            report = prepare_tree(
                args.src,
                args.dst,
                width=args.width,
                height=args.height,
                gop_size=args.gop_size,
                qscale=args.qscale,
                workers=args.workers,
                progress=not args.no_progress,
                force=args.force,
            )
        except (FileNotFoundError, ValueError) as e:
            print(f"csvr prepare: error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt as e:
            r = getattr(e, "report", None)
            what = (
                "nothing written yet"
                if r is None
                else (
                    f"{len(r.written)} file(s) finished in this run, {len(r.skipped)} already finished before, "
                    f"{len(r.failed)} failed, {len(r.unfinished)} not done; no partial files left in {r.dst}"
                )
            )
            name = signal.Signals(exit_status(e) - 128).name
            print(
                f"\ncsvr prepare: interrupted ({name}): {what}. Run the same command again to resume "
                f"(finished files are skipped).",
                file=sys.stderr,
            )
            return exit_status(e)
    print(
        f"prepared {len(report.written)} file(s) ({report.frames} frames) in {report.seconds:.1f} s, "
        f"skipped {len(report.skipped)} finished, {len(report.failed)} failed -> {report.dst}"
    )
    if report.failed:
        print(f"FAILED ({report.dst / FAILURES_NAME}):", file=sys.stderr)
        for rel, why in sorted(report.failed.items()):
            print(f"  {rel}: {why}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
