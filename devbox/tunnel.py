"""An `ssh://` engine, reached through an SSH connection of devbox's own.

Why not the Docker SDK's own ssh:// support: it needs paramiko, which reads only part of
~/.ssh/config (HostName, Port, User, IdentityFile, ProxyCommand), rejects hosts missing from
known_hosts, and multiplexes every API call into sessions of one connection, which sshd caps at
MaxSessions (10): devbox's parallel execs then fail with "Secsh channel 11 open FAILED". With
`use_ssh_client=True` it breaks on the first exec_start (docker/docker-py#3218). The user's own `ssh`
has none of these limits: one master connection (`-M`) forwards a local unix socket to the engine's
socket (`-L`, streamlocal channels, not sessions), and the published ports are added to the same
connection (`-O forward`) once the container is up, so the app is at this machine's loopback.

Where the engine is on the remote host is the remote's own answer, as for the Docker CLI (whose
`docker system dial-stdio` connects to the remote CLI's endpoint): `docker context inspect` run there
over the same connection gives rootless Docker's `/run/user/UID/docker.sock` or a `DOCKER_HOST` set
there; without a docker CLI there, /var/run/docker.sock. `DEVBOX_SSH_DOCKER_SOCKET` names it instead.
"""

from __future__ import annotations

__all__ = ["SshTunnel", "open_tunnel", "REMOTE_SOCKET_VAR"]

import atexit
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from .errors import DockerUnavailable, UsageError

REMOTE_SOCKET_VAR = "DEVBOX_SSH_DOCKER_SOCKET"  # the engine's socket on the remote host, if not the default
DEFAULT_REMOTE_SOCKET = "/var/run/docker.sock"
# The connection's one session, with a terminal: ssh and sshd set TCP_NODELAY for terminal sessions only.
# Without it Nagle's rule holds every second small write until the first is acknowledged, and the other
# end delays that ack by 40 ms: each API call whose headers and body went in two writes paid 40 ms.
KEEP_OPEN = "exec sleep 2147483647"
# the remote docker CLI's endpoint (its DOCKER_HOST, else its context's), as `docker -H ssh://` would use it
ASK_ENDPOINT = "docker context inspect --format '{{.Endpoints.docker.Host}}' 2>/dev/null"
OPEN_TIMEOUT = 30.0  # seconds for the connection (BatchMode: keys from the agent or unencrypted, no prompt)


