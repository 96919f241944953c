"""Signal dispositions for tests that interrupt a real subprocess (`from tests.signals_util import
terminal_signals`; pass it as `preexec_fn`)."""

from __future__ import annotations

import signal


def terminal_signals() -> None:
    """SIGINT and SIGTERM as a terminal's job has them (default). A test run from a background
    job (`make test &`, some CI scripts) inherits SIGINT ignored, and a Python child then never
    raises KeyboardInterrupt: the interrupt tests would pass for the wrong reason or fail."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
