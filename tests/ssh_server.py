"""An sshd of the tests' own on a loopback port, in a mount namespace of its own where the second
engine's socket is /var/run/docker.sock: `ssh://root@127.0.0.1:PORT` is then a remote engine as a
build host is one. The client side is the tests' own too: a key, known_hosts and a config file, given to
every `ssh` devbox (and the docker CLI) runs by an `ssh` first on PATH that adds `-F`."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from conftest import free_port

SSHD = "/usr/sbin/sshd"


class SshServer:
    """`where_the_cli_says`: the engine's socket is not /var/run/docker.sock there (that path is /dev/null,
    as on a host with rootless Docker only); the remote `docker` CLI knows it from DOCKER_HOST, set for
    every session, as a user's shell profile would."""

    def __init__(self, engine_socket: Path, where_the_cli_says: bool = False):
        self.engine_socket, self.where_the_cli_says = engine_socket, where_the_cli_says
        self.root = Path(tempfile.mkdtemp(prefix="devbox-sshd-"))
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.bin = self.root / "bin"  # put first on PATH: its `ssh` uses the tests' own client config

    @property
    def url(self) -> str:
        return f"ssh://root@127.0.0.1:{self.port}"

    def start(self) -> "SshServer":
        r = self.root
        for key in ("host", "client"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(r / key)], check=True)
        shutil.copy(r / "client.pub", r / "authorized_keys")
        (r / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {r}/host\nAuthorizedKeysFile {r}/authorized_keys\n"
            f"PidFile {r}/sshd.pid\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nUsePAM no\n"
            "StrictModes no\nAllowStreamLocalForwarding yes\nAllowTcpForwarding yes\nMaxSessions 10\n"
            + (f"SetEnv DOCKER_HOST=unix://{self.engine_socket}\n" if self.where_the_cli_says else ""))
        (r / "known_hosts").write_text(f"[127.0.0.1]:{self.port} " + (r / "host.pub").read_text().split(" ", 2)[0] + " "
                                       + (r / "host.pub").read_text().split(" ", 2)[1] + "\n")
        (r / "ssh_config").write_text(
            f"Host 127.0.0.1\n  IdentityFile {r}/client\n  IdentitiesOnly yes\n  UserKnownHostsFile {r}/known_hosts\n"
            "  StrictHostKeyChecking yes\n  LogLevel ERROR\n")
        self.bin.mkdir()
        real_ssh = shutil.which("ssh")
        (self.bin / "ssh").write_text(f'#!/bin/sh\nexec {real_ssh} -F {r}/ssh_config "$@"\n')
        (self.bin / "ssh").chmod(0o755)
        Path("/run/sshd").mkdir(exist_ok=True)  # its privilege separation folder
        there = "/dev/null" if self.where_the_cli_says else self.engine_socket
        inner = f"mount --bind {there} /var/run/docker.sock && exec {SSHD} -D -e -f {r}/sshd_config"
        self.proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", inner],
                                     stdout=open(r / "sshd.log", "wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    log = (r / "sshd.log").read_text(errors="replace")[-2000:]
                    self.stop()
                    raise RuntimeError(f"the tests' sshd did not start:\n{log}")
                time.sleep(0.05)

    def also_known_at(self, port: int) -> None:
        """Its host key, known at another port too (a proxy in front of it)."""
        line = (self.root / "known_hosts").read_text().split(" ", 1)[1]
        with open(self.root / "known_hosts", "a") as f:
            f.write(f"[127.0.0.1]:{port} {line}")

    def env(self) -> dict[str, str]:
        return {"DOCKER_HOST": self.url, "PATH": f"{self.bin}:{os.environ['PATH']}"}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def can_run() -> str | None:
    for tool in (SSHD, "ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"{tool} is missing (apt-get install openssh-server openssh-client)"
    return None
