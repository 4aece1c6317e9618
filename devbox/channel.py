"""devbox's channel into a container: one long-lived exec of the container's sh (inside/channel.sh)
that takes requests on its stdin and answers on stdout. A request through it costs a round trip and a
fork in the container; an exec of its own costs three calls to the engine and a runc start (30-100 ms
on a remote engine). Two things use it: the files of a synced container (sync/), and, where the engine
is on another machine, the stop of the server (server.py), which cannot signal from this machine.
"""

from __future__ import annotations

__all__ = ["Channel", "ChannelFailed", "open_channel"]

import shlex
import socket
import struct
import threading
import time
import uuid

from docker import APIClient

from . import inside
from .errors import ContainerError, docker_error

START_TIMEOUT = 10.0


class ChannelFailed(ContainerError):
    pass


class Channel:
    def __init__(self, sock, files: bool):
        self.sock = getattr(sock, "_sock", sock)  # SocketIO on a unix socket: the socket under it
        self.files = files  # the image has tar: "files" requests work
        self.pending = b""
        self.lock = threading.Lock()  # one request at a time

    # -- requests ----------------------------------------------------------------------------------

    def send_files(self, header: str, parts: list, timeout: float) -> str:
        """A "files" request: the header line and its parts (bytes, or a file object read to its end),
        as one write where they fit (each small write over SSH could wait 40 ms for an ack); the answer."""
        with self.lock:
            self._write(header.encode() + b"\n", parts)
            return self.line(timeout)

    def run(self, argv: list[str], timeout: float = 600.0) -> str | None:
        """Run `argv` in the container, as an exec would; its output (stdout and stderr). None, at once, if
        the channel is busy with another request (the caller then makes an exec of its own)."""
        script = ("exec " + shlex.join(argv) + "\n").encode()
        marker = f"devbox-done-{uuid.uuid4().hex[:12]}"
        if not self.lock.acquire(blocking=False):
            return None
        with _Held(self.lock):
            self._write(f"run {len(script)} {marker}\n".encode(), [script])
            out = []
            while not (line := self.line(timeout)).startswith(marker + " "):
                out.append(line)
            return "\n".join(out)  # the script's output exactly: the channel put a newline before the marker

    def _write(self, head: bytes, parts: list) -> None:
        try:
            buffered = head
            for part in parts:
                if isinstance(part, (bytes, bytearray)):
                    buffered += part
                    continue
                while chunk := part.read(1 << 20):
                    buffered += chunk
                    if len(buffered) >= 1 << 20:
                        self.sock.sendall(buffered)
                        buffered = b""
            if buffered:
                self.sock.sendall(buffered)
        except OSError as e:
            raise ChannelFailed(f"cannot write to devbox's channel in the container ({e})") from e

    # -- answers -----------------------------------------------------------------------------------

    def line(self, timeout: float) -> str:
        """The next line the script writes on stdout (the exec's stream is multiplexed: 8-byte headers)."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ChannelFailed(f"devbox's channel in the container did not answer within {timeout:.0f}s")
            self.sock.settimeout(left)
            header = self._read(8)
            stream, size = header[0], struct.unpack(">I", header[4:])[0]
            data = self._read(size)
            if stream in (1, 2):
                self.pending += data
        line, self.pending = self.pending.split(b"\n", 1)
        return line.decode(errors="replace")

    def _read(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            try:
                chunk = self.sock.recv(n - len(out))
            except socket.timeout:
                raise ChannelFailed("devbox's channel in the container did not answer") from None
            except OSError as e:
                raise ChannelFailed(f"devbox's channel in the container broke ({e})") from e
            if not chunk:
                raise ChannelFailed("devbox's channel in the container ended (was the container stopped?)")
            out += chunk
        return out

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes a read under way in another thread; close alone may not
        except OSError:
            pass
        try:
            self.sock.close()  # its stdin closes: the script's `read` ends it
        except OSError:
            pass


class _Held:
    """A lock already acquired, released on leaving the block."""

    def __init__(self, lock: threading.Lock):
        self.lock = lock

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


def open_channel(api: APIClient, container_id: str) -> Channel | None:
    """A channel into the container, or None where its sh cannot read exact byte counts."""
    try:
        exec_id = api.exec_create(container_id, ["sh", "-c", inside.read("channel.sh")], stdin=True,
                                  stdout=True, stderr=True)["Id"]
        sock = api.exec_start(exec_id, socket=True)
    except Exception as e:
        raise docker_error(e, "cannot start devbox's channel in the container") from e
    channel = Channel(sock, files=False)
    greeting = channel.line(START_TIMEOUT)
    if not greeting.startswith("devbox-channel ready"):
        channel.close()
        return None
    channel.files = greeting.endswith(" files")
    return channel
