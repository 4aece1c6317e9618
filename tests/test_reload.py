"""The reload loop against a real Docker engine: `devbox up` as a subprocess, edits, and what a user sees."""

from __future__ import annotations

import signal
import time

import pytest

from conftest import free_port, http_get, wait_http, wait_until

BUSYBOX_APP = """\
name: {name}
image: devbox-test/busybox:1
ports: ["{port}:8000"]
command: echo started; exec httpd -f -p 8000 -h /app/www
"""


def busybox_project(project, extra: str = "", command: str | None = None):
    text = BUSYBOX_APP + extra
    if command:
        text = text.replace("command: echo started; exec httpd -f -p 8000 -h /app/www", f"command: {command}")
    project.config(text)
    project.write("www/index.html", "hello v1\n")
    return project


def test_edit_restarts_only_the_server(project, busybox_image):
    busybox_project(project)
    run = project.up()
    run.wait_for(r"ready in [\d.]+s \(start\)")
    wait_http(project.port, "hello v1")
    container = project.container()
    started_at = container.attrs["State"]["StartedAt"]
    first = project.processes("httpd")
    assert len(first) == 1

    project.write("notes.txt", "edit\n")
    run.wait_for(r"ready in [\d.]+s \(notes.txt changed\)")
    run.wait_for("^started$", count=2)  # (its output may come a moment after the ready line)
    assert run.count("^started$") == 2
    after = project.processes("httpd")
    assert len(after) == 1 and after[0]["pid"] != first[0]["pid"]
    container.reload()
    assert container.id == project.container().id
    assert container.attrs["State"]["StartedAt"] == started_at
    assert run.interrupt() == 0


def test_burst_of_500_files_gives_one_restart(project, busybox_image):
    busybox_project(project)
    run = project.up()
    run.wait_for(r"ready in .*\(start\)")
    for i in range(500):
        project.write(f"burst/f{i}.txt", f"{i}\n")
    run.wait_for(r"ready in .*\(burst/f\d+\.txt and 499 more changed\)")
    # one restart, and nothing queued behind it: a change now is the next single restart
    project.write("after.txt", "x\n")
    run.wait_for(r"ready in .*\(after.txt changed\)")
    run.wait_for("^started$", count=3)
    assert run.count("^started$") == 3, run.output
    assert run.interrupt() == 0


STOP_METHODS = pytest.mark.parametrize("stop_method", ["auto", "exec"], ids=["host-signal", "second-exec"])


@STOP_METHODS
def test_server_ignoring_sigterm_is_killed_after_stop_timeout(project, busybox_image, stop_method):
    # `trap "" TERM` is inherited as ignored by httpd, so only SIGKILL ends this tree
    busybox_project(project, extra="stop_timeout: 1\n",
                    command="trap '' TERM; echo started; httpd -f -p 8000 -h /app/www")
    run = project.up(env={"DEVBOX_STOP": stop_method, "DEVBOX_TRACE": "1"})
    run.wait_for(r"ready in .*\(start\)")
    old = project.processes("httpd")
    assert len(old) == 1
    began = time.monotonic()
    project.write("www/index.html", "hello v2\n")
    run.wait_for(r"ignored SIGTERM for 1s; killed it")
    run.wait_for(r"ready in .*\(www/index.html changed\)")
    assert time.monotonic() - began >= 1.0
    assert run.count(f"trace: .* stop \\({'host' if stop_method == 'auto' else 'exec'}\\)") == 1, run.output
    new = project.processes("httpd")
    assert len(new) == 1 and new[0]["pid"] != old[0]["pid"]
    assert run.interrupt() == 0


PYTHON_APP = """\
name: {name}
image: devbox-test/python:bookworm
ports: ["{port}:8000"]
ready: {{http: /}}
"""


