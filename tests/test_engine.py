"""The engine and the container may go away: contexts, a daemon that disappears, and the container
stopped, killed, restarted or removed behind `devbox up`'s back."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from conftest import wait_http

APP = """\
name: {name}
image: devbox-test/busybox:1
ports: ["{port}:8000"]
command: echo started; exec httpd -f -p 8000 -h /app/www
"""


def make_context(config_dir: Path, name: str, host: str) -> None:
    meta = config_dir / "contexts" / "meta" / hashlib.sha256(name.encode()).hexdigest()
    meta.mkdir(parents=True)
    (meta / "meta.json").write_text(json.dumps({"Name": name, "Metadata": {},
                                                "Endpoints": {"docker": {"Host": host, "SkipTLSVerify": False}}}))


def test_docker_context_is_honoured_as_the_cli_does(project, busybox_image, tmp_path):
    project.config(APP)
    project.write("www/index.html", "via context\n")
    config_dir = tmp_path / "docker-config"
    link = tmp_path / "engine.sock"
    link.symlink_to("/var/run/docker.sock")
    make_context(config_dir, "linked", f"unix://{link}")
    make_context(config_dir, "nowhere", f"unix://{tmp_path / 'no-engine.sock'}")
    (config_dir / "config.json").write_text(json.dumps({"currentContext": "linked"}))
    env = {"DOCKER_CONFIG": str(config_dir), "DOCKER_HOST": ""}

    run = project.up(env=env)  # `docker context use linked`
    run.wait_for(r"ready in .*\(start\)")
    wait_http(project.port, "via context")
    assert run.interrupt() == 0

    failed = project.run("up", env={**env, "DOCKER_CONTEXT": "nowhere"})  # DOCKER_CONTEXT wins over the config
    assert failed.returncode == 1
    line = failed.stderr.strip().splitlines()[-1]
    assert f"unix://{tmp_path / 'no-engine.sock'} (context 'nowhere')" in line and "docker info" in line, line

    missing = project.run("up", env={**env, "DOCKER_CONTEXT": "gone"})
    assert missing.returncode == 2 and "docker context 'gone'" in missing.stderr and "docker context ls" in missing.stderr


class SocketProxy:
    """A unix socket that forwards to the engine's, and can drop every connection and stop answering:
    the engine as devbox sees it when Docker Desktop sleeps or the daemon restarts."""

    def __init__(self, path: Path, target: str = "/var/run/docker.sock"):
        self.path, self.target = path, target
        self.conns: list[socket.socket] = []
        self.server: socket.socket | None = None
        self.lock = threading.Lock()

    def start(self) -> None:
        self.path.unlink(missing_ok=True)
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(str(self.path))
        self.server.listen(64)
        threading.Thread(target=self._accept, args=(self.server,), daemon=True).start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(self.target)
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        self.path.unlink(missing_ok=True)
        with self.lock:
            for s in self.conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self.conns.clear()


def test_engine_going_away_and_coming_back(project, busybox_image, tmp_path):
    proxy = SocketProxy(tmp_path / "engine.sock")
    proxy.start()
    try:
        project.config(APP)
        project.write("www/index.html", "v1\n")
        run = project.up(env={"DOCKER_HOST": f"unix://{proxy.path}"})
        run.wait_for(r"ready in .*\(start\)")
        proxy.stop()
        run.wait_for(r"the Docker engine does not answer .*waiting for it to come back", timeout=15)
        container = project.container()
        container.restart(timeout=1)  # as a daemon restart would: the server died with the container
        proxy.start()
        run.wait_for(r"the Docker engine answers again", timeout=15)
        run.wait_for(r"ready in .*\(container back\)", timeout=15)
        project.write("www/index.html", "v2\n")
        run.wait_for(r"ready in .*\(www/index.html changed\)")
        wait_http(project.port, "v2")
        assert run.count("waiting for it to come back") == 1
        assert "unexpected" not in run.output and "Traceback" not in run.output
        servers = [p for p in project.processes("httpd") if p["args"].startswith("httpd")]
        assert len(servers) == 1, run.output
        assert run.interrupt() == 0
    finally:
        proxy.stop()


@pytest.mark.parametrize("action,said", [
    ("kill", r"stopped outside devbox"),
    ("stop", r"stopped outside devbox"),
    ("restart", r"restarted outside devbox|stopped outside devbox"),
    ("rm", r"removed outside devbox"),
])
def test_container_taken_away_is_brought_back(project, busybox_image, action, said):
    project.config(APP)
    project.write("www/index.html", "v1\n")
    run = project.up()
    run.wait_for(r"ready in .*\(start\)")
    container = project.container()
    args = {"kill": ["kill"], "stop": ["stop", "-t", "1"], "restart": ["restart", "-t", "1"], "rm": ["rm", "-f"]}[action]
    subprocess.run(["docker", *args, container.id], check=True, capture_output=True, timeout=30)
    run.wait_for(said, timeout=10)
    run.wait_for(r"ready in .*\(container back\)", timeout=15)
    wait_http(project.port, "v1")
    project.write("www/index.html", "v2\n")
    run.wait_for(r"ready in .*\(www/index.html changed\)")
    wait_http(project.port, "v2")
    assert "is not running" not in run.output and "unexpected" not in run.output
    assert len([p for p in project.processes("httpd") if p["args"].startswith("httpd")]) == 1
    assert run.interrupt() == 0
    assert project.container().status == "exited"


def test_a_container_that_keeps_stopping_ends_up_with_one_line(project, tmp_path, python_image):
    # an empty folder mounted over /lib: the container starts, its `sleep infinity` cannot load, it stops
    empty = tmp_path / "empty"
    empty.mkdir()
    project.config(f"""\
        name: {{name}}
        image: devbox-test/python:bookworm
        mounts: [".:/app", "{empty}:/lib:ro"]
        ports: ["{{port}}:8000"]
        command: python3 -m http.server 8000
        """)
    run = project.up()
    assert run.wait(90) == 1
    assert run.count(r"^devbox: the container stopped 6 times within 60s; devbox gave up bringing it back: "
                     r"see `docker logs devbox-.*` and the mounts in devbox.yaml$") == 1, run.output
