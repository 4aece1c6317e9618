"""The debugger across restarts (`debugger:`), against a real engine, with a client that speaks the
Debug Adapter Protocol as VS Code does (tests/dap.py): attach once, and breakpoints hit in the first
server and in every server after every save, preloaded and cold."""

from __future__ import annotations

import json
import os
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


def client_for(project, debug_port: int, start_debugging: bool = True) -> dap.Client:
    """`start_debugging`: the client takes child sessions as VS Code does (the startDebugging request);
    without it, as older clients do (debugpy's debugpyAttach event)."""
    return dap.Client("127.0.0.1", debug_port, [{"localRoot": str(project.path), "remoteRoot": "/app"}],
                      {str(project.path / "mysite" / "views.py"): [BREAK_LINE]}, start_debugging)


def hit(project, client: dap.Client, expect: str, servers: int) -> dap.Stop:
    """GET /hello/ and wait for the breakpoint; continue; the page must then be `expect`. `servers`: how
    many servers the client has seen since it attached (each is a child session)."""
    answers: list[str] = []
    client.wait_configured(servers)

    def get() -> None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{project.port}/hello/", timeout=60) as r:
                answers.append(r.read().decode())
        except OSError as e:  # the assertion below shows it
            answers.append(repr(e))

    request = threading.Thread(target=get, daemon=True)
    request.start()
    stop = client.wait_stop(30)
    assert answers == [], "the request was answered while the server was stopped at the breakpoint"
    stop.resume()
    request.join(30)
    assert answers == [expect], (answers, client.errors)
    return stop


def attach_and_hit(project, debug_port: int, expect: str) -> None:
    """A new client attaches to the server that runs, and its breakpoint is hit."""
    client = client_for(project, debug_port)
    try:
        client.attach()
        hit(project, client, expect, servers=1)
    finally:
        client.close()


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

    client = client_for(project, debug_port, start_debugging=preload == "auto")  # both ways of child sessions
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


def test_wait_true_holds_each_start_until_a_client_attaches(project, python_image, site_packages):
    debug_port = django_project(project, site_packages)
    project.write("devbox.yaml", (project.path / "devbox.yaml").read_text().replace(f"debugger: {{port: {debug_port}}}",
                                                                       f"debugger: {{port: {debug_port}, wait: true}}"))
    run = project.up(env=TRACE)
    run.wait_for(r"devbox: debugger: waiting for a debug client to attach", timeout=60)
    assert http_get(project.port, "/hello/", timeout=1) is None  # it waits before its main runs: not serving
    assert run.count(r"ready in") == 0 and run.count(r"not ready after") == 0
    client = client_for(project, debug_port)
    try:
        client.attach()
        run.wait_for(r"ready in [\d.]+s \(start\)", timeout=30)  # timed from the start, the wait included
        hit(project, client, "hello v1", servers=1)
    finally:
        client.close()
    # the client went: the next start waits again
    project.write("mysite/value.py", value_module("v2"))
    run.wait_for(r"devbox: debugger: waiting for a debug client to attach", count=2, timeout=30)
    assert run.count(r"ready in") == 1
    assert run.interrupt() == 0


def test_a_lost_adapter_is_started_again_and_a_new_attach_works(project, python_image, site_packages):
    debug_port = django_project(project, site_packages)
    run = project.up(env=TRACE)
    run.wait_for(r"ready in [\d.]+s \(start\)", timeout=60)
    # debugpy's adapter exits when one of its handlers fails: here it is killed
    project.container().exec_run(["python3", "-c", KILL_ADAPTER])
    run.wait_for(r"devbox: debugger: the debug adapter exited; starting it again", timeout=10)
    wait_until(lambda: len(project.processes("devbox-debug-adapter")) == 1, 20, "a new adapter")
    assert len(project.processes("devbox-debugger")) == 1  # the old hub is gone
    project.write("mysite/value.py", value_module("v2"))  # a server that attaches to the new adapter
    run.wait_for(r"ready in [\d.]+s \(mysite/value.py changed\)", timeout=30)
    attach_and_hit(project, debug_port, "hello v2")
    assert run.interrupt() == 0


KILL_ADAPTER = """
import os, signal
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            if open(f"/proc/{pid}/cmdline", "rb").read().startswith(b"devbox-debug-adapter"):
                os.kill(int(pid), signal.SIGKILL)
        except OSError:
            pass
"""


def test_a_taken_port_and_a_client_of_another_protocol_get_one_line_each(project, python_image, site_packages):
    debug_port = django_project(project, site_packages)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", debug_port))
        holder.listen(1)
        taken = project.run("up", timeout=60)
        doctor = project.run("doctor", timeout=60)
    assert f"debugger: port {debug_port} is in use by another program" in doctor.stderr, doctor.stderr
    assert taken.returncode == 1, taken.stderr
    assert taken.stderr.strip().splitlines() == [
        f"devbox: debugger: port {debug_port} is already in use on this machine: stop what uses it, or set "
        "`debugger: {port: N}` in devbox.yaml"], taken.stderr
    assert project.container() is None  # nothing was made

    run = project.up()
    run.wait_for(r"debugger: attach a client", timeout=60)
    run.wait_for(r"ready in", timeout=60)
    doctor = project.run("doctor", timeout=60)
    assert f"debugger: `devbox up` listens at 127.0.0.1:{debug_port}" in doctor.stderr, doctor.stderr
    with socket.create_connection(("127.0.0.1", debug_port)) as browser:
        browser.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        try:
            answer = browser.recv(100)
        except ConnectionResetError:  # closed with its request unread
            answer = b""
        assert answer == b""  # no answer: closed
    line = run.wait_for(r"does not speak the Debug Adapter Protocol")
    assert line == (f"devbox: debugger: a client at 127.0.0.1:{debug_port} does not speak the Debug Adapter Protocol "
                    "(it sent 'GET / HTTP/1.1'): attach with a DAP client, such as VS Code's Python debugger")
    attach_and_hit(project, debug_port, "hello v1")  # the adapter never saw it: a real client attaches as before
    assert run.interrupt() == 0


