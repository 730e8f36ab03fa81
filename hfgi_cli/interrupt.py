"""Ctrl-C as a request to stop at the next safe point, for the long-running entry points.

The first SIGINT sets ``stop`` (and ``interrupt``); the work checks ``stop`` between batches or
frames, finishes or cleans up, and returns. A second SIGINT raises KeyboardInterrupt at once. The
previous handler is restored when the block ends; off the main thread nothing is installed.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def stop_on_sigint(stop: threading.Event, interrupt: threading.Event | None = None) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    seen = interrupt or threading.Event()

    def handler(signum: int, frame: Any) -> None:
        if seen.is_set():
            raise KeyboardInterrupt
        seen.set()
        stop.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
