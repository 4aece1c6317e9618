"""A preloaded start is indistinguishable from a cold one: the differential test (SPEC, Preload).

One probe program writes down everything it can observe about how it was started, then serves. In
one `devbox up`, the first start is cold (devbox's own cold start, the same exec as `preload: false`)
and later starts are forks from a warm preloader; the two views are compared key by key. The only
keys left out are the ones a second cold start would change too (pids, the start's token value)."""

from __future__ import annotations

import json
import re

import pytest

from apps import value_module
from conftest import http_get, wait_http, wait_until

TRACE = {"DEVBOX_TRACE": "1"}

PROBE = r'''
import gc, io, json, os, resource, signal, sys, threading

import value


def main_view():
    main = sys.modules["__main__"]
    g = vars(main)
    return {"keys": sorted(g), "order": [k for k in g if k.startswith("__")], "file": g.get("__file__"),
            "name": g.get("__name__"), "package": g.get("__package__"), "cached": g.get("__cached__"),
            "spec": getattr(g.get("__spec__"), "name", repr(g.get("__spec__"))),
            "loader": type(g.get("__loader__")).__name__ + "/" + getattr(g.get("__loader__"), "__name__", ""),
            "builtins": getattr(g.get("__builtins__"), "__name__", type(g.get("__builtins__")).__name__),
            "is_this": main.__dict__ is globals()}


def fd_kind(fd):
    target = os.readlink(f"/proc/self/fd/{fd}")
    return target.split("[")[0]  # pipe:[123] -> pipe:


def status(field):
    with open("/proc/self/status") as f:
        return next(line.split()[1] for line in f if line.startswith(field + ":"))


def stream(s):
    return {"type": type(s).__name__, "buffer": type(getattr(s, "buffer", None)).__name__,
            "raw": getattr(getattr(getattr(s, "buffer", None), "raw", getattr(s, "buffer", None)), "name", None),
            "encoding": s.encoding, "errors": s.errors, "line_buffering": s.line_buffering,
            "write_through": s.write_through, "mode": getattr(s, "mode", None), "fileno": s.fileno(),
            "dunder": s is getattr(sys, "__%s__" % ("stdin" if s.fileno() == 0 else "stdout" if s.fileno() == 1 else "stderr"))}


def environ(items):
    return [(k, "<token>" if k == "DEVBOX_SERVER_ID" else v) for k, v in items]


with open("/proc/self/environ", "rb") as f:
    proc_env = [item.decode().partition("=")[::2] for item in f.read().split(b"\0") if item]
with open("/proc/self/cmdline", "rb") as f:
    cmdline = f.read().split(b"\0")
with open("/proc/self/comm") as f:
    comm = f.read().strip()
umask = os.umask(0)
os.umask(umask)
handlers = {}
for s in signal.valid_signals():
    h = signal.getsignal(s)
    handlers[str(int(s))] = h if h is None or isinstance(h, int) else getattr(h, "__name__", repr(h))
view = {
    "value": value.VALUE, "argv": sys.argv, "orig_argv": getattr(sys, "orig_argv", None),
    "executable": sys.executable, "flags": repr(sys.flags), "warnoptions": sys.warnoptions,
    "xoptions": sys._xoptions, "path": sys.path, "cwd": os.getcwd(), "main": main_view(),
    "os_environ": environ(os.environ.items()), "proc_environ": environ(proc_env),
    "cmdline": [c.decode() for c in cmdline], "comm": comm, "umask": umask,
    "signals": handlers, "sigblk": status("SigBlk"), "sigign": status("SigIgn"), "sigcgt": status("SigCgt"),
    "fds": sorted((int(fd), fd_kind(fd)) for fd in os.listdir("/proc/self/fd") if int(fd) != 3),
    "rlimits": {name: resource.getrlimit(getattr(resource, name)) for name in dir(resource) if name.startswith("RLIMIT_")},
    "group_leader": os.getpgid(0) == os.getpid(), "session_leader": os.getsid(0) == os.getpid(),
    "threads": threading.active_count(), "tasks": len(os.listdir("/proc/self/task")),
    "main_thread": threading.current_thread() is threading.main_thread(),
    "gc": [gc.isenabled(), gc.get_freeze_count(), gc.get_threshold()],
    "fsencoding": [sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()],
    "stdin": stream(sys.stdin), "stdout": stream(sys.stdout), "stderr": stream(sys.stderr),
    "run_main": os.environ.get("RUN_MAIN"), "name": __name__, "spec": getattr(__spec__, "name", None),
    "dont_write_bytecode": sys.dont_write_bytecode,
}
with open("/app/view.json.tmp", "w") as f:
    json.dump(view, f)
os.replace("/app/view.json.tmp", "/app/view.json")

import http.server


class Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/boom":
            raise_later.append(1)
        body = value.VALUE.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


raise_later = []
http.server.HTTPServer(("0.0.0.0", 8000), Page).serve_forever()
'''

