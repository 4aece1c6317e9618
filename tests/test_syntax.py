"""Never restart into a syntax error: the old server keeps serving until the file parses again."""

from __future__ import annotations

from conftest import http_get, wait_http

from devbox.syntax import host_errors

SERVER = """\
import http.server, os
MESSAGE = "{message}"

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{{MESSAGE}} from {{os.getpid()}}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

print("serving", flush=True)
http.server.ThreadingHTTPServer(("0.0.0.0", 8000), Handler).serve_forever()
"""


def test_a_save_that_does_not_parse_keeps_the_old_server_serving(project, python_image):
    project.config("name: {name}\nimage: devbox-test/python:bookworm\nports: ['{port}:8000']\n"
                   "command: python3 app.py\nready: {{http: /}}\n")
    project.write("app.py", SERVER.format(message="v1"))
    run = project.up()
    run.wait_for(r"ready in .*\(start\)")
    before = wait_http(project.port, "v1")
    project.write("app.py", SERVER.format(message="v2").replace("class Handler(", "class Handler(("))
    run.wait_for(r"^devbox: app.py:4: SyntaxError: ")
    run.wait_for(r"kept the running server: save a fix and it restarts")
    assert http_get(project.port) == before  # the same server, same pid, still answering
    assert run.count("^serving$") == 1 and run.count("exited with code") == 0
    project.write("app.py", SERVER.format(message="v3"))
    run.wait_for(r"ready in .*\(app.py changed\)")
    assert wait_http(project.port, "v3") != before
    assert run.interrupt() == 0


def test_without_python_in_the_container_nothing_is_held_back(project, busybox_image):
    # the container's grammar decides; with no python3 there is no verdict, and the restart goes ahead
    project.config("name: {name}\nimage: devbox-test/busybox:1\nports: ['{port}:8000']\n"
                   "command: echo started; exec httpd -f -p 8000 -h /app\n")
    run = project.up()
    run.wait_for(r"ready in .*\(start\)")
    project.write("helper.py", "def broken(:\n")
    run.wait_for(r"ready in .*\(helper.py changed\)")
    run.wait_for("^started$", count=2)  # (its output may come a moment after the ready line)
    assert run.count("kept the running server") == 0 and run.count("^started$") == 2
    assert run.interrupt() == 0


def test_the_host_check_holds_only_when_every_changed_file_fails(tmp_path):
    (tmp_path / "good.py").write_text("x = 1\n")
    (tmp_path / "bad.py").write_text("def f(:\n    pass\n")
    (tmp_path / "indent.py").write_text("def f():\nreturn 1\n")
    assert host_errors(tmp_path, {"bad.py", "indent.py", "notes.txt"}) == [
        ("bad.py", "bad.py:1: SyntaxError: invalid syntax"),
        ("indent.py", "indent.py:2: IndentationError: expected an indented block after function definition on line 1"),
    ]
    assert host_errors(tmp_path, {"bad.py", "good.py"}) == []  # one parses: restart as usual
    assert host_errors(tmp_path, {"gone.py", "bad.py"}) == []  # a deleted file is not a syntax matter
    assert host_errors(tmp_path, {"notes.txt"}) == []
