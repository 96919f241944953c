"""`csvr prepare` stopped by Ctrl-C / SIGTERM / SIGKILL, run as a real subprocess, and the
worker pool it uses (csvr.workers). Linux only (reads /proc to find the worker processes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from csvr.io import TMP_MARK
from csvr.workers import START_METHOD, WorkerDied, WorkerError, WorkerPool
from tests.signals_util import terminal_signals
from tests.videos_util import make_moving_square_video

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
N_CLIPS = 20
# A bound that only a hang (the old deadlock) exceeds; normal exits take well under a second.
HANG_S = 60


@pytest.fixture(scope="module")
def clip_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 clips of 300 frames (one encoded clip, hard-linked): long enough to interrupt."""
    src = tmp_path_factory.mktemp("interrupt") / "src"
    first = src / "c0" / "v00.avi"
    make_moving_square_video(first, shift=(2, 1), n_frames=300, size=(320, 240), square=64)
    for k in range(1, N_CLIPS):
        path = src / f"c{k % 2}" / f"v{k:02d}.avi"
        path.parent.mkdir(parents=True, exist_ok=True)
        os.link(first, path)
    return src


def children(pid: int) -> list[int]:
    """Process ids whose parent is pid (from /proc)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                status = (d / "status").read_text()
            except OSError:
                continue
            if int(status.split("PPid:")[1].split()[0]) == pid:
                out.append(int(d.name))
    return out


def alive(pids: list[int]) -> list[int]:
    """The pids still running (zombies count as gone)."""
    out = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            out.append(pid)
    return out


def wait_gone(pids: list[int]) -> list[int]:
    """Poll until the pids are gone (or HANG_S passed); returns those still alive."""
    deadline = time.monotonic() + HANG_S
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive(pids)


def prepare_cmd(src: Path, dst: Path, workers: int = 2) -> list[str]:
    """`python -m csvr prepare SRC DST --workers N` at a small frame size, no progress bar."""
    args = ["prepare", str(src), str(dst), "--workers", str(workers), "--no-progress", "--width", "160"]
    return [sys.executable, "-m", "csvr", *args, "--height", "128"]


def start_prepare(src: Path, dst: Path) -> subprocess.Popen:
    """`prepare_cmd` in its own process group (as a shell job)."""
    return subprocess.Popen(
        prepare_cmd(src, dst),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=terminal_signals,
    )


def rerun_prepare(src: Path, dst: Path, workers: int) -> subprocess.CompletedProcess:
    return subprocess.run(prepare_cmd(src, dst, workers), cwd=REPO, capture_output=True, text=True, timeout=600)


def wait_for(proc: subprocess.Popen, dst: Path, what: str) -> list[int]:
    """Wait until dst holds a finished .avi ('output') or a temp file ('temp'); the workers' pids."""
    deadline = time.monotonic() + HANG_S
    while time.monotonic() < deadline and proc.poll() is None:
        names = [p.name for p in dst.rglob("*")] if dst.exists() else []
        if any(n.endswith(".avi") if what == "output" else n.endswith(TMP_MARK) for n in names):
            kids = children(proc.pid)
            if len(kids) >= 2:
                return kids
        time.sleep(0.01)
    raise AssertionError(f"prepare never got going: rc={proc.poll()} {proc.stderr.read() if proc.poll() else ''}")


def finished(dst: Path) -> set[str]:
    return {p.relative_to(dst).as_posix() for p in dst.rglob("*.avi")}


def test_ctrl_c_twice_stops_at_once_and_rerun_resumes(clip_tree: Path, tmp_path: Path) -> None:
    dst = tmp_path / "dst"
    proc = start_prepare(clip_tree, dst)
    workers = wait_for(proc, dst, "output")
    os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole process group
    time.sleep(1)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=HANG_S)
    assert proc.returncode == 130
    assert wait_gone(workers) == []
    assert not [p for p in dst.rglob("*") if p.name.endswith(TMP_MARK)]
    assert "interrupted (SIGINT)" in err and "Run the same command again to resume" in err
    done = finished(dst)
    assert 1 <= len(done) < N_CLIPS  # stopped early, kept what was finished
    rerun = rerun_prepare(clip_tree, dst, 2)
    assert rerun.returncode == 0, rerun.stderr
    assert f"skipped {len(done)} finished" in rerun.stdout and len(finished(dst)) == N_CLIPS


def test_sigterm_stops_and_cleans_up(clip_tree: Path, tmp_path: Path) -> None:
    dst = tmp_path / "dst"
    proc = start_prepare(clip_tree, dst)
    workers = wait_for(proc, dst, "temp")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=HANG_S)
    assert proc.returncode == 143 and "interrupted (SIGTERM)" in err
    assert wait_gone(workers) == []
    assert not [p for p in dst.rglob("*") if p.name.endswith(TMP_MARK)]


def test_killed_parent_takes_its_workers_along(clip_tree: Path, tmp_path: Path) -> None:
    dst = tmp_path / "dst"
    proc = start_prepare(clip_tree, dst)
    workers = wait_for(proc, dst, "temp")
    before = finished(dst)
    proc.kill()
    proc.communicate(timeout=HANG_S)
    assert wait_gone(workers) == []  # nobody goes on encoding the queue
    assert len(finished(dst)) <= len(before) + 2  # at most the two files in flight
    # the next run deletes the temp files the killed workers left and finishes the tree
    rerun = rerun_prepare(clip_tree, dst, 1)
    assert rerun.returncode == 0, rerun.stderr
    assert len(finished(dst)) == N_CLIPS and not [p for p in dst.rglob("*") if p.name.endswith(TMP_MARK)]


# -- the pool itself (job functions must be importable by the spawned workers) --------------
def _square(x: int) -> int:
    return x * x


def _die_on_three(x: int) -> int:
    if x == 3:
        os._exit(7)  # as if FFmpeg crashed
    return x


def _raise(x: int) -> int:
    raise ZeroDivisionError(f"job {x}")


def test_pool_results_dead_worker_and_errors() -> None:
    assert START_METHOD == "spawn"
    with WorkerPool(_square, 2) as pool:
        assert dict(pool.imap_unordered((k, (k,)) for k in range(6))) == {k: k * k for k in range(6)}
    with WorkerPool(_die_on_three, 2) as pool:
        got = dict(pool.imap_unordered((k, (k,)) for k in range(6)))
    assert isinstance(got.pop(3), WorkerDied) and got == {0: 0, 1: 1, 2: 2, 4: 4, 5: 5}
    with pytest.raises(WorkerError, match="ZeroDivisionError: job 0"), WorkerPool(_raise, 1) as pool:
        list(pool.imap_unordered([(0, (0,))]))
    with pytest.raises(ValueError, match="workers must be >= 1"):
        WorkerPool(_square, 0)
