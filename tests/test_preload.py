"""The preloaded restart (preload.py, preloader.py) against a real engine: correct before fast.

Each test waits until the preloader has taken in what the first server imported ("warm"), then
checks what a user sees: the page, the processes, devbox's lines. DEVBOX_TRACE=1 says how each
start was made ("start exec (preloaded)" or "(cold)")."""

from __future__ import annotations

import pytest

from apps import make_django_app, make_fastapi_app, value_module
from conftest import http_get, wait_http, wait_until
from test_frameworks import DJANGO_CONFIG, thread_starts

TRACE = {"DEVBOX_TRACE": "1"}
PLAIN = """\
name: {name}
image: devbox-test/python:bookworm
mounts: [".:/app", "LIB:/pylib:ro"]
env: {{PYTHONPATH: /pylib, GREETING: hi}}
ports: ["{port}:8000"]
stop_timeout: 1
command: python3 app.py
ready: {{http: /}}
"""
# a stdlib server whose page is VALUE (a project module) plus what the libraries outside the project say
APP = """\
import http.server
import signal

import libs
from value import VALUE

if IGNORE_TERM:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{VALUE} {libs.describe()}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


http.server.HTTPServer(("0.0.0.0", 8000), Page).serve_forever()
"""
LIBS = {
    "libs.py": "import lib_env, lib_file, lib_sock, lib_thread\n\n"
               "def describe():\n"
               "    return ' '.join((lib_env.GREETING, lib_file.LIB, lib_sock.describe(), lib_thread.describe()))\n",
    "lib_env.py": "import os\n\nGREETING = os.environ['GREETING']  # read once, at import\n",
    "lib_file.py": "LIB = 'lib-a'\n",
    # the traps: a socket and a thread made at import belong to the process that imported the module
    "lib_sock.py": "import os, socket\n\nA, B = socket.socketpair()\nPID = os.getpid()\n\n"
                   "def describe():\n    return 'sock-own' if PID == os.getpid() else 'sock-inherited'\n",
    "lib_thread.py": "import threading, time\n\nT = threading.Thread(target=time.sleep, args=(3600,), daemon=True)\n"
                     "T.start()\n\ndef describe():\n    return 'thread-alive' if T.is_alive() else 'thread-dead'\n",
}


def plain_project(project, tmp_path, ignore_term: bool = False) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    for name, text in LIBS.items():
        (lib / name).write_text(text)
    project.config(PLAIN.replace("LIB", str(lib)))
    project.write("app.py", f"IGNORE_TERM = {ignore_term}\n" + APP)
    project.write("value.py", value_module("v0"))


def served(project, run, text: str, page: str = "/") -> None:
    try:
        wait_http(project.port, text, page)
    except AssertionError as e:
        raise AssertionError(f"{e}; output:\n{run.output}") from None


def warm(project, run, value_file: str, page: str = "/") -> int:
    """Save until a start is made by a fork from a preloader that holds what an earlier server
    imported; the number of saves made. The first start is cold; the first fork records its imports
    for the preloader when an event comes after them (a request, here the polling of the page)."""
    holds = r"trace: (the preloader now holds|preloader ready,) \d{3,} modules"
    run.wait_for(r"ready in [\d.]+s \(start\)", timeout=60)
    for i in range(1, 5):
        held = run.count(holds) > 0
        project.write(value_file, value_module(f"warm{i}"))
        served(project, run, f"warm{i}", page)
        line = run.wait_for(r"trace: seen->act", count=i)
        if held and "(preloaded)" in line:
            return i
        if "(preloaded)" in line:
            wait_until(lambda: http_get(project.port, page) and run.count(holds), 20,
                       "the preloader to take in what the forked server imported")
    raise AssertionError("no start was preloaded by a warm preloader:\n" + run.output)


def save(project, run, value_file: str, value: str, saves: int, page: str = "/", expect: str = "") -> str:
    """One more save of VALUE; waits for the page to show `expect` (VALUE itself by default); the
    trace line of that restart."""
    project.write(value_file, value_module(value))
    served(project, run, expect or value, page)
    return run.wait_for(r"trace: seen->act", count=saves)


