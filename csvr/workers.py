"""Worker processes: the one start-method rule, and an interruptible process pool.

The rule (for every process csvr starts: prepare/synthetic encoders and DataLoader workers):
**spawn, never fork.** A forked child inherits the parent's PyAV objects (a VideoFrame <->
VideoReformatter cycle holding swscale slice threads) and torch's thread pools; when the
child's GC frees them it deadlocks or segfaults (PyAV 18, seen with gdb). Spawned workers
start from a fresh interpreter (about a second: they import PyAV and numpy, not torch).

`WorkerPool` runs jobs in spawned processes and is safe to interrupt:
* workers ignore SIGINT (Ctrl-C reaches the whole process group: only the parent decides);
* the parent stops them on any exception or KeyboardInterrupt: SIGTERM first (a worker exits
  through its `finally` blocks, so temp files go), SIGKILL after `GRACE_S` or at once on a
  second Ctrl-C / SIGTERM; every worker is joined before the exception propagates;
* a worker dies with its parent (Linux `prctl(PR_SET_PDEATHSIG)`, elsewhere a thread that
  polls the parent id), so a SIGKILLed parent leaves nobody encoding;
* a worker that dies mid-job (a crash inside FFmpeg) costs that job only: it is reported as
  failed (`WorkerDied`) and a fresh worker takes over.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Hashable, Iterable, Iterator
from multiprocessing.connection import Connection, wait
from typing import Any

START_METHOD = "spawn"
GRACE_S = 2.0  # how long stopped workers get to clean up before SIGKILL


class Interrupted(KeyboardInterrupt):
    """A KeyboardInterrupt that remembers its signal (SIGINT or SIGTERM); exit status 128 + signum."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


def exit_status(exc: KeyboardInterrupt) -> int:
    """128 + the signal number: 130 for Ctrl-C, 143 for SIGTERM (the shell convention)."""
    return 128 + getattr(exc, "signum", signal.SIGINT)


def mp_context() -> multiprocessing.context.BaseContext:
    """The multiprocessing context of START_METHOD."""
    return multiprocessing.get_context(START_METHOD)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block SIGTERM raises `Interrupted(SIGTERM)` (a KeyboardInterrupt), so the
    same cleanup as for Ctrl-C runs. A no-op outside the main thread."""
    if not _in_main_thread():
        yield
        return

    def handler(signum: int, _frame: object) -> None:
        raise Interrupted(signum)

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[threading.Event]:
    """While cleaning up: SIGINT / SIGTERM only set the yielded event (no exception mid-cleanup).
    A no-op (an event nobody sets) outside the main thread."""
    hurry = threading.Event()
    if not _in_main_thread():
        yield hurry
        return
    old = {s: signal.signal(s, lambda *_: hurry.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield hurry
    finally:
        for s, h in old.items():
            signal.signal(s, h)


# -- worker side ----------------------------------------------------------------------------
def _die_with_parent(parent_pid: int) -> None:
    """Make this process die when its parent does (best effort, see the module doc)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, signal.SIGKILL, 0, 0, 0) != 0:  # 1 = PR_SET_PDEATHSIG
            raise OSError
    except (OSError, AttributeError):

        def watch() -> None:
            while os.getppid() == parent_pid:
                time.sleep(0.5)
            os._exit(1)

        threading.Thread(target=watch, daemon=True).start()
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through `finally` blocks: temp files are removed


def _worker(conn: Connection, fn: Callable[..., Any], parent_pid: int) -> None:
    """Worker loop: receive (key, args), send (key, True, fn(*args)) or (key, False, traceback)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    _die_with_parent(parent_pid)
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        key, args = job
        try:
            conn.send((key, True, fn(*args)))
        except Exception:  # noqa: BLE001 - sent back and raised in the parent
            conn.send((key, False, traceback.format_exc()))


# -- parent side ----------------------------------------------------------------------------
class WorkerError(RuntimeError):
    """A job raised in a worker; the message holds the worker's traceback."""


class WorkerDied(RuntimeError):
    """A worker process died while running a job (e.g. FFmpeg crashed)."""


