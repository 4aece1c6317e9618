"""Know when a freshly started server is up: an HTTP answer, an open TCP port, or a line in its output.

Probes go through the published port on the host, the way the user's browser
does. Docker's userland proxy accepts a connection on the host port even while
nothing listens in the container, then closes it; so a probe counts only a real
answer (any HTTP status), or for tcp a connection the far side keeps open. Where
this machine reaches the container's own address (a Linux engine here), a tcp
probe connects there instead: a refused connect is then the truth at once, where
a proxy slowed by a busy machine could look like a listener.
"""

from __future__ import annotations

__all__ = ["wait_ready", "probe_address", "ProbeOutcome"]

import enum
import http.client
import os
import socket
import time
import functools
from functools import partial
from typing import Callable

from .config import Config, Port
from .engine import endpoint
from .ports import listening
from .server import ServerProcess

POLL = 0.005  # seconds between probes: a refused local connect costs microseconds, so poll often


def probe_address(port: Port) -> tuple[str, int]:
    """Where this machine reaches a published port (a tcp:// engine on another host publishes on that host)."""
    host = port.host_ip
    if host in ("0.0.0.0", "", "::") and _tcp_remote_host():
        return _tcp_remote_host() or "", port.host_port
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"  # published on IPv6 only: 127.0.0.1 may not answer
    return host, port.host_port


@functools.lru_cache(maxsize=1)
def _tcp_remote_host() -> str | None:
    where = endpoint()
    return None if where.is_ssh else where.remote_host  # (ssh: the ports are forwarded to this machine)


def _published(config: Config, container_port: int | None) -> Port | None:
    for port in config.ports:
        if container_port is None or port.container_port == container_port:
            return port
    return None


def unchecked(config: Config) -> str | None:
    """Why the configured ready check cannot run (it then waits NO_CHECK_GRACE instead), for one line."""
    ready = config.ready
    if ready.log or (ready.http is None and ready.tcp is None):
        return None
    if _published(config, ready.tcp) is None:
        what = f"ready.tcp {ready.tcp}" if ready.tcp else f"ready.http {ready.http}"
        which = f"container port {ready.tcp} is" if ready.tcp else "no port is"
        return (f"{what} is not checked: {which} not published; add it to `ports` in {config.file.name} (or to "
                "the Compose service's ports)")
    return None


def _http_answers(address: tuple[str, int], path: str, host: str) -> bool:
    """`host`: the Host a browser sends for the URL devbox prints (a probe past the proxy, to the container's
    own address, must not send that address: Django's ALLOWED_HOSTS answers 400 and logs a traceback)."""
    conn = http.client.HTTPConnection(*address, timeout=2)
    try:
        conn.request("GET", path, headers={"User-Agent": "devbox-ready", "Host": host})
        conn.getresponse().read()
        return True
    except (ConnectionError, http.client.RemoteDisconnected, socket.timeout, OSError):
        return False
    except http.client.HTTPException:
        return True  # something answered, just not HTTP: the server is up
    finally:
        conn.close()


def _accepts(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=1):
            return True
    except OSError:
        return False


def _check_for(config: Config, proc: ServerProcess, direct_ip: str | None = None,
               published: tuple[str, int] | None = None) -> Callable[[], bool] | None:
    """The probe the config asks for; by default a TCP connect to the first published port (or, with
    `direct_ip`, to the container's own port)."""
    ready = config.ready
    if ready.log:
        return proc.log_matched.is_set
    port = _published(config, ready.tcp)
    if port is None:
        return None
    on_host = published if published is not None and port == config.ports[0] else probe_address(port)
    if ready.http is not None and ready.tcp is None:
        address = (direct_ip, port.container_port) if direct_ip else on_host
        shown, number = probe_address(port)
        return partial(_http_answers, address, ready.http, f"{f'[{shown}]' if ':' in shown else shown}:{number}")
    if direct_ip:
        return partial(_accepts, (direct_ip, port.container_port))
    return partial(listening, on_host)


class ProbeOutcome(enum.Enum):
    """How a ready check ended; each one the loop tells the user about (but CANCELLED and EXITED, which
    a newer start or the exit's own line cover)."""

    READY = "ready"
    NO_CHECK = "no check"  # nothing to probe: the server lived NO_CHECK_GRACE
    TIMEOUT = "timeout"
    EXITED = "exited"
    CANCELLED = "cancelled"  # a newer start took over
    FAILED = "failed"  # the probe itself broke (a bug): said, and the server is left running


NO_CHECK_GRACE = 1.5  # seconds a server with nothing to probe must live to count as started (its line waits)
QUIET_SHARE = 0.6  # of the last start's time: no probing before it, so probes do not slow the start itself


def wait_ready(config: Config, proc: ServerProcess, cancelled: Callable[[], bool], expected: float = 0.0,
               direct_ip: str | None = None, published: tuple[str, int] | None = None) -> ProbeOutcome:
    """Block until the server is ready, has exited, is replaced, or `ready.timeout` passed.

    `expected`: how long the last start took. Each probe of a published port goes through Docker's
    userland proxy, which competes for the CPU with the starting server; so probing waits for
    QUIET_SHARE of that time first (log probes cost nothing and start at once). `published`: where
    the first port really is on this machine, when devbox's browser front has the configured one."""
    check = _check_for(config, proc, direct_ip, published)
    if check is None:
        proc.exited.wait(NO_CHECK_GRACE)  # a start that fails at once (exit 126, 127) did not "start"
        return ProbeOutcome.EXITED if proc.exited.is_set() else ProbeOutcome.NO_CHECK
    began = time.monotonic()
    deadline = began + config.ready.timeout
    # (a probe past the proxy, or of the log, costs the starting server nothing: no quiet time for it)
    if config.ready.log is None and not direct_ip and expected > 0 and os.environ.get("DEVBOX_PROBE_EAGER") != "1":
        quiet_until = began + QUIET_SHARE * expected
        while time.monotonic() < quiet_until and not proc.exited.is_set() and not cancelled():
            time.sleep(min(POLL, max(0.0, quiet_until - time.monotonic())))
    while True:
        if proc.exited.is_set():
            return ProbeOutcome.EXITED
        if cancelled():
            return ProbeOutcome.CANCELLED
        if check():
            return ProbeOutcome.READY
        if time.monotonic() > deadline:
            return ProbeOutcome.TIMEOUT
        time.sleep(POLL)