class SshTunnel:
    def __init__(self, url: str):
        parts = urlsplit(url)
        if not parts.hostname:
            raise UsageError(f"DOCKER_HOST {url}: no host in it (ssh://[user@]host[:port])")
        self.url = url
        self.destination = (f"{parts.username}@" if parts.username else "") + parts.hostname
        self.port = parts.port
        self.socket: Path | None = None
        self.control: Path | None = None
        self.master: subprocess.Popen | None = None
        self.forwards: dict[tuple[str, int], int] = {}  # (local address, local port) -> remote port
        self.remote = ""  # the engine's socket (or host:port) on the remote host
        self.remote_from = ""  # how devbox knows it, for the lines that name it

    def _ssh(self) -> list[str]:
        ssh = shutil.which("ssh")
        if ssh is None:
            raise UsageError(f"the engine at {self.url} is reached over SSH, and `ssh` (the OpenSSH client) is not "
                             "on PATH: install it")
        return [ssh, *(["-p", str(self.port)] if self.port else [])]

    def open(self) -> "SshTunnel":
        from .lock import runtime_dir

        name = uuid.uuid4().hex[:10]
        self.socket = runtime_dir() / f"ssh-{name}.sock"
        self.control = runtime_dir() / f"ssh-{name}.ctl"
        argv = [*self._ssh(), "-tt", "-M", "-S", str(self.control), "-o", "ControlPersist=no",
                "-o", "BatchMode=yes",
                "-o", "ExitOnForwardFailure=yes", "-o", "ServerAliveInterval=15", "-o", "StreamLocalBindUnlink=yes",
                self.destination, KEEP_OPEN]
        self.master = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.PIPE, start_new_session=True)
        atexit.register(self.close)
        deadline = time.monotonic() + OPEN_TIMEOUT
        self._wait(self._connected, deadline)
        self.remote, self.remote_from = self._remote_endpoint()
        result = subprocess.run([*self._ssh(), "-S", str(self.control), "-O", "forward", "-L",
                                 f"{self.socket}:{self.remote}", self.destination],
                                capture_output=True, text=True, timeout=OPEN_TIMEOUT)
        if result.returncode != 0:
            said = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise DockerUnavailable(f"cannot reach the engine at {self.url}: forwarding to {self.remote} on "
                                    f"{self.destination} failed ({said})")
        self._wait(self._answers, deadline)
        return self

    def _wait(self, done, deadline: float) -> None:
        while not done():
            assert self.master is not None
            if self.master.poll() is not None:
                said = (self.master.stderr.read().decode(errors="replace").strip().splitlines() or ["no output"])[-1]
                raise DockerUnavailable(f"cannot reach the engine at {self.url}: ssh {self.destination} says: {said}")
            if time.monotonic() > deadline:
                self.close()
                raise DockerUnavailable(f"cannot reach the engine at {self.url}: ssh {self.destination} did not connect "
                                        f"within {OPEN_TIMEOUT:.0f}s (try `ssh {self.destination}`)")
            time.sleep(0.02)

    def _connected(self) -> bool:
        return subprocess.run([*self._ssh(), "-S", str(self.control), "-O", "check", self.destination],
                              capture_output=True, timeout=10).returncode == 0

    def _remote_endpoint(self) -> tuple[str, str]:
        """Where the engine is on the remote host, and how that is known: DEVBOX_SSH_DOCKER_SOCKET, else the
        remote docker CLI's own endpoint (its DOCKER_HOST or context), else the default socket."""
        named = os.environ.get(REMOTE_SOCKET_VAR)
        if named:
            return named, REMOTE_SOCKET_VAR
        try:
            result = subprocess.run([*self._ssh(), "-S", str(self.control), self.destination, ASK_ENDPOINT],
                                    capture_output=True, text=True, timeout=OPEN_TIMEOUT)
            answer = result.stdout.strip().splitlines()[-1] if result.returncode == 0 and result.stdout.strip() else ""
        except (OSError, subprocess.TimeoutExpired):
            answer = ""
        parts = urlsplit(answer)
        if parts.scheme == "unix" and parts.path:
            return parts.path, f"`docker context inspect` on {self.destination}"
        if parts.scheme == "tcp" and parts.hostname and parts.port:
            return f"{parts.hostname}:{parts.port}", f"`docker context inspect` on {self.destination}"
        return DEFAULT_REMOTE_SOCKET, f"the default: no docker CLI on {self.destination} said otherwise"

    def _answers(self) -> bool:
        if self.socket is None or not self.socket.exists():
            return False
        with socket.socket(socket.AF_UNIX) as s:
            try:
                s.connect(str(self.socket))
                return True
            except OSError:
                return False

    @property
    def base_url(self) -> str:
        return f"unix://{self.socket}"

    def forward(self, local: tuple[str, int], remote_port: int) -> None:
        """This machine's `local` address to the remote host's loopback `remote_port`, on the same connection."""
        if self.forwards.get(local) == remote_port:
            return
        if local in self.forwards:
            self._control("cancel", local, self.forwards.pop(local))
        self._control("forward", local, remote_port)
        self.forwards[local] = remote_port

    def _control(self, verb: str, local: tuple[str, int], remote_port: int) -> None:
        host = f"[{local[0]}]" if ":" in local[0] else local[0]
        result = subprocess.run([*self._ssh(), "-S", str(self.control), "-O", verb, "-L",
                                 f"{host}:{local[1]}:127.0.0.1:{remote_port}", self.destination],
                                capture_output=True, text=True, timeout=30)
        if result.returncode != 0 and verb == "forward":
            said = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise UsageError(f"cannot forward {host}:{local[1]} to port {remote_port} on {self.destination} "
                             f"({said}): is the port taken on this machine?")

    def close(self) -> None:
        if self.master is not None and self.master.poll() is None:
            os.killpg(self.master.pid, signal.SIGTERM)
            try:
                self.master.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.master.pid, signal.SIGKILL)
        for path in (self.socket, self.control):
            if path is not None:
                path.unlink(missing_ok=True)


_open: dict[str, SshTunnel] = {}


def open_tunnel(url: str) -> SshTunnel:
    """The process's tunnel to `url`, opened once."""
    if url not in _open:
        _open[url] = SshTunnel(url).open()
    return _open[url]


def tunnel_for(url: str) -> SshTunnel | None:
    return _open.get(url)
