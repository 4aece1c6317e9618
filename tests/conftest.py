"""Fixtures that let a test read like a user's session: write a devbox.yaml, run `devbox up`, edit, observe.

Every wait has a deadline. Every container and volume a test makes carries the label
devbox.project=dbt-..., and is removed by that label when the test ends, pass or fail.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Callable

import docker
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import images  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TEST_PREFIX = "dbt-"
# this run's projects: the end-of-run sweep removes only these, never those of a run beside it
SESSION_PREFIX = TEST_PREFIX + uuid.uuid4().hex[:4]


def pytest_collection_modifyitems(items) -> None:
    """The fast layer: every test that needs no engine (no `client` fixture, directly or through another)
    is marked `unit`, so `pytest -m unit` runs it alone."""
    for item in items:
        if "client" not in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.unit)


def wait_until(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.05):
    """Poll `condition` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port: int, path: str = "/", timeout: float = 2) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.read().decode()
    except (urllib.error.URLError, http.client.HTTPException, OSError):
        return None  # not up yet, or killed mid-answer


def wait_http(port: int, text: str, path: str = "/", timeout: float = 30) -> str:
    return wait_until(lambda: (body := http_get(port, path)) is not None and text in body and body,
                      timeout, f"http://127.0.0.1:{port}{path} to answer {text!r}")


class DevboxRun:
    """`devbox ARGS` as a subprocess, its combined output collected line by line."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str] | None = None, prefix: list[str] = ()):
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen([*prefix, sys.executable, "-m", "devbox", *args], cwd=cwd, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, bufsize=1,
                                     env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    @property
    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def count(self, pattern: str) -> int:
        with self._cond:
            return sum(1 for line in self.lines if re.search(pattern, line))

    def lines_matching(self, pattern: str) -> list[str]:
        """The first group of `pattern` in each line it matches."""
        with self._cond:
            return [m.group(1) for line in self.lines if (m := re.search(pattern, line))]

    def wait_for(self, pattern: str, timeout: float = 30, count: int = 1) -> str:
        """Wait until `pattern` has matched `count` lines in total; the last such line."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [line for line in self.lines if re.search(pattern, line)]
                if len(found) >= count:
                    return found[count - 1]
                if self.proc.poll() is not None and not self._reader.is_alive():
                    raise AssertionError(f"devbox exited ({self.proc.returncode}) before {pattern!r}:\n{self.output}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {pattern!r} x{count}; output:\n{self.output}")
                self._cond.wait(min(left, 0.2))

    def wait(self, timeout: float = 30) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"devbox did not exit within {timeout}s; output:\n{self.output}")
        self._reader.join(5)
        return code

    def interrupt(self, timeout: float = 30) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Project:
    """A project folder with a devbox.yaml, its unique name, a free host port and helpers to look inside."""

    def __init__(self, path: Path, client: docker.DockerClient):
        self.path, self.client = path, client
        self.name = SESSION_PREFIX + uuid.uuid4().hex[:8]
        self.port = free_port()
        self.runs: list[DevboxRun] = []

    def write(self, relative: str, text: str) -> Path:
        target = self.path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text))
        return target

    def config(self, text: str) -> Path:
        """Write devbox.yaml; {name} and {port} are filled in."""
        return self.write("devbox.yaml", textwrap.dedent(text).format(name=self.name, port=self.port))

    def devbox(self, *args: str, env: dict[str, str] | None = None, prefix: list[str] = ()) -> DevboxRun:
        """`devbox ARGS`; `prefix` runs it under another command (setpriv, unshare)."""
        run = DevboxRun(list(args), self.path, env, prefix)
        self.runs.append(run)
        return run

    def up(self, *args: str, env: dict[str, str] | None = None, prefix: list[str] = ()) -> DevboxRun:
        return self.devbox("up", *args, env=env, prefix=prefix)

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "devbox", *args], cwd=self.path, capture_output=True,
                              text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})

    def container(self):
        found = self.client.containers.list(all=True, filters={"label": f"devbox.project={self.name}"})
        return found[0] if found else None

    def processes(self, needle: str) -> list[dict]:
        """Processes in the container whose command line contains `needle` (pid, pgid, state, args)."""
        container = self.container()
        if container is None or container.status != "running":
            return []
        container.reload()
        if container.status != "running":
            return []
        top = container.top(ps_args="-o pid,ppid,pgid,stat,args")
        rows = [dict(zip(("pid", "ppid", "pgid", "stat", "args"), row)) for row in top.get("Processes") or []]
        return [r for r in rows if needle in r["args"] and not r["stat"].startswith("Z")]

    def servers(self, needle: str) -> list[dict]:
        """The server processes running `needle`, cold or forked by the preloader (which, like its
        client, shows as devbox's own: `devbox-preloader`, `devbox-preload-client`)."""
        rows = self.processes(needle)
        parents = {r["ppid"] for r in rows}
        return [r for r in rows if r["pid"] not in parents]

    def preloaders(self) -> list[dict]:
        return self.processes("devbox-preloader")

    def cleanup(self) -> None:
        for run in self.runs:
            run.close()
        remove_by_label(self.client, f"devbox.project={self.name}")
        from devbox.lock import runtime_dir

        for kept in runtime_dir().glob(f"{self.name}.*"):  # its lock, log, socket, compose record
            kept.unlink(missing_ok=True)


def remove_by_label(client: docker.DockerClient, label: str) -> None:
    for container in client.containers.list(all=True, filters={"label": label}):
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
    for volume in client.volumes.list(filters={"label": label}):
        try:
            volume.remove(force=True)
        except docker.errors.APIError:
            pass
    for network in client.networks.list(filters={"label": label}):  # a Compose project's network
        try:
            network.remove()
        except docker.errors.APIError:
            pass
    for image in client.images.list(filters={"label": label}):  # built from `build:` by a test
        try:
            client.images.remove(image.id, force=True)
        except docker.errors.APIError:
            pass


