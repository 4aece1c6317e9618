"""How other devbox commands reach a running `devbox up`: a unix socket per project.

The socket sits in the user's private runtime folder (lock.py) and answers
only processes of the same user (SO_PEERCRED). A request is one JSON line,
`{"verb": "down"}`; the answer is one JSON line. The server side only puts the
request on the loop's queue and waits for the loop's answer, with a bound.
"""

from __future__ import annotations

__all__ = ["ControlServer", "request", "socket_path"]

import json
import os
import socket
import struct
import threading
from pathlib import Path
from typing import Any, Callable

from .lock import runtime_dir

ANSWER_TIMEOUT = 30.0
MAX_WAIT = 3700.0  # seconds: the longest an answer is waited for (a rebuild)


def socket_path(project: str) -> Path:
    return runtime_dir() / f"{project}.sock"


class ControlServer:
    """Accepts requests for one project's `up`; `on_request(verb, reply)` hands each to the loop."""

    def __init__(self, project: str, on_request: Callable[[str, Callable[[dict[str, Any]], None]], None]):
        self.path = socket_path(project)
        self.on_request = on_request
        self.path.unlink(missing_ok=True)  # a socket left by an `up` killed with -9 (we hold the lock)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(self.path))
        os.chmod(self.path, 0o600)
        self._sock.listen(8)
        self._closed = False
        self._answering: set[threading.Thread] = set()  # requests whose answer may not be sent yet
        threading.Thread(target=self._serve, name="devbox-control", daemon=True).start()

    def close(self) -> None:
        self._closed = True
        self._sock.close()
        self.path.unlink(missing_ok=True)
        # `devbox down` is answered just before `up` ends: let that answer leave before the process does
        for thread in list(self._answering):
            thread.join(1.0)

    def _serve(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._answer, args=(conn,), daemon=True, name="devbox-control-request")
            self._answering = {t for t in self._answering if t.is_alive()} | {thread}
            thread.start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
                _, uid, _ = struct.unpack("3i", creds)
                if uid != os.getuid():
                    conn.sendall(b'{"ok": false, "error": "not your devbox"}\n')
                    return
                asked = json.loads(conn.makefile().readline() or "{}")
                verb = asked.get("verb", "")
                # how long the asker waits (a rebuild may take minutes); bounded, so no thread waits for ever
                wait = min(float(asked.get("wait", ANSWER_TIMEOUT)), MAX_WAIT)
            except (OSError, ValueError, AttributeError, TypeError):
                return
            answered = threading.Event()
            answer: dict[str, Any] = {}

            def reply(data: dict[str, Any]) -> None:
                answer.update(data)
                answered.set()

            self.on_request(str(verb), reply)
            if not answered.wait(wait):
                answer = {"ok": False, "error": "`devbox up` did not answer in time"}
            try:
                conn.sendall(json.dumps(answer).encode() + b"\n")
            except OSError:
                pass


def request(project: str, verb: str, timeout: float = ANSWER_TIMEOUT + 5) -> dict[str, Any] | None:
    """Ask the project's running `up`; None if none runs."""
    path = socket_path(project)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(json.dumps({"verb": verb, "wait": max(0.0, timeout - 5)}).encode() + b"\n")
            line = sock.makefile().readline()
    except (FileNotFoundError, ConnectionRefusedError):
        return None
    except OSError as e:
        return {"ok": False, "error": f"cannot reach `devbox up` through {path}: {e.strerror or e}"}
    try:
        return json.loads(line)
    except ValueError:
        return {"ok": False, "error": "`devbox up` ended before it answered"}
