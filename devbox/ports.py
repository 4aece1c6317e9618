"""Whether the project's published host ports are free: asked before anything slow (a build), and by `doctor`.

A port that another program holds is otherwise found by the engine only when the container starts,
after a build of many seconds. A bind with SO_REUSEADDR tells at once, and costs microseconds.
"""

from __future__ import annotations

__all__ = ["taken_ports", "port_in_use_error", "listening"]

import socket

from .config import Config, Port
from .errors import PortInUse


def taken_ports(ports: tuple[Port, ...] | list[Port]) -> list[Port]:
    """The ports some program on this machine holds (a port devbox's own running container publishes
    counts as taken too: leave those out)."""
    taken = []
    for port in ports:
        family = socket.AF_INET6 if ":" in port.host_ip else socket.AF_INET
        kind = socket.SOCK_DGRAM if port.protocol == "udp" else socket.SOCK_STREAM
        with socket.socket(family, kind) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((port.host_ip, port.host_port))
            except OSError:
                taken.append(port)
    return taken


def port_in_use_error(config: Config, ports: list[Port]) -> PortInUse:
    numbers = ", ".join(str(p.host_port) for p in ports)
    return PortInUse(f"port {numbers} is already in use on this machine: stop what uses it "
                     f"or change `ports` in {config.file.name}")


def listening(address: tuple[str, int]) -> bool:
    """A real listener at `address`. Docker's userland proxy accepts on a published port even while
    nothing listens in the container, then closes: so only a connection the far side keeps open (or
    one it speaks first on) counts."""
    try:
        with socket.create_connection(address, timeout=1) as s:
            s.settimeout(0.05)
            try:
                return s.recv(1) != b""  # data: a server that speaks first
            except socket.timeout:
                return True  # the far side keeps the connection open: a real listener
    except OSError:
        return False