CONFIG = """\
name: {{name}}
image: devbox-test/python:bookworm
env: {{{{PATH: "/app/bin:/usr/local/bin:/usr/bin:/bin", LANG: ""}}}}
ports: ["{{port}}:8000"]
stop_timeout: 2
preload: true
command: {command}
ready: {{{{http: /}}}}
watch: {{{{ignore: ["view.json*"]}}}}
"""

COMMANDS = {
    "script": "python3 probe.py --flag x",
    "options": "python3 -B -X dev -W ignore::DeprecationWarning probe.py",
    "module": "python3 -m probe --flag",
    "console-script": "probe-script --flag",
    "list-form": '["python3", "./probe.py", "an arg"]',
}


def preloaded_view(project, run) -> dict:
    """Save until a start is a fork from a preloader that holds what an earlier fork imported; its view."""
    holds = r"trace: the preloader now holds \d+ modules"
    for i in range(1, 6):
        held = run.count(holds) > 0
        project.write("value.py", value_module(f"v{i}"))
        wait_http(project.port, f"v{i}")
        line = run.wait_for(r"trace: seen->act", count=i)
        view = wait_until(lambda: (v := read_view(project)) and v["value"] == f"v{i}" and v, 10, "the probe's view")
        if held and "(preloaded)" in line:
            return view
        if "(preloaded)" in line:
            wait_until(lambda: http_get(project.port) and run.count(holds), 20,
                       "the preloader to take in the imports; output:\n" + run.output)
    raise AssertionError("no start was preloaded:\n" + run.output)


def read_view(project) -> dict | None:
    try:
        return json.loads((project.path / "view.json").read_text())
    except (OSError, ValueError):
        return None


@pytest.mark.parametrize("command", COMMANDS.values(), ids=COMMANDS.keys())
def test_a_preloaded_server_sees_exactly_what_a_cold_one_sees(project, python_image, command):
    project.config(CONFIG.format(command=command))
    project.write("probe.py", PROBE)
    project.write("bin/probe-script", "#!/usr/bin/python3\nimport runpy, sys\nsys.path.insert(0, '/app')\nrunpy.run_path('/app/probe.py', run_name='__main__')\n"
                  ).chmod(0o755)
    project.write("value.py", value_module("v0"))
    run = project.up(env=TRACE)
    wait_http(project.port, "v0")
    assert "(cold)" not in run.output  # the first start: devbox's cold start
    cold = wait_until(lambda: (v := read_view(project)) and v["value"] == "v0" and v, 10, "the cold view")
    forked = preloaded_view(project, run)
    cold.pop("value"), forked.pop("value")
    differences = {key: (cold[key], forked.get(key)) for key in cold if cold[key] != forked.get(key)}
    assert differences == {}, "\n".join(f"{k}:\n  cold:   {c}\n  forked: {f}" for k, (c, f) in differences.items())
    # and `ps` shows one process with the server's command line, devbox's helpers as devbox's own
    argv = json.loads(command) if command.startswith("[") else command.split()
    shown = [r["args"] for r in project.processes("")]
    same = [args for args in shown if args == " ".join(cold["cmdline"][:-1])]
    assert len(same) == 1, shown
    # the container's keep-alive (docker-init, sleep) and devbox's own helpers, nothing else
    assert {args.split()[0] for args in shown if args not in same} <= {
        "/sbin/docker-init", "sleep", "devbox-preloader", "devbox-preload-client"}, shown
    assert argv[-1] in same[0]
    assert run.interrupt() == 0


CRASHING_APP = """\
import http.server
import value


def fail():
    raise RuntimeError("boom " + value.VALUE)


if value.VALUE.startswith("boom"):
    fail()


class Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = value.VALUE.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


http.server.HTTPServer(("0.0.0.0", 8000), Page).serve_forever()
"""


def blocks(output: str, first: str, last: str) -> list[list[str]]:
    """The runs of lines from one matching `first` to the next matching `last` (the server's own, not
    the ones devbox repeats after `  | `)."""
    found, current = [], None
    for line in output.splitlines():
        if line.startswith("devbox:"):
            continue
        if current is None and first in line:
            current = []
        if current is not None:
            current.append(line)
            if last in line:
                found.append(current)
                current = None
    return found


