"""What a user sees when something is wrong: one line naming the thing and the fix, the SPEC's exit code."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from conftest import ROOT, wait_http


PROGRESS = ("is not here; pulling it", "creating container", "starting container", "reusing container")


def assert_one_line(text: str) -> str:
    """The error is the one last line; anything before it is devbox's progress, each line devbox's own."""
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines and all(line.startswith("devbox: ") for line in lines), text
    assert all(any(p in line for p in PROGRESS) for line in lines[:-1]), text
    return lines[-1]


def test_docker_unreachable_names_the_socket(tmp_path):
    # needs no engine: it is the case of a missing one
    (tmp_path / "devbox.yaml").write_text("name: dbt-nowhere\nimage: devbox-test/busybox:1\ncommand: httpd -f\n")
    result = subprocess.run([sys.executable, "-m", "devbox", "up"], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "DOCKER_HOST": "unix:///tmp/devbox-no-such.sock"})
    assert result.returncode == 1
    line = assert_one_line(result.stderr)
    assert "unix:///tmp/devbox-no-such.sock" in line and "docker info" in line


def test_missing_image_is_one_line(project, client):
    project.config("name: {name}\nimage: devbox-test/no-such-image:1\ncommand: httpd -f\n")
    result = project.run("up")
    assert result.returncode == 1
    line = assert_one_line(result.stderr)
    assert "image 'devbox-test/no-such-image:1'" in line and "cannot be pulled" in line


def test_port_in_use_names_the_port(project, busybox_image):
    project.config("name: {name}\nimage: devbox-test/busybox:1\nports: ['{port}:8000']\ncommand: httpd -f -p 8000\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", project.port))
        taken.listen()
        result = project.run("up")
    assert result.returncode == 1
    line = assert_one_line(result.stderr)
    assert f"port {project.port} is already in use" in line and "ports" in line


def test_command_not_found_says_which_and_keeps_running(project, busybox_image):
    project.config("name: {name}\nimage: devbox-test/busybox:1\nports: ['{port}:8000']\ncommand: [no-such-server, --port, '8000']\n")
    run = project.up()
    run.wait_for(r"command not found in the container: `no-such-server --port 8000`")
    run.wait_for(r"waiting for a change")
    # the fix is picked up like any other change
    project.config("name: {name}\nimage: devbox-test/busybox:1\nports: ['{port}:8000']\n"
                   "command: [httpd, -f, -p, '8000', -h, /app]\n")
    project.write("index.html", "fixed\n")
    wait_http(project.port, "fixed")
    assert run.interrupt() == 0


def test_missing_config_suggests_init(tmp_path):
    result = subprocess.run([sys.executable, "-m", "devbox", "up"], cwd=tmp_path, capture_output=True, text=True,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    line = assert_one_line(result.stderr)
    assert "devbox.yaml: not found" in line and "devbox init" in line