class WorkerPool:
    """`workers` spawned processes running the picklable top-level function `fn`.

    Use as a context manager; `imap_unordered(jobs)` yields `(key, fn(*args))` for each
    `(key, args)` as jobs finish. Leaving the block by an exception stops the workers
    (see the module doc) before the exception propagates.
    """

    def __init__(self, fn: Callable[..., Any], workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.fn, self.size = fn, workers
        self._ctx = mp_context()
        self._procs: dict[Connection, multiprocessing.process.BaseProcess] = {}

    def _start_one(self) -> Connection:
        parent, child = self._ctx.Pipe()
        # start with SIGINT ignored, so a Ctrl-C while the child boots does not kill it noisily
        old = signal.signal(signal.SIGINT, signal.SIG_IGN) if _in_main_thread() else None
        try:
            p = self._ctx.Process(target=_worker, args=(child, self.fn, os.getpid()), daemon=True)
            p.start()
        finally:
            if old is not None:
                signal.signal(signal.SIGINT, old)
        child.close()
        self._procs[parent] = p
        return parent

    def __enter__(self) -> WorkerPool:
        try:
            for _ in range(self.size):
                self._start_one()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: type | None, *_: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.stop()

    def imap_unordered(self, jobs: Iterable[tuple[Hashable, tuple]]) -> Iterator[tuple[Hashable, Any]]:
        """Yield (key, result) per job as they finish. A job that raised raises WorkerError
        here; a job whose worker died yields (key, WorkerDied(...)) and a new worker starts."""
        pending = list(jobs)[::-1]
        busy: dict[Connection, Hashable] = {}
        idle = list(self._procs)
        while pending or busy:
            while idle and pending:
                conn = idle.pop()
                key, args = pending.pop()
                conn.send((key, args))
                busy[conn] = key
            for conn in wait(list(busy)):
                key = busy.pop(conn)
                try:
                    got_key, ok, value = conn.recv()
                except (EOFError, OSError):
                    proc = self._procs.pop(conn)
                    proc.join(GRACE_S)
                    conn.close()
                    idle.append(self._start_one())
                    yield key, WorkerDied(f"worker process died (exit code {proc.exitcode}) while on {key}")
                    continue
                idle.append(conn)
                if not ok:
                    raise WorkerError(f"job {got_key} failed in a worker:\n{value}")
                yield got_key, value

    def close(self) -> None:
        """Normal end: ask every worker to exit, then join them (killing any that hang)."""
        for conn in self._procs:
            with contextlib.suppress(OSError):
                conn.send(None)
        self._join(GRACE_S + 3.0)

    def stop(self) -> None:
        """Interrupted: SIGTERM every worker, SIGKILL after GRACE_S or on a second signal."""
        with deferred_interrupts() as hurry:
            for p in self._procs.values():
                if p.is_alive():
                    p.terminate()
            self._join(GRACE_S, hurry)

    def _join(self, timeout: float, hurry: threading.Event | None = None) -> None:
        deadline = time.monotonic() + timeout
        procs = list(self._procs.values())
        while any(p.is_alive() for p in procs):
            if time.monotonic() > deadline or (hurry is not None and hurry.is_set()):
                for p in procs:
                    if p.is_alive():
                        p.kill()
                break
            time.sleep(0.02)
        for p in procs:
            p.join()
        for conn in self._procs:
            conn.close()
        self._procs.clear()


def run_jobs(
    fn: Callable[..., Any],
    jobs: Iterable[tuple[Hashable, tuple]],
    workers: int,
    on_result: Callable[[Hashable, Any], None],
) -> None:
    """Run `fn(*args)` for each `(key, args)` and call `on_result(key, result)` as each ends:
    in this process when workers <= 1, else in a `WorkerPool` (a dead worker's job gets a
    `WorkerDied` result). Interrupts stop everything before they propagate."""
    jobs = list(jobs)
    if workers <= 1 or len(jobs) <= 1:
        for key, args in jobs:
            on_result(key, fn(*args))
        return
    with WorkerPool(fn, min(workers, len(jobs))) as pool:
        for key, result in pool.imap_unordered(jobs):
            on_result(key, result)
