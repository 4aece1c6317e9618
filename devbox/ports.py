"""Whether the project's published host ports are free: asked before anything slow (a build), and by `doctor`.

A port that another program holds is otherwise found by the engine only when the container starts,
after a build of many seconds. A bind with SO_REUSEADDR tells at once, and costs microseconds.
"""

from __future__ import annotations

__all__ = ["taken_ports", "port_in_use_error", "listening", "free_local_port", "remote_port_lines"]

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


def free_local_port() -> int:
    """A loopback port no program holds now (for a forward only devbox uses)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def remote_port_lines(config: Config, host: str) -> list[str]:
    """Where a tcp:// engine on another machine serves the published ports, one line each: on that host's
    addresses, or, published on its loopback, nowhere this machine reaches."""
    lines = []
    for port in config.ports:
        if port.host_ip.startswith("127.") or port.host_ip == "::1":
            lines.append(f"ports: {port} is published on {host}'s own loopback, which this machine cannot reach: "
                         f"publish it on {host}'s address (`0.0.0.0:{port.host_port}:{port.container_port}` in "
                         f"`ports`), or reach the engine over ssh:// (devbox forwards the ports)")
        elif port.protocol == "tcp":
            shown = host if port.host_ip in ("0.0.0.0", "::", "") else port.host_ip
            lines.append(f"url: http://{shown}:{port.host_port}/ (published by the engine on {host})")
    return lines
