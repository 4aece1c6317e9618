"""devbox's own two output streams, and the server's output cut into lines.

A `Sink` owns one file descriptor (1 or 2) and writes to it from its own
thread, so that nothing else ever blocks on it:

- a reader that stops reading (a paused pager) holds up only the server's
  output (backpressure, as a terminal gives), never devbox's own lines or
  its shutdown;
- a reader that goes away (`devbox up | head`) only makes later output
  vanish: a closed pipe never ends the server or devbox.

`Lines` cuts a byte stream into lines in time linear in its size, with a
bounded memory: a line longer than MAX_LINE is cut short, the rest of it is
counted, not kept.
"""

from __future__ import annotations

__all__ = ["Sink", "Lines", "say", "quoted", "exec_lines", "close_exec", "stdout", "stderr", "flush", "use_sinks", "stop_waiting", "MAX_LINE"]

import collections
import os
import sys
import threading
import time
from typing import Iterator

MAX_LINE = 4096  # bytes of one line kept for the tail and the ready pattern
BACKLOG = 1 << 20  # bytes queued for a slow reader before the server's output waits


class Sink:
    """One output stream, written by a thread of its own."""

    def __init__(self, fd: int, backlog: int = BACKLOG):
        self.fd, self.backlog = fd, backlog
        self.closed = False  # the reader went away: output is dropped from now on
        self.lossy = False  # shutting down: output a slow reader cannot take is dropped, nothing waits
        self._queue: collections.deque[bytes] = collections.deque()
        self._queued = 0
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"devbox-sink-{fd}", daemon=True)
        self._thread.start()

    def write(self, data: bytes, wait: bool = True) -> None:
        """Queue `data`. With `wait` (the server's output) wait while the backlog is full;
        without it (devbox's own lines) never wait."""
        if not data:
            return
        with self._cond:
            while wait and self._queued > self.backlog and not self.closed and not self.lossy:
                self._cond.wait(0.5)
            if self.closed or (self.lossy and self._queued > self.backlog):
                return
            self._queue.append(data)
            self._queued += len(data)
            self._cond.notify_all()

    def flush(self, timeout: float) -> bool:
        """Wait up to `timeout` for everything queued to be written; False if the reader is too slow."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queued and not self.closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                data = self._queue.popleft()
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(self.fd, view):]
            except OSError:  # EPIPE, EBADF: nobody reads any more
                with self._cond:
                    self.closed = True
                    self._queue.clear()
                    self._queued = 0
                    self._cond.notify_all()
                return
            with self._cond:
                self._queued -= len(data)
                self._cond.notify_all()


_sinks: dict[int, Sink] = {}
_sinks_lock = threading.Lock()
_use_sinks = False  # only `up` (and commands that stream a server's output) need writes that never block


def use_sinks() -> None:
    """From now on `say` goes through the stderr sink (call it before any output of `up`)."""
    global _use_sinks
    _use_sinks = True


def _sink(fd: int) -> Sink:
    with _sinks_lock:
        if fd not in _sinks:
            _sinks[fd] = Sink(fd)
        return _sinks[fd]


def stdout() -> Sink:
    return _sink(1)


def stderr() -> Sink:
    return _sink(2)


def stop_waiting() -> None:
    """Shutting down: the server's output no longer waits for a slow reader (a paused pager). The engine
    does not finish stopping a container whose output is not read, so nothing may hold it up."""
    for sink in (stdout(), stderr()):
        with sink._cond:
            sink.lossy = True
            sink._cond.notify_all()


_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\\": "\\\\", '"': '\\"', "\a": "\\a", "\b": "\\b",
            "\f": "\\f", "\v": "\\v"}


def quoted(name: str) -> str:
    """A file name as devbox prints it: as is when plain, else in double quotes with C escapes, as git
    shows such names, so that no name can forge a line or hide what it is (a newline, a control character,
    a byte that is not UTF-8, a quote or a backslash)."""
    if name.isprintable() and '"' not in name and "\\" not in name and not name.startswith(" ") \
            and not name.endswith(" "):
        return name
    out = []
    for char in name:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif "\udc80" <= char <= "\udcff":  # a byte that is not UTF-8 (surrogateescape)
            out.append(f"\\{ord(char) - 0xdc00:03o}")
        elif not char.isprintable() and char != " ":
            out.append("".join(f"\\{b:03o}" for b in char.encode("utf-8", "surrogatepass")))
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def say(message: str) -> None:
    """One line of devbox's own, on stderr; every line starts with `devbox:`."""
    text = "".join(f"devbox: {line}\n" for line in (message.splitlines() or [""]))
    if _use_sinks:
        stderr().write(text.encode("utf-8", "replace"), wait=False)
    else:
        sys.stderr.write(text)
        sys.stderr.flush()


def flush(timeout: float = 2.0) -> None:
    """At exit: give what is queued a bounded time to reach the reader."""
    deadline = time.monotonic() + timeout
    for sink in list(_sinks.values()):
        sink.flush(max(0.0, deadline - time.monotonic()))


class Lines:
    """Cut a byte stream into text lines: linear in the input, memory bounded by MAX_LINE."""

    def __init__(self, limit: int = MAX_LINE):
        self.limit = limit
        self._partial = bytearray()
        self._dropped = 0  # bytes of the current line past `limit`

    def feed(self, chunk: bytes) -> list[str]:
        """The lines that `chunk` completes."""
        out = []
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end == -1:
                self._keep(chunk, start, len(chunk))
                return out
            self._keep(chunk, start, end)
            out.append(self._take())
            start = end + 1

    def partial(self) -> str:
        """The line under way (for a ready pattern that has no newline yet)."""
        return self._partial.decode("utf-8", "replace")

    def close(self) -> list[str]:
        """The last, unterminated line, if any."""
        return [self._take()] if self._partial or self._dropped else []

    def _keep(self, chunk: bytes, start: int, end: int) -> None:
        room = self.limit - len(self._partial)
        take = min(room, end - start)
        if take > 0:
            self._partial += chunk[start:start + take]
        self._dropped += (end - start) - max(take, 0)

    def _take(self) -> str:
        text = self._partial.decode("utf-8", "replace").rstrip("\r")
        if self._dropped:
            text += f" [... {self._dropped} more bytes]"
        self._partial = bytearray()
        self._dropped = 0
        return text


def close_exec(sock) -> None:
    """Close a hijacked exec socket now, and on a unix socket the socket under docker-py's SocketIO too
    (closing the SocketIO alone leaves the descriptor to the garbage collector: a few dozen open over
    hundreds of restarts)."""
    for each in (sock, getattr(sock, "_sock", None)):
        if each is not None:
            try:
                each.close()
            except Exception:
                pass


def exec_lines(sock) -> "Iterator[tuple[int, str]]":
    """(stream, line) from a hijacked exec socket (1 stdout, 2 stderr), until it closes or drops; a
    last line without a newline is not given (the helpers devbox runs end theirs)."""
    from docker.utils.socket import frames_iter

    lines = {1: Lines(), 2: Lines()}
    try:
        for stream, data in frames_iter(sock, tty=False):
            if stream in lines:
                for line in lines[stream].feed(data):
                    yield stream, line
    except Exception:  # the connection dropped: the container or the engine went away
        return
