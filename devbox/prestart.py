"""Start the project's stopped container while the Docker SDK is still being imported.

Importing the SDK (and `requests` under it) takes about 0.16 s, and starting a
container takes the engine 0.25-0.3 s; done one after the other they are most of
`devbox up`'s own time. So `up` first sends the engine one raw request,
`POST /containers/devbox-<name>/start`, over its unix socket, and only then imports
the SDK. It first asks whose the container is (`GET .../json`, a millisecond): one
made for another folder under the same name is never started (that `up` is
refused). Whatever the answer, `Box.ensure` still checks the container's labels
and recreates it if its config changed; this only gets the engine going early.
"""

from __future__ import annotations

__all__ = ["Prestart"]

import http.client
import json
import socket
import threading
import urllib.parse
from pathlib import Path

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

    def __init__(self, container_name: str, folder: Path):
        self.status: int | None = None
        self.name, self.folder = container_name, folder
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
            if action == "start" and not self._ours():
                return
            conn = _UnixConnection(self.path)
            conn.request("POST", f"/containers/{urllib.parse.quote(self.name)}/{action}" +
                         ("?t=3" if action == "stop" else ""))
            status = conn.getresponse().status
            conn.close()
            if action == "start":
                self.status = status
        except (OSError, http.client.HTTPException):
            pass  # the SDK will say what is wrong, in a proper message

    def _ours(self) -> bool:
        """Whether the container was made for this folder (labels as container.py writes them)."""
        conn = _UnixConnection(self.path)
        conn.request("GET", f"/containers/{urllib.parse.quote(self.name)}/json")
        response = conn.getresponse()
        body = response.read()
        conn.close()
        if response.status != 200:
            return False
        try:
            labels = (json.loads(body).get("Config") or {}).get("Labels") or {}
        except ValueError:
            return False
        folder = labels.get("devbox.project-dir") or \
            (str(Path(labels["devbox.config-file"]).parent) if labels.get("devbox.config-file") else "")
        return folder == str(self.folder)

    def undo(self) -> None:
        """Stop the container again if this started it (`up` failed or was interrupted early)."""
        if self.started():
            self._run("stop")

    def started(self) -> bool:
        """True if this request started a stopped container (204); waits for the answer."""
        if self._thread is not None:
            self._thread.join(30)
        return self.status == 204
