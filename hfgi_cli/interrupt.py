"""Ctrl-C (SIGINT) and SIGTERM (what a batch scheduler sends: Slurm, Kubernetes) as a request to
stop, for the long-running entry points.

``stop_on_signals``: the first signal sets ``stop`` and is recorded; the work checks ``stop``
between batches or frames, finishes or cleans up, and returns. A second one raises ``Stopped`` at
once. ``raise_on_signals``: the first one raises ``Stopped`` (for a loop that waits on others, as
the Ray driver does); ``deferred_signals``: they are recorded only (clean-up that must finish).
Either way the exit status is the shell's for the first signal: 128 + its
number (130, 143). The previous handlers are restored when the block ends; off the main thread
nothing is installed.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def exit_status(signum: int) -> int:
    """The status a shell reports for a process ended by ``signum``."""
    return 128 + signum


class Stopped(KeyboardInterrupt):
    """A stop signal, raised in the main thread (a KeyboardInterrupt, so Ctrl-C's handling applies)."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return exit_status(self.signum)


@contextlib.contextmanager
def _handling(handler: Callable[[int, Any], None]) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event, received: list[int] | None = None) -> Iterator[list[int]]:
    """Yields the list of signals seen (``received``, if given): empty while none came."""
    seen = received if received is not None else []

    def handler(signum: int, frame: Any) -> None:
        if seen:
            raise Stopped(seen[0])
        seen.append(signum)
        stop.set()

    with _handling(handler):
        yield seen


@contextlib.contextmanager
def raise_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise ``Stopped`` in the main thread while the block runs (once: the
    clean-up it starts is not cut short by the next one)."""
    seen: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        if not seen:
            seen.append(signum)
            raise Stopped(signum)

    with _handling(handler):
        yield


@contextlib.contextmanager
def deferred_signals() -> Iterator[list[int]]:
    """SIGINT and SIGTERM are recorded, not acted on, while the block runs: for clean-up that must
    finish (shutting a cluster down, removing temporaries). Yields the signals seen."""
    seen: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        seen.append(signum)

    with _handling(handler):
        yield seen