def test_a_preloaded_crash_prints_the_cold_traceback_and_is_checked_cold_once(project, python_image):
    project.config(CONFIG.format(command="python3 app.py"))
    project.write("app.py", CRASHING_APP)
    project.write("value.py", value_module("v0"))
    run = project.up(env=TRACE)
    wait_http(project.port, "v0")
    preloaded_view_of_pages(project, run)
    project.write("value.py", value_module("boom"))
    run.wait_for(r"server exited with code 1; last lines")
    assert run.count(r"start exec \(preloaded\)") >= 1
    assert run.count(r"^devbox: preload: the server exited with code 1 before it was ready; starting it once cold") == 1
    forked, cold = blocks(run.output, "Traceback (most recent call last):", "RuntimeError: boom boom")[-2:]
    assert forked == cold, "\n".join(forked + ["-- cold --"] + cold)
    assert forked[1:] and all("/.devbox" not in line and "runpy" not in line for line in forked), forked
    assert "preload off" not in run.output  # it fails cold too: not preloading's doing
    project.write("value.py", value_module("v9"))
    wait_http(project.port, "v9")
    assert run.interrupt() == 0


def test_a_missing_script_gets_python_s_own_line_preloaded_or_cold(project, python_image):
    project.config(CONFIG.format(command="python3 app/manage.py runserver"))
    project.write("value.py", value_module("v0"))
    run = project.up(env=TRACE)
    line = "python3: can't open file '/app/app/manage.py': [Errno 2] No such file or directory"
    run.wait_for(r"waiting for a change")
    run.wait_for(r"trace: preloader ready")
    project.write("value.py", value_module("v1"))
    run.wait_for(r"waiting for a change", count=2)
    assert run.count(r"start exec \(preloaded\)") == 1
    assert run.count("^" + re.escape(line) + "$") == 3, run.output  # cold, forked, and the cold check
    assert "Traceback" not in run.output and "FileNotFoundError" not in run.output
    assert run.interrupt() == 0


PID_LIB = "import os\n\nPID = os.getpid()  # the process that imported it\n"
PID_APP = """\
import os, sys
import libpid
if libpid.PID != os.getpid():
    sys.exit("libpid was imported by another process")
""" + CRASHING_APP


def test_a_server_that_fails_only_when_preloaded_starts_cold_from_then_on_and_devbox_remembers(
        project, python_image, tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "libpid.py").write_text(PID_LIB)
    project.config(CONFIG.format(command="python3 app.py").replace(
        'env: {{', f'mounts: [".:/app", "{lib}:/pylib:ro"]\nenv: {{{{PYTHONPATH: /pylib, '))
    project.write("app.py", PID_APP)
    project.write("value.py", value_module("v0"))
    run = project.up(env=TRACE)
    wait_http(project.port, "v0")
    preloaded_view_of_pages(project, run)  # now the preloader holds libpid
    project.write("value.py", value_module("v10"))
    wait_http(project.port, "v10")
    said = (r"^devbox: preload off: the server exited with code 1 before it was ready when preloaded, "
            r"and serves cold; starting cold from now on$")
    run.wait_for(said)
    project.write("value.py", value_module("v11"))
    wait_http(project.port, "v11")
    assert "(cold)" in run.wait_for(r"trace: seen->act", count=run.count(r"trace: seen->act") or 1)
    assert run.interrupt() == 0
    # and the next `up` knows: it says so once, and never forks
    again = project.up(env=TRACE)
    wait_http(project.port, "v11")
    project.write("value.py", value_module("v12"))
    wait_http(project.port, "v12")
    again.wait_for(said)
    assert "(preloaded)" not in again.output and again.count(said) == 1
    assert again.interrupt() == 0


def preloaded_view_of_pages(project, run) -> None:
    """Save until the preloader holds what a forked server imported (the pages answer the value)."""
    holds = r"trace: the preloader now holds \d+ modules"
    for i in range(1, 4):
        project.write("value.py", value_module(f"w{i}"))
        wait_http(project.port, f"w{i}")
        if "(preloaded)" in run.wait_for(r"trace: seen->act", count=i):
            wait_until(lambda: http_get(project.port) and run.count(holds), 20, "the preloader to take in the imports")
            return
    raise AssertionError("no start was preloaded:\n" + run.output)
