"""One progress bar for the whole project (rich)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def progress(total: int, label: str, enabled: bool = True, transient: bool = False) -> Iterator[Callable[[], None]]:
    """A rich progress bar of `total` steps; the value is a no-argument `advance()`.

    Shows nothing when not `enabled` or when total is 0. `transient`: erase the bar at the end.
    """
    if not enabled or total <= 0:
        yield lambda: None
        return
    from rich.progress import Progress  # lazy: rich is only needed when a bar is shown

    with Progress(transient=transient) as bar:
        task = bar.add_task(label, total=total)
        yield lambda: bar.advance(task)
