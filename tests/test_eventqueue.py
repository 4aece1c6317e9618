"""The loop's queue sleeps with no timer, and still wakes at once for an event or a signal."""

from __future__ import annotations

import queue
import signal
import threading
import time

import pytest

from devbox.loop.eventqueue import EventQueue


def test_an_event_from_another_thread_wakes_the_loop():
    events = EventQueue()
    threading.Timer(0.1, events.put, args=("changed",)).start()
    began = time.monotonic()
    assert events.get(timeout=5) == "changed"
    assert time.monotonic() - began < 1


def test_nothing_queued_is_empty_after_the_timeout():
    events = EventQueue()
    with pytest.raises(queue.Empty):
        events.get(timeout=0.05)


def test_a_signal_handed_to_another_thread_wakes_the_main_thread():
    """The kernel may deliver SIGINT to any thread; Python runs the handler in the main thread only
    when that thread wakes. Without the wakeup fd the loop slept until its next timer."""
    events = EventQueue()
    events.wake_on_signals()
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: events.put("stop"))
    parked = threading.Event()
    other = threading.Thread(target=parked.wait, args=(10,))
    other.start()
    try:
        threading.Timer(0.1, signal.pthread_kill, args=(other.ident, signal.SIGUSR1)).start()
        began = time.monotonic()
        assert events.get(timeout=5) == "stop"
        assert time.monotonic() - began < 1
    finally:
        parked.set()
        other.join()
        signal.signal(signal.SIGUSR1, previous)
        events.close()
