"""The loop's queue of events, and how the loop sleeps on it: with no timer.

Other threads, and signal handlers, put events on it. The loop blocks in
`select` on two pipes: one written by each `put`, and one the C-level signal
handler writes to (`signal.set_wakeup_fd`). A signal delivered to any thread
therefore wakes the main thread, which then runs the Python handler (which puts
a Stop). Polling every 0.1 s for that was one of the two wake-ups of an idle
`devbox up`.
"""

from __future__ import annotations

__all__ = ["EventQueue"]

import os
import queue
import select
import signal
import time
from typing import Any


class EventQueue:
    def __init__(self) -> None:
        self._items: queue.SimpleQueue[Any] = queue.SimpleQueue()  # put() is safe from signal handlers
        self._put_r, self._put_w = os.pipe()
        self._signal_r, self._signal_w = os.pipe()
        for fd in (self._put_r, self._put_w, self._signal_r, self._signal_w):
            os.set_blocking(fd, False)
        self._previous_wakeup: int | None = None

    def put(self, item: Any) -> None:
        self._items.put(item)
        try:
            os.write(self._put_w, b".")
        except (BlockingIOError, OSError):
            pass  # the pipe is full (the loop will drain it) or closed (the loop has ended)

    def get_nowait(self) -> Any:
        return self._items.get_nowait()

    def get(self, timeout: float | None = None) -> Any:
        """The next event; queue.Empty after `timeout` seconds (None: wait as long as it takes)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                return self._items.get_nowait()
            except queue.Empty:
                pass
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise queue.Empty
            try:
                ready, _, _ = select.select([self._put_r, self._signal_r], [], [], left)
            except InterruptedError:
                ready = []
            for fd in ready:
                _drain(fd)

    def wake_on_signals(self) -> None:
        """From the main thread: a signal, whichever thread the kernel hands it to, wakes `get`."""
        self._previous_wakeup = signal.set_wakeup_fd(self._signal_w, warn_on_full_buffer=False)

    def close(self) -> None:
        """Signals no longer write here. The pipes stay open: a late put from another thread must never
        write into a file that took a closed pipe's number."""
        if self._previous_wakeup is not None:
            signal.set_wakeup_fd(self._previous_wakeup)
            self._previous_wakeup = None


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except (BlockingIOError, OSError):
        pass
