"""How files get into the container: one long-lived exec'd `sh` (inside/sync.sh) that reads each
batch on its stdin, or, where the image cannot run it (no `tar`, no exact `dd`), the engine's archive
API with an exec'd `rm` for deletions.

Why a channel: `PUT /containers/{id}/archive` costs 55-100 ms a batch on this machine's storage
driver (it mounts the container's filesystem for each call); a batch through an exec that is
already running costs about 10 ms, within the 1.2 x of a bind mount's restart.
"""

from __future__ import annotations

__all__ = ["Channel", "ArchiveApi", "open_channel", "SyncFailed"]

import socket
import struct
import time
from typing import Protocol

from docker import APIClient

from .. import inside
from ..errors import ContainerError, docker_error
from .files import Archive

ANSWER_TIMEOUT = 120.0  # seconds for one batch (a first sync of a big project included)
START_TIMEOUT = 10.0


class SyncFailed(ContainerError):
    pass


class Transport(Protocol):
    name: str

    def send(self, archive: Archive) -> None: ...

    def close(self) -> None: ...


class Channel:
    """inside/sync.sh, running in the container; `send` writes one batch and waits for its answer."""

    name = "an exec'd sh"

    def __init__(self, api: APIClient, container_id: str, sock):
        self.api, self.container_id = api, container_id
        self.sock = getattr(sock, "_sock", sock)  # SocketIO on a unix socket: the socket under it
        self.sock.settimeout(START_TIMEOUT)
        self.pending = b""

    def answer(self, timeout: float) -> str:
        """The next line the script writes on stdout (its stderr is only kept for the error)."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SyncFailed("the file sync in the container did not answer within "
                                 f"{timeout:.0f}s: see `devbox doctor`")
            self.sock.settimeout(left)
            header = self._read(8)
            stream, size = header[0], struct.unpack(">I", header[4:])[0]
            data = self._read(size)
            if stream == 1:
                self.pending += data
        line, self.pending = self.pending.split(b"\n", 1)
        return line.decode(errors="replace")

    def _read(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            try:
                chunk = self.sock.recv(n - len(out))
            except socket.timeout:
                raise SyncFailed("the file sync in the container did not answer: see `devbox doctor`") from None
            if not chunk:
                raise SyncFailed("the file sync in the container ended (was the container stopped?)")
            out += chunk
        return out

    def send(self, archive: Archive) -> None:
        deletions = archive.deletion_list
        self.sock.settimeout(ANSWER_TIMEOUT)
        try:
            self.sock.sendall(f"{archive.size} {len(deletions)}\n".encode())
            if archive.size:
                archive.data.seek(0)
                while chunk := archive.data.read(1 << 20):
                    self.sock.sendall(chunk)
            self.sock.sendall(deletions)
        except OSError as e:
            raise SyncFailed(f"cannot send files to the container ({e})") from e
        line = self.answer(ANSWER_TIMEOUT)
        if line != "devbox-sync ok":
            raise SyncFailed("the files could not be written in the container "
                             f"({line.removeprefix('devbox-sync failed: ')})")

    def close(self) -> None:
        try:
            self.sock.close()  # its stdin closes: the script's `read` ends it
        except OSError:
            pass


class ArchiveApi:
    """The engine's archive API for files, an exec'd `rm` for deletions: what any image with `sh` can do."""

    name = "the archive API"

    def __init__(self, api: APIClient, container_id: str):
        self.api, self.container_id = api, container_id

    def send(self, archive: Archive) -> None:
        try:
            if archive.deletions:
                script = 'for p in "$@"; do case "$p" in *"*.pyc") rm -f -- "${p%\\*.pyc}"*.pyc ;; ' \
                         '*) rm -rf -- "$p" ;; esac; done'
                exec_id = self.api.exec_create(self.container_id, ["sh", "-c", script, "sh", *archive.deletions])["Id"]
                self.api.exec_start(exec_id)
            if archive.size:
                if not self.api.put_archive(self.container_id, "/", archive.bytes()):
                    raise SyncFailed("the engine refused the files")
        except SyncFailed:
            raise
        except Exception as e:
            raise docker_error(e, "cannot copy the files into the container") from e

    def close(self) -> None:
        pass


def open_channel(api: APIClient, container_id: str) -> Transport:
    """The exec'd sh if the image can run it, else the archive API."""
    try:
        exec_id = api.exec_create(container_id, ["sh", "-c", inside.read("sync.sh")], stdin=True,
                                  stdout=True, stderr=True)["Id"]
        channel = Channel(api, container_id, api.exec_start(exec_id, socket=True))
    except Exception as e:
        raise docker_error(e, "cannot start the file sync in the container") from e
    line = channel.answer(START_TIMEOUT)
    if line == "devbox-sync ready":
        return channel
    channel.close()
    return ArchiveApi(api, container_id)