def test_exit_code_3_restarts_at_once(project, python_image):
    project.config(PYTHON_APP + "command: python3 server.py\n")
    project.write("server.py", """\
        import http.server, os, threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = f"pid {os.getpid()}".encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                if self.path == "/exit3":
                    threading.Thread(target=lambda: os._exit(3)).start()

        print("serving", flush=True)
        http.server.ThreadingHTTPServer(("0.0.0.0", 8000), Handler).serve_forever()
        """)
    run = project.up()
    run.wait_for(r"ready in .*\(start\)")
    first = wait_http(project.port, "pid")
    http_get(project.port, "/exit3")
    run.wait_for(r"ready in .*\(server asked to restart \(exit 3\)\)")
    second = wait_http(project.port, "pid")
    assert second != first
    assert run.count("exited with code") == 0
    assert run.interrupt() == 0


def test_crash_waits_for_a_change_then_serves_again(project, python_image):
    project.config(PYTHON_APP + "command: [python3, -m, app]\n")
    project.write("app.py", """\
        import http.server
        MESSAGE = "v1"
        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200); self.end_headers(); self.wfile.write(MESSAGE.encode())
        print("starting", flush=True)
        http.server.HTTPServer(("0.0.0.0", 8000), H).serve_forever()
        """)
    run = project.up()
    run.wait_for(r"ready in .*\(start\)")
    wait_http(project.port, "v1")
    project.write("app.py", "raise RuntimeError('broken at import')\n")
    run.wait_for(r"server exited with code 1; last lines:")
    run.wait_for(r"\| RuntimeError: broken at import")
    run.wait_for(r"waiting for a change")
    starts = run.count("^starting$")
    # no restart loop: the container stays, nothing restarts the crashed server on its own
    time.sleep(1.5)  # an observation window for something that must NOT happen
    assert run.count("^devbox: server exited with code") == 1
    assert run.count("^starting$") == starts
    project.write("app.py", (project.path / "app.py").read_text().replace("raise RuntimeError('broken at import')", "") +
                  'import http.server\nclass H(http.server.BaseHTTPRequestHandler):\n'
                  '    def do_GET(self):\n        self.send_response(200); self.end_headers(); self.wfile.write(b"v2")\n'
                  'http.server.HTTPServer(("0.0.0.0", 8000), H).serve_forever()\n')
    wait_http(project.port, "v2")
    run.wait_for(r"ready in .*\(app.py changed\)")
    assert run.interrupt() == 0


@STOP_METHODS
def test_forked_children_leave_no_process_behind(project, python_image, stop_method):
    project.config("""\
        name: {name}
        image: devbox-test/python:bookworm
        ports: ["{port}:8000"]
        command: python3 -m http.server 8000 & python3 -c 'import time; time.sleep(600)' & wait
        """)
    run = project.up(env={"DEVBOX_STOP": stop_method, "DEVBOX_TRACE": "1"})
    run.wait_for(r"ready in .*\(start\)")

    def servers():
        return [p for p in project.processes("python3") if p["args"].startswith("python3")]

    before = servers()
    assert len(before) == 2
    project.write("touch.txt", "x\n")
    run.wait_for(r"ready in .*\(touch.txt changed\)")
    assert run.count(f"trace: .* stop \\({'host' if stop_method == 'auto' else 'exec'}\\)") == 1, run.output
    after = servers()
    assert len(after) == 2, after
    assert not {p["pid"] for p in before} & {p["pid"] for p in after}
    assert len({p["pgid"] for p in after}) == 1
    assert run.interrupt() == 0


def test_ctrl_c_stops_container_and_second_up_reuses_it(project, busybox_image):
    busybox_project(project)
    run = project.up()
    run.wait_for(r"creating container")
    run.wait_for(r"ready in .*\(start\)")
    container_id = project.container().id
    assert run.interrupt() == 0
    assert project.container().status == "exited"

    second = project.up()
    second.wait_for(r"start(ed|ing) container")
    second.wait_for(r"ready in .*\(start\)")
    wait_http(project.port, "hello v1")
    assert project.container().id == container_id
    second.proc.send_signal(signal.SIGTERM)
    assert second.wait() == 0
    assert project.container().status == "exited"

    down = project.run("down")
    assert down.returncode == 0, down.stderr
    assert "removed container" in down.stderr
    assert project.container() is None


