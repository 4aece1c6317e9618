"""Start the project's stopped container while the Docker SDK is still being imported.

Importing the SDK (and `requests` under it) takes about 0.16 s, and starting a
container takes the engine 0.25-0.3 s; done one after the other they are most of
`devbox up`'s own time. So `up` first sends the engine one raw request,
`POST /containers/devbox-<name>/start`, over its unix socket, and only then imports
the SDK. Whatever the answer, `Box.ensure` still checks the container's labels
and recreates it if its config changed; this only gets the engine going early.
"""

from __future__ import annotations

__all__ = ["Prestart"]

import http.client
import socket
import threading
import urllib.parse

from .engine import endpoint
from .errors import DevboxError


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str):
        super().__init__("localhost", timeout=30)
        self.socket_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


class Prestart:
    """One background start request; `started()` tells whether it started the container."""

    def __init__(self, container_name: str):
        self.status: int | None = None
        self.name = container_name
        self._thread: threading.Thread | None = None
        try:
            self.path = endpoint().socket_path
        except DevboxError:
            self.path = None  # a broken context: `connect` says so, in a proper message
        if self.path:
            self._thread = threading.Thread(target=self._run, args=("start",), daemon=True)
            self._thread.start()

    def _run(self, action: str) -> None:
        try:
            conn = _UnixConnection(self.path)
            conn.request("POST", f"/containers/{urllib.parse.quote(self.name)}/{action}" +
                         ("?t=3" if action == "stop" else ""))
            status = conn.getresponse().status
            conn.close()
            if action == "start":
                self.status = status
        except (OSError, http.client.HTTPException):
            pass  # the SDK will say what is wrong, in a proper message

    def undo(self) -> None:
        """Stop the container again if this started it (`up` failed or was interrupted early)."""
        if self.started():
            self._run("stop")

    def started(self) -> bool:
        """True if this request started a stopped container (204); waits for the answer."""
        if self._thread is not None:
            self._thread.join(30)
        return self.status == 204
