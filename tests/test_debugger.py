"""The debugger across restarts (`debugger:`), against a real engine, with a client that speaks the
Debug Adapter Protocol as VS Code does (tests/dap.py): attach once, and breakpoints hit in the first
server and in every server after every save, preloaded and cold."""

from __future__ import annotations

import json
import socket
import threading
import urllib.request

import pytest

import dap
from apps import make_django_app, value_module
from conftest import free_port, http_get, wait_http, wait_until

TRACE = {"DEVBOX_TRACE": "1"}
DJANGO_DEBUG_CONFIG = """\
name: {name}
image: devbox-test/python:bookworm
mounts: [".:/app", "SITE:/site:ro"]
env: {{PYTHONPATH: /site}}
ports: ["{port}:8000"]
command: python3 manage.py runserver 0.0.0.0:8000 --noreload
preload: PRELOAD
debugger: {{port: DEBUG_PORT}}
ready: {{tcp: 8000}}
"""
BREAK_LINE = 7  # `return HttpResponse(...)` in apps.VIEWS


def django_project(project, site_packages, preload: str = "auto") -> int:
    make_django_app(project.path, site_packages)
    debug_port = free_port()
    project.config(DJANGO_DEBUG_CONFIG.replace("SITE", str(site_packages)).replace("PRELOAD", preload)
                   .replace("DEBUG_PORT", str(debug_port)))
    assert "return HttpResponse" in (project.path / "mysite" / "views.py").read_text().splitlines()[BREAK_LINE - 1]
    return debug_port


def client_for(project, debug_port: int) -> dap.Client:
    return dap.Client("127.0.0.1", debug_port, [{"localRoot": str(project.path), "remoteRoot": "/app"}],
                      {str(project.path / "mysite" / "views.py"): [BREAK_LINE]})


def hit(project, client: dap.Client, expect: str, servers: int) -> dap.Stop:
    """GET /hello/ and wait for the breakpoint; continue; the page must then be `expect`. `servers`: how
    many servers the client has seen since it attached (each is a child session)."""
    answers: list[str] = []
    client.wait_configured(servers)

    def get() -> None:
        with urllib.request.urlopen(f"http://127.0.0.1:{project.port}/hello/", timeout=60) as r:
            answers.append(r.read().decode())

    request = threading.Thread(target=get, daemon=True)
    request.start()
    stop = client.wait_stop(30)
    assert answers == [], "the request was answered while the server was stopped at the breakpoint"
    stop.resume()
    request.join(30)
    assert answers == [expect], (answers, client.errors)
    return stop


@pytest.mark.parametrize("preload", ["auto", "false"])
def test_one_attach_hits_breakpoints_in_every_server_after_every_save(project, python_image, site_packages, preload):
    debug_port = django_project(project, site_packages, preload)
    run = project.up(env=TRACE)
    run.wait_for(r"ready in [\d.]+s \(start\)", timeout=60)
    attach_line = run.wait_for(r"debugger: attach a client at 127\.0\.0\.1:%d" % debug_port)
    config = json.loads(attach_line.split("VS Code: ", 1)[1])
    assert config["connect"] == {"host": "127.0.0.1", "port": debug_port}
    assert config["pathMappings"][0]["remoteRoot"] == "/app"
    # with no client attached, the server serves at once, and so does the next one
    wait_http(project.port, "hello v1", "/hello/")
    project.write("mysite/value.py", value_module("v2"))
    wait_http(project.port, "hello v2", "/hello/")

    client = client_for(project, debug_port)
    try:
        client.attach()
        stop = hit(project, client, "hello v2", servers=1)  # the server started before the attach
        assert stop.top["source"]["path"] == str(project.path / "mysite" / "views.py")  # the host's file
        assert stop.top["line"] == BREAK_LINE
        for i, version in enumerate(("v3", "v4"), start=3):
            project.write("mysite/value.py", value_module(version))
            run.wait_for(r"ready in [\d.]+s \(mysite/value.py changed\)", count=i - 1, timeout=60)
            stop = hit(project, client, f"hello {version}", servers=i - 1)
            assert stop.top["source"]["path"] == str(project.path / "mysite" / "views.py")
        assert client.errors == []
        assert len(client.sessions) == 1 + client.children  # one attach; every other session the adapter asked for
    finally:
        client.close()
    starts = run.lines_matching(r"start exec \((\w+)\)")
    if preload == "auto":
        assert starts[-2:] == ["preloaded", "preloaded"], run.output
    else:
        assert set(starts) == {"cold"}, run.output
    # RUN_MAIN=true and one server tree; the debugger's own processes show as devbox's
    assert len(project.servers("manage.py runserver")) == 1
    assert len(project.processes("devbox-debugger")) == 1 and len(project.processes("devbox-debug-adapter")) == 1
    assert "Traceback" not in run.output and run.count("devbox: debugger:") == 1, run.output  # the attach line
    assert run.interrupt() == 0