def leave_a_server_behind(project) -> None:
    """`devbox up`, then kill -9 it: the server outlives it (an exec client's death does not reach inside).
    The server writes `got-term` into the project folder when it gets SIGTERM."""
    busybox_project(project, extra="watch: {{ignore: [term.txt]}}\n",
                    command="trap 'echo got-term > /app/term.txt; kill $pid; exit 0' TERM; "
                            "httpd -f -p 8000 -h /app/www & pid=$!; echo started; wait")
    run = project.up()
    run.wait_for(r"ready in .*\(start\)")
    run.proc.send_signal(signal.SIGKILL)
    run.wait()
    assert len(httpd(project)) == 1


def httpd(project) -> list[dict]:
    return [p for p in project.processes("httpd") if p["args"].startswith("httpd")]


def test_kill_9_then_up_gives_one_server(project, busybox_image):
    leave_a_server_behind(project)

    second = project.up()
    second.wait_for(r"reusing container")
    second.wait_for(r"ended a server left running")
    second.wait_for(r"ready in .*\(start\)")
    assert len(httpd(project)) == 1
    assert second.interrupt() == 0


def test_down_ends_a_left_behind_server(project, busybox_image):
    leave_a_server_behind(project)
    down = project.run("down")
    assert down.returncode == 0, down.stderr
    assert (project.path / "term.txt").read_text() == "got-term\n"  # ended by its stop_signal, not by the removal
    assert project.container() is None
    assert http_get(project.port) is None


def test_recreate_only_when_container_keys_change(project, busybox_image):
    busybox_project(project)
    run = project.up()
    run.wait_for(r"ready in .*\(start\)")
    first_id = project.container().id
    assert run.interrupt() == 0

    # command, ready and watch live outside the container: same container
    text = (project.path / "devbox.yaml").read_text()
    project.write("devbox.yaml", text.replace("echo started;", "echo started; echo again;") +
                  "ready: {tcp: 8000}\nwatch: {debounce_ms: 20}\n")
    run = project.up()
    run.wait_for(r"ready in .*\(start\)")
    run.wait_for(r"^again$")  # the new command is the one that ran
    assert project.container().id == first_id
    assert run.interrupt() == 0

    # a new port needs a new container, and devbox says why
    other = project.port
    project.port = free_port()  # not other + 1: a neighbour of a free port may be taken (CI hit one)
    project.write("devbox.yaml", (project.path / "devbox.yaml").read_text().replace(f"{other}:8000", f"{project.port}:8000"))
    run = project.up()
    run.wait_for(r"recreating container devbox-dbt-\w+: ports changed")
    run.wait_for(r"ready in .*\(start\)")
    assert project.container().id != first_id
    wait_http(project.port, "hello v1")
    assert run.interrupt() == 0


def test_a_crash_ends_what_the_server_left_running(project, busybox_image):
    busybox_project(project, command="sleep 600 & echo crashing; exit 1")
    run = project.up()
    run.wait_for(r"server exited with code 1; last lines:")
    run.wait_for(r"\| crashing")
    wait_until(lambda: project.processes("sleep 600") == [], 10, "the crashed server's child to be ended")
    assert project.container().status == "running"
    assert run.interrupt() == 0


def test_a_second_up_for_the_same_project_is_refused(project, busybox_image):
    busybox_project(project)
    run = project.up()
    run.wait_for(r"ready in .*\(start\)")
    second = project.run("up")
    assert second.returncode == 2
    assert f"`devbox up` already runs for project '{project.name}' (pid {run.proc.pid})" in second.stderr
    wait_http(project.port, "hello v1")  # the first one is untouched
    assert run.interrupt() == 0