# a DAP client's first message, sent as another user: what it gets back (nothing: refused)
OTHER_USER_CLIENT = """
import socket, sys
body = b'{"seq": 1, "type": "request", "command": "initialize", "arguments": {"adapterID": "x"}}'
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10) as s:
    s.sendall(b"Content-Length: %d\\r\\n\\r\\n" % len(body) + body)
    try:
        print(len(s.recv(100)))
    except ConnectionResetError:
        print(0)
"""


def test_only_the_user_who_runs_up_may_attach(project, python_image, site_packages):
    """debugpy asks a client for nothing, and an attached client runs code in the container: a client of
    another local user (`nobody`, as a red team tried) is refused with one line naming its uid."""
    import subprocess
    import sys

    debug_port = django_project(project, site_packages)
    run = project.up()
    run.wait_for(r"debugger: attach a client", timeout=60)
    run.wait_for(r"ready in", timeout=60)
    other = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
                            OTHER_USER_CLIENT, str(debug_port)], capture_output=True, text=True, timeout=30)
    assert other.stdout.strip() == "0", other.stdout + other.stderr  # no answer: closed
    line = run.wait_for(r"debugger: refused a client")
    assert line == (f"devbox: debugger: refused a client at 127.0.0.1:{debug_port} run by uid 65534: only uid "
                    f"{os.getuid()}, who runs `devbox up`, may attach (an attached client runs code in the container)")
    attach_and_hit(project, debug_port, "hello v1")  # its own user attaches as before
    assert run.interrupt() == 0


LAUNCH_WITH_COMMENTS = """\
{
    // the team's own
    "version": "0.2.0",
    "configurations": [
        {"name": "Python: Current File", "type": "debugpy", "request": "launch", "program": "${file}"},
    ]
}
"""


def test_init_vscode_merges_the_attach_configuration_and_keeps_the_file(tmp_path):
    import subprocess
    import sys

    from conftest import ROOT

    (tmp_path / "devbox.yaml").write_text("name: vs\nimage: x\ncommand: python3 app.py\nworkdir: /srv\n"
                                          "debugger: {port: 5700}\n")
    launch = tmp_path / ".vscode" / "launch.json"
    launch.parent.mkdir()
    launch.write_text(LAUNCH_WITH_COMMENTS)

    def init() -> str:
        done = subprocess.run([sys.executable, "-m", "devbox", "init", "--vscode"], cwd=tmp_path, capture_output=True,
                              text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
        assert done.returncode == 0, done.stderr
        return done.stderr.strip()

    assert init() == 'devbox: added "devbox: attach" to .vscode/launch.json (remoteRoot /srv, port 5700)'
    text = launch.read_text()
    assert "// the team's own" in text and "Python: Current File" in text  # never clobbered
    from devbox.init import _without_comments

    configurations = json.loads(_without_comments(text))["configurations"]
    assert configurations[0] == {"name": "devbox: attach", "type": "debugpy", "request": "attach",
                                 "connect": {"host": "127.0.0.1", "port": 5700},
                                 "pathMappings": [{"localRoot": "${workspaceFolder}", "remoteRoot": "/srv"}]}
    assert len(configurations) == 2
    assert init() == 'devbox: "devbox: attach" is already in .vscode/launch.json (remoteRoot /srv, port 5700)'
    assert launch.read_text() == text


def test_debugger_config_and_its_errors(tmp_path):
    from devbox.config import Debugger, load
    from devbox.errors import ConfigError

    base = "name: d\nimage: x\ncommand: python3 app.py\n"
    cases = {"": None, "debugger: false\n": None, "debugger: true\n": Debugger(5678, False),
             "debugger: {port: 5679, wait: true}\n": Debugger(5679, True)}
    for text, expected in cases.items():
        (tmp_path / "devbox.yaml").write_text(base + text)
        assert load(tmp_path / "devbox.yaml").debugger == expected, text
    (tmp_path / "devbox.yaml").write_text(base + "debugger: {port: 70000}\n")
    with pytest.raises(ConfigError) as e:
        load(tmp_path / "devbox.yaml")
    assert "debugger.port" in str(e.value.problems[0]), e.value.problems


def test_a_python_too_old_for_debugpy_ends_up_with_one_line(project, old_python_image):
    project.config(f"""\
        name: {{name}}
        image: {old_python_image}
        ports: ["{{port}}:8000"]
        command: python3 -m http.server 8000
        debugger: {{{{port: {free_port()}}}}}
        """)
    run = project.up()
    assert run.wait(60) == 1, run.output
    errors = [line for line in run.lines if "debugger" in line]
    assert errors == ["devbox: debugger: the image's Python 3.9 is older than debugpy supports: use an image with "
                      "Python 3.10 or newer, or turn `debugger` off"], run.output
    assert "Traceback" not in run.output