def test_django_restarts_by_a_fork_serve_every_edit_and_run_ready_once_per_start(project, python_image, site_packages):
    make_django_app(project.path, site_packages)
    project.config(DJANGO_CONFIG.replace("SITE", str(site_packages)))
    run = project.up(env=TRACE)
    run.wait_for(r"ready in [\d.]+s \(start\)", timeout=60)
    saves = warm(project, run, "mysite/value.py", "/hello/")
    for version in ("v2", "v3"):
        saves += 1
        assert "(preloaded)" in save(project, run, "mysite/value.py", version, saves, "/hello/", f"hello {version}")
    # AppConfig.ready's `RUN_MAIN == "true"` branch: once per start, never in the preloader
    wait_until(lambda: thread_starts(project) == saves + 1, 10, "one AppConfig.ready thread per start")
    assert len(project.servers("manage.py runserver")) == 1
    assert "killed it" not in run.output  # SIGTERM reached the forked server: it stopped at once
    assert "preload off" not in run.output
    assert run.interrupt() == 0


def test_the_first_start_is_cold_and_a_forked_one_teaches_the_preloader(project, python_image, site_packages):
    # A new preloader knows nothing to import yet, so waiting for it would only delay the first start:
    # that start is cold (devbox's plain exec). The first fork records what it imports for the
    # preloader, and the next save is a fork from a warm preloader.
    make_django_app(project.path, site_packages)
    project.config(DJANGO_CONFIG.replace("SITE", str(site_packages)))
    run = project.up(env=TRACE)
    run.wait_for(r"ready in [\d.]+s \(start\)", timeout=60)
    [server] = project.servers("manage.py runserver")
    assert server["ppid"] not in {row["pid"] for row in project.preloaders()}, "the first start was forked"
    saves = warm(project, run, "mysite/value.py", "/hello/")
    assert saves <= 3, run.output
    assert "preload off" not in run.output
    # the settings (the project's own) are held warm: said once, with what it means and the way out
    held = run.lines_matching(r"(preload: on; the warm process holds the project's mysite, mysite\.settings.*)")
    assert len(held) <= 1 and run.count(r"^devbox: preload") == len(held), run.output  # and nothing else
    assert run.interrupt() == 0


def test_threads_and_sockets_made_at_import_belong_to_the_server(project, tmp_path, python_image):
    plain_project(project, tmp_path)
    run = project.up(env=TRACE)
    served(project, run, "v0 hi lib-a sock-own thread-alive")
    saves = warm(project, run, "value.py")
    # the preloader found both traps, left those modules to the child, and still preloads the rest
    assert run.count(r"preloader restarts: lib_(sock|thread) (kept a file or socket open|started a thread)") == 2
    saves += 1
    assert "(preloaded)" in save(project, run, "value.py", "v9", saves, expect="v9 hi lib-a sock-own thread-alive")
    assert run.interrupt() == 0


def test_a_changed_library_or_environment_is_never_served_stale(project, tmp_path, python_image):
    plain_project(project, tmp_path)
    run = project.up(env=TRACE)
    saves = warm(project, run, "value.py")
    # a preloaded file outside the project changes (a package upgraded in place), then a save
    (tmp_path / "lib" / "lib_file.py").write_text("LIB = 'lib-b'\n")
    saves += 1
    save(project, run, "value.py", "v1", saves, expect="v1 hi lib-b")
    # the config's env changes: a module that read it at import must see the new value
    project.config(PLAIN.replace("LIB", str(tmp_path / "lib")).replace("GREETING: hi", "GREETING: hello"))
    served(project, run, "v1 hello lib-b")
    run.wait_for(r"trace: seen->act", count=saves + 1)
    saves += 2
    assert "(preloaded)" in save(project, run, "value.py", "v2", saves, expect="v2 hello lib-b")  # and warm again
    assert run.interrupt() == 0


def test_a_server_ignoring_sigterm_is_killed_before_the_next_fork(project, tmp_path, python_image):
    plain_project(project, tmp_path, ignore_term=True)
    run = project.up(env=TRACE)
    saves = warm(project, run, "value.py")
    saves += 1
    assert "(preloaded)" in save(project, run, "value.py", "v5", saves)
    assert run.count(r"server ignored SIGTERM for 1s; killed it") == saves
    assert len(project.servers("app.py")) == 1
    assert "Address already in use" not in run.output
    assert run.interrupt() == 0


FLASK_RUN = """\
import re, sys
from flask.cli import main
if __name__ == "__main__":
    sys.argv[0] = re.sub(r"(-script\\.pyw|\\.exe)?$", "", sys.argv[0])
    sys.exit(main())
"""
FLASK_APP = """\
from flask import Flask
from value import VALUE
app = Flask(__name__)

@app.get("/")
def index():
    return VALUE

if __name__ == "__main__":
    app.run(host="0.0.0.0", port=8000)
"""


