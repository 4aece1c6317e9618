"""A second Docker engine of the tests' own, reached over TCP on loopback: what a remote engine is to
devbox, on this machine (../shared/notes/remote.md).

- its own bridge (`dbx<hex>`, in a subnet no route uses): never `--bridge none`, which deletes the
  main engine's docker0; `--iptables=false --ip-forward=false` leave this machine's rules alone;
- its own data root, exec root, pidfile and sockets, and the main engine's storage driver only
  (the main daemon.json sets a data root);
- started under `unshare --mount` with a tmpfs over the tests' temporary folder: it cannot see the
  test projects, as an engine on another host cannot;
- the test images go in by `docker save | docker -H ... load`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import docker

from conftest import free_port


def _bridge_of_main() -> str:
    return subprocess.run(["ip", "-br", "addr", "show", "docker0"], capture_output=True, text=True).stdout


class SecondEngine:
    def __init__(self, blind_to: Path):
        self.blind_to = blind_to  # the folder the engine must not see (the tests' projects)
        self.root = Path(tempfile.mkdtemp(prefix="devbox-engine2-"))
        self.bridge = "dbx" + uuid.uuid4().hex[:8]
        self.port = free_port()
        self.host = f"tcp://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.client: docker.DockerClient | None = None

    def start(self) -> "SecondEngine":
        docker0_before = _bridge_of_main()
        driver = docker.from_env().info()["Driver"]
        subnet = 100 + int(self.bridge[3:5], 16) % 100
        subprocess.run(["ip", "link", "add", self.bridge, "type", "bridge"], check=True)
        subprocess.run(["ip", "addr", "add", f"10.213.{subnet}.1/24", "dev", self.bridge], check=True)
        subprocess.run(["ip", "link", "set", self.bridge, "up"], check=True)
        (self.root / "daemon.json").write_text(json.dumps({"storage-driver": driver}))
        for folder in ("data", "exec"):
            (self.root / folder).mkdir()
        dockerd = (f"mount -t tmpfs tmpfs {self.blind_to} && exec dockerd --config-file {self.root}/daemon.json "
                   f"--data-root {self.root}/data --exec-root {self.root}/exec --pidfile {self.root}/dockerd.pid "
                   f"-H unix://{self.root}/docker.sock -H tcp://127.0.0.1:{self.port} --bridge {self.bridge} "
                   "--iptables=false --ip-forward=false")
        self.proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", dockerd],
                                     stdout=open(self.root / "dockerd.log", "wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.client = docker.DockerClient(base_url=self.host, timeout=120)
                self.client.ping()
                break
            except Exception:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    log = (self.root / "dockerd.log").read_text(errors="replace")[-2000:]
                    self.stop()
                    raise RuntimeError(f"the second engine did not start:\n{log}")
                time.sleep(0.2)
        if _bridge_of_main() != docker0_before:
            self.stop()
            raise RuntimeError("starting the second engine changed the main engine's docker0")
        return self

    def load(self, *images: str) -> None:
        """Copy images from the main engine into this one (none is pulled: no registry here)."""
        have = {tag for image in self.client.images.list() for tag in image.tags}
        for image in images:
            if image in have:
                continue
            save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
            subprocess.run(["docker", "-H", self.host, "load", "-q"], stdin=save.stdout, check=True,
                           stdout=subprocess.DEVNULL)
            save.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # dockerd (sh exec'd it): it stops its containers first
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        subprocess.run(["ip", "link", "delete", self.bridge], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


def can_run() -> str | None:
    """Why a second engine cannot run here, or None."""
    if os.geteuid() != 0:
        return "a second dockerd needs root"
    for tool in ("dockerd", "unshare", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is missing"
    return None
