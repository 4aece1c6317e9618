"""The server's output, kept across restarts and after `up` ends: what `devbox logs` shows.

Kept on the host in the user's private runtime folder (lock.py), as
`<project>.log` and one older `<project>.log.1`: at most 2 x LIMIT bytes. Each
line is stored with its UTC time; `devbox logs -t` shows it. Each start of the
server writes a marker line: `--- restart 4: app.py changed ---`.
"""

from __future__ import annotations

__all__ = ["ServerLog", "log_path", "read_lines", "follow"]

import datetime
import os
import threading
import time
from pathlib import Path
from typing import Iterator

from .lock import private_open, runtime_dir

LIMIT = 4 * 1024 * 1024  # bytes a log file grows to before it is rotated


def log_path(project: str) -> Path:
    return runtime_dir() / f"{project}.log"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ServerLog:
    """Appends timestamped lines to the project's log, rotating it at `limit` bytes."""

    def __init__(self, project: str, limit: int = LIMIT, on_failure=lambda line: None):
        self.path, self.limit = log_path(project), limit
        self._lock = threading.Lock()
        self.on_failure = on_failure  # told once when the log cannot be written
        self.failed = False

    def write(self, lines: list[str]) -> None:
        if not lines:
            return
        stamp = _now()
        data = "".join(f"{stamp} {line}\n" for line in lines).encode("utf-8", "replace")
        with self._lock:
            try:
                if self.path.exists() and self.path.stat().st_size + len(data) > self.limit:
                    os.replace(self.path, self.path.with_name(self.path.name + ".1"))
                fd = private_open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
                with os.fdopen(fd, "ab") as f:
                    f.write(data)
                self.failed = False
            except OSError as e:
                # the log is a convenience: never a reason for the server to stop; said once a failure
                if not self.failed:
                    self.failed = True
                    self.on_failure(f"the server's output is not kept for `devbox logs` ({self.path}: "
                                    f"{e.strerror or e}); the server runs on")

    def marker(self, number: int, reason: str) -> None:
        self.write([f"--- {'start' if number == 1 else f'restart {number - 1}'}: {reason} ---"])


def read_lines(project: str, timestamps: bool = False) -> list[str]:
    path = log_path(project)
    out: list[str] = []
    for file in (path.with_name(path.name + ".1"), path):
        try:
            out += [_show(line, timestamps) for line in file.read_text(errors="replace").splitlines()]
        except OSError:
            continue
    return out


def _show(line: str, timestamps: bool) -> str:
    return line if timestamps else line.split(" ", 1)[1] if " " in line else ""


def follow(project: str, timestamps: bool = False, poll: float = 0.05) -> Iterator[str]:
    """New lines as they are written (across rotations), until the caller stops (Ctrl-C)."""
    path = log_path(project)
    position = path.stat().st_size if path.exists() else 0
    partial = ""
    while True:
        try:
            size = path.stat().st_size
        except OSError:
            size = 0
        if size < position:  # rotated: the new file starts from its beginning
            position, partial = 0, ""
        if size > position:
            with open(path, "rb") as f:
                f.seek(position)
                data = f.read(size - position)
            position = size
            text = partial + data.decode("utf-8", "replace")
            *complete, partial = text.split("\n")
            for line in complete:
                yield _show(line, timestamps)
        else:
            time.sleep(poll)