@pytest.mark.parametrize("command", ["python3 app.py", "flask run --host 0.0.0.0 --port 8000",
                                     "python3 -m uvicorn main:app --host 0.0.0.0 --port 8000"],
                         ids=["flask-app.run", "flask-console-script", "uvicorn-fastapi"])
def test_flask_and_fastapi_restart_by_a_fork(project, python_image, site_packages, command):
    project.config(f"""\
        name: {{name}}
        image: devbox-test/python:bookworm
        mounts: [".:/app", "{site_packages}:/site:ro"]
        env: {{{{PYTHONPATH: /site, FLASK_APP: app, PATH: "/app/bin:/usr/local/bin:/usr/bin:/bin"}}}}
        ports: ["{{port}}:8000"]
        command: {command}
        """)
    if "uvicorn" in command:
        make_fastapi_app(project.path)
        page = "/hello/"
    else:
        project.write("app.py", FLASK_APP)
        project.write("bin/flask", "#!/usr/bin/python3\n" + FLASK_RUN).chmod(0o755)  # as pip writes it
        project.write("value.py", value_module("v1"))
        page = "/"
    run = project.up(env=TRACE)
    saves = warm(project, run, "value.py", page)
    saves += 1
    assert "(preloaded)" in save(project, run, "value.py", "v7", saves, page)
    assert "preload off" not in run.output and "cold start" not in run.output
    assert run.interrupt() == 0


def test_preload_true_says_why_a_shell_command_starts_cold(project, busybox_image):
    project.config("""\
        name: {name}
        image: devbox-test/busybox:1
        ports: ["{port}:8000"]
        preload: true
        command: echo started && exec httpd -f -p 8000 -h /app/www
        """)
    project.write("www/index.html", "one\n")
    run = project.up()
    run.wait_for(r"ready in .*\(start\)")
    assert run.count(r"^devbox: preload off: the command needs a shell") == 1
    wait_http(project.port, "one")
    assert run.interrupt() == 0


def test_preload_true_in_an_image_without_python_starts_cold_and_says_why_once(project, busybox_image):
    project.config("""\
        name: {name}
        image: devbox-test/busybox:1
        ports: ["{port}:8000"]
        preload: true
        command: [httpd, -f, -p, "8000", -h, /app/www]
        """)
    project.write("www/index.html", "one\n")
    run = project.up(env=TRACE)
    run.wait_for(r"ready in .*\(start\)")
    wait_http(project.port, "one")
    project.write("www/index.html", "two\n")
    run.wait_for(r"ready in .*\(www/index.html changed\)")
    wait_http(project.port, "two")
    assert run.count(r"^devbox: preload off: the image has no python3") == 1, run.output
    assert "cannot run" not in run.output and "preload: " not in run.output
    assert run.interrupt() == 0


RESET_CLIENT = r"""
import marshal, os, socket, struct, sys
argv = sys.argv[1:]
conn = socket.socket(socket.AF_UNIX)
conn.connect("/.devbox/preload.sock")
env = {"PATH": os.environ["PATH"], "DEVBOX_SERVER_ID": "reset-test"}
payload = marshal.dumps((argv, env, "/app", 0o22))
null = os.open("/dev/null", os.O_RDWR)
conn.sendmsg([struct.pack("!I", len(payload)), payload],
             [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("3i", null, null, null))])
conn.settimeout(10)
print(conn.recv(64, socket.MSG_PEEK).decode().strip())  # the pid line is there, unread
conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
conn.close()  # as a client killed before it read its pid: the preloader gets a connection reset
"""


def test_a_client_gone_before_it_read_its_pid_ends_its_child_and_the_preloader_lives_on(project, tmp_path, python_image):
    # The stop's SIGTERM can reach a client between its request and its reading of the pid line.
    plain_project(project, tmp_path)
    run = project.up(env=TRACE)
    saves = warm(project, run, "value.py")
    [preloader] = project.preloaders()
    result = project.container().exec_run(["python3", "-c", RESET_CLIENT, "python3", "app.py"])
    assert result.output.decode().startswith("pid "), result.output
    child = result.output.decode().split()[1]
    container = project.container()
    wait_until(lambda: container.exec_run(["sh", "-c", f"kill -0 {child}"]).exit_code != 0, 10,
               "the preloader to end the child of the client that went away")
    assert [row["pid"] for row in project.preloaders()] == [preloader["pid"]], run.output
    saves += 1
    assert "(preloaded)" in save(project, run, "value.py", "v8", saves, expect="v8 hi lib-a")
    assert "preload off" not in run.output
    assert run.interrupt() == 0