@pytest.fixture(scope="session")
def client() -> docker.DockerClient:
    try:
        c = docker.from_env()
        c.ping()
    except Exception as e:
        message = f"no Docker engine answers ({e}); start dockerd or run .ci/run"
        # a missing engine fails the run; skipping must be asked for, never the silent default
        if os.environ.get("DEVBOX_SKIP_DOCKER") != "1":
            pytest.fail(message + " (DEVBOX_SKIP_DOCKER=1 skips the Docker tests)")
        pytest.skip(message)
    yield c
    # a sweep for anything a crashed test left behind
    for container in c.containers.list(all=True, filters={"label": "devbox.project"}):
        if container.labels.get("devbox.project", "").startswith(SESSION_PREFIX):
            container.remove(force=True)


@pytest.fixture(scope="session")
def busybox_image(client) -> str:
    return images.build_busybox()


@pytest.fixture(scope="session")
def python_image(client) -> str:
    return images.build_python()


@pytest.fixture(scope="session")
def old_python_image(client) -> str:
    return images.build_old_python()


@pytest.fixture(scope="session")
def redis_image(client) -> str:
    return images.build_redis()


@pytest.fixture(scope="session")
def postgres_image(client) -> str:
    return images.build_postgres()


@pytest.fixture(scope="session")
def site_packages() -> Path:
    return images.install_frameworks()


@pytest.fixture
def project(tmp_path, client) -> Project:
    p = Project(tmp_path / "app", client)
    p.path.mkdir()
    yield p
    p.cleanup()


@pytest.fixture
def named_project(tmp_path, client) -> Project:
    """A project whose folder bears its name: `devbox init` names the project after its folder, and the
    cleanup finds what it made by that name."""
    p = Project(tmp_path, client)
    p.path = tmp_path / p.name
    p.path.mkdir()
    yield p
    p.cleanup()


@pytest.fixture
def stack(client):
    """The name of a Compose project a test starts; whatever carries it is removed after the test."""
    name = f"{TEST_PREFIX}stack-{uuid.uuid4().hex[:8]}"
    yield name
    label = f"com.docker.compose.project={name}"
    for network in client.networks.list(filters={"label": label}):  # devbox's own container may be on it
        network.reload()
        for container in network.containers:
            if container.labels.get("devbox.project", "").startswith(TEST_PREFIX):
                container.remove(force=True)
    remove_by_label(client, label)


@pytest.fixture(scope="session")
def second_engine(client, python_image, busybox_image, tmp_path_factory):
    """A second engine of the tests' own on loopback TCP, blind to the test projects (second_engine.py)."""
    from second_engine import SecondEngine, can_run

    why = can_run()
    if why:  # a failure, not a skip: the remote-engine tests must run in CI
        pytest.fail(f"cannot start a second Docker engine: {why}")
    engine = SecondEngine(tmp_path_factory.getbasetemp()).start()
    try:
        engine.load(python_image, busybox_image)
        yield engine
    finally:
        engine.stop()


class RemoteProject(Project):
    """A project whose devbox talks to the second engine (DOCKER_HOST), cleaned up there."""

    def __init__(self, path: Path, engine):
        super().__init__(path, engine.client)
        self.engine = engine

    def devbox(self, *args: str, env: dict[str, str] | None = None, prefix: list[str] = ()) -> DevboxRun:
        return super().devbox(*args, env={"DOCKER_HOST": self.engine.host, **(env or {})}, prefix=prefix)

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        return super().run(*args, env={"DOCKER_HOST": self.engine.host, **(env or {})}, timeout=timeout)


@pytest.fixture
def remote_project(tmp_path, second_engine) -> Project:
    p = RemoteProject(tmp_path / "app", second_engine)
    p.path.mkdir()
    yield p
    p.cleanup()


@pytest.fixture(scope="session")
def ssh_engine(second_engine):
    """The second engine reached as ssh://root@127.0.0.1:PORT through an sshd of the tests' own."""
    from ssh_server import SshServer, can_run

    why = can_run()
    if why:
        pytest.fail(f"cannot start the tests' sshd: {why}")
    server = SshServer(second_engine.root / "docker.sock").start()
    try:
        yield server
    finally:
        server.stop()


class SshProject(RemoteProject):
    def __init__(self, path: Path, engine, server):
        super().__init__(path, engine)
        self.server = server

    def devbox(self, *args: str, env: dict[str, str] | None = None, prefix: list[str] = ()) -> DevboxRun:
        return Project.devbox(self, *args, env={**self.server.env(), **(env or {})}, prefix=prefix)

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        return Project.run(self, *args, env={**self.server.env(), **(env or {})}, timeout=timeout)


@pytest.fixture
def ssh_project(tmp_path, second_engine, ssh_engine) -> Project:
    p = SshProject(tmp_path / "app", second_engine, ssh_engine)
    p.path.mkdir()
    yield p
    p.cleanup()


@pytest.fixture(params=["tcp", "ssh"])
def any_remote_project(request, tmp_path, second_engine) -> Project:
    """The same test against the second engine over tcp:// and over ssh://."""
    if request.param == "ssh":
        p = SshProject(tmp_path / "app", second_engine, request.getfixturevalue("ssh_engine"))
    else:
        p = RemoteProject(tmp_path / "app", second_engine)
    p.path.mkdir()
    yield p
    p.cleanup()
