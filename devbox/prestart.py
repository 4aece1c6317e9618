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
import os
import socket
import threading
import urllib.parse


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
        self._thread: threading.Thread | None = None
        host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        if host.startswith("unix://"):
            path = host[len("unix://"):]
            self._thread = threading.Thread(target=self._run, args=(path, container_name), daemon=True)
            self._thread.start()

    def _run(self, path: str, name: str) -> None:
        try:
            conn = _UnixConnection(path)
            conn.request("POST", f"/containers/{urllib.parse.quote(name)}/start")
            self.status = conn.getresponse().status
            conn.close()
        except (OSError, http.client.HTTPException):
            pass  # the SDK will say what is wrong, in a proper message

    def started(self) -> bool:
        """True if this request started a stopped container (204); waits for the answer."""
        if self._thread is not None:
            self._thread.join(30)
        return self.status == 204
