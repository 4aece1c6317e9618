"""The debugger's port on this machine: 127.0.0.1:`debugger.port`, forwarded to the adapter in the
container (published on a loopback port of its own).

Why devbox listens itself rather than publishing the port straight through: a port another program
holds is found when `up` starts, with one line, not as a container that cannot start; a client that
speaks something else than the Debug Adapter Protocol (a browser, a pydevd client) gets one line
saying so instead of reaching debugpy's adapter, which exits when a message handler fails; and the
port can change without a new container. Every message of a debug session passes here, so both
sides send at once (TCP_NODELAY): a message's header and body are written apart.

debugpy's adapter asks a client for nothing, and an attached client runs code in the container, as the
container's user: so the relay takes connections only from processes of the user who runs `devbox up`
(on Linux the kernel says whose a loopback connection is, in /proc/net/tcp) and refuses any other with
one line that names the uid."""

from __future__ import annotations

__all__ = ["DebugRelay", "DAP_START"]

import os
import socket
import sys
import threading
from typing import Callable

from .errors import PortInUse

DAP_START = b"content-length:"  # every DAP message starts with its header
FIRST_BYTES_WAIT = 10.0  # seconds a client has to say its first words
CONNECT_WAIT = 5.0


class DebugRelay:
    def __init__(self, port: int, say: Callable[[str], None], config_name: str):
        self.port, self.say = port, say
        self.target: tuple[str, int] | None = None  # the adapter's published address; None: not listening
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.listener.bind(("127.0.0.1", port))
        except OSError:
            self.listener.close()
            raise PortInUse(f"debugger: port {port} is already in use on this machine: stop what uses it, or "
                            f"set `debugger: {{port: N}}` in {config_name}") from None
        self.listener.listen(16)
        self.closed = False
        self.lock = threading.Lock()
        self.open: set[socket.socket] = set()
        self.sessions = 0  # DAP connections open now (a client, and each child session it opened)
        threading.Thread(target=self._accept, daemon=True, name="devbox-debug-relay").start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._connection, args=(client,), daemon=True, name="devbox-debug-conn").start()

    def _connection(self, client: socket.socket) -> None:
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            uid = peer_uid(client)
            if uid is not None and uid != os.getuid():
                self.say(f"debugger: refused a client at 127.0.0.1:{self.port} run by uid {uid}: only uid "
                         f"{os.getuid()}, who runs `devbox up`, may attach (an attached client runs code in the "
                         "container)")
                client.close()
                return
            first = _first_bytes(client)
            if first.lower() != DAP_START:
                shown = first[:40].decode("ascii", "replace").split("\r")[0].split("\n")[0]
                self.say(f"debugger: a client at 127.0.0.1:{self.port} does not speak the Debug Adapter Protocol "
                         f"(it sent {shown!r}): attach with a DAP client, such as VS Code's Python debugger")
                client.close()
                return
            target = self.target
            if target is None:
                self.say(f"debugger: a client came to 127.0.0.1:{self.port} while the debugger was not listening; "
                         "attach again")
                client.close()
                return
            server = socket.create_connection(target, timeout=CONNECT_WAIT)
            server.settimeout(None)
            server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            server.sendall(first)
        except OSError:
            client.close()
            return
        with self.lock:
            if self.closed:
                client.close()
                server.close()
                return
            self.open |= {client, server}
            self.sessions += 1
        threading.Thread(target=self._pump, args=(server, client), daemon=True, name="devbox-debug-pump").start()
        self._pump(client, server)
        with self.lock:
            self.sessions -= 1

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):  # one side went: the session is over on both
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        with self.lock:
            for s in (source, sink):
                if s in self.open:
                    self.open.discard(s)
                    s.close()

    def close(self) -> None:
        with self.lock:
            self.closed = True
            sockets, self.open = list(self.open), set()
        self.listener.close()
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def _first_bytes(client: socket.socket) -> bytes:
    """What the client says first: enough to tell a DAP header, bounded in time and size."""
    client.settimeout(FIRST_BYTES_WAIT)
    data = b""
    try:
        while len(data) < len(DAP_START) and DAP_START.startswith(data.lower()):
            chunk = client.recv(len(DAP_START) - len(data))
            if not chunk:
                break
            data += chunk
    except socket.timeout:
        pass
    client.settimeout(None)
    return data


def peer_uid(client: socket.socket) -> int | None:
    """The uid of the process at the other end of a loopback TCP connection, from the kernel's table of
    sockets (/proc/net/tcp: the peer's socket is the row whose local end is our remote end); None where
    that cannot be told (not Linux, not IPv4, the table unreadable)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        peer, ours = client.getpeername(), client.getsockname()
        wanted = (_hex_address(peer), _hex_address(ours))
        with open("/proc/net/tcp") as table:
            next(table)
            for line in table:
                fields = line.split()
                if (fields[1], fields[2]) == wanted:
                    return int(fields[7])
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return None


def _hex_address(address: tuple[str, int]) -> str:
    """An IPv4 address and port as /proc/net/tcp writes them: the address's bytes in host order, in hex."""
    packed = socket.inet_aton(address[0])
    return f"{int.from_bytes(packed, sys.byteorder):08X}:{address[1]:04X}"
