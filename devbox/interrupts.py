"""SIGINT, SIGTERM and SIGHUP for the whole of `devbox up`, from its first line to its last.

Until the supervisor takes over there is nothing to clean up, so a signal
raises KeyboardInterrupt (exit 130) at once. From then on a handler only
counts and notifies (it puts an event on the loop's queue); the loop stops the
server and the container. A later signal never abandons that stop: code that
waits checks `since(mark)` and hurries (SIGKILL now) instead.
"""

from __future__ import annotations

__all__ = ["Interrupts"]

import signal
from typing import Callable

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupts:
    def __init__(self) -> None:
        self.count = 0
        self.last = ""
        self._listener: Callable[[str], None] | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> "Interrupts":
        for s in SIGNALS:
            self._previous[s] = signal.signal(s, self._on_signal)
        return self

    def restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    def listen(self, listener: Callable[[str], None]) -> None:
        """From now on a signal calls `listener(name)` instead of raising KeyboardInterrupt."""
        self._listener = listener
        if self.count:  # a signal that came while the listener was being set up
            listener(self.last)

    def since(self, mark: int) -> bool:
        """True if a signal came after `mark` (a value of `count` taken earlier)."""
        return self.count > mark

    def _on_signal(self, signum: int, frame: object) -> None:
        self.count += 1
        self.last = signal.Signals(signum).name
        if self._listener is None:
            raise KeyboardInterrupt
        self._listener(self.last)
