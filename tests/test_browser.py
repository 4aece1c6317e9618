"""The browser front (`browser:`), against a real engine and, where a page must reload itself, a real
browser (headless Chromium driven by Selenium): no refused request during a restart, a page that
reloads once per save when the new server is ready, and everything else passed through as it is."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import random
import socket
import struct
import threading
import time
import urllib.request

import pytest

from apps import value_module
from conftest import http_get, wait_http, wait_until

CONFIG = """\
name: {name}
image: devbox-test/python:bookworm
ports: ["{port}:8000"]
command: python3 app.py
stop_timeout: 2
BROWSER
ready: {{http: /json}}
watch:
  rules:
    - {{match: ["static/**"], action: none}}
"""
# a stdlib server that starts slowly, like a real app's imports: every restart leaves a gap
APP = r'''
import hashlib, http.server, json, os, random, socketserver, struct, base64, time

time.sleep(1.5)
from value import VALUE

BLOB = random.Random(7).randbytes(1 << 20)
PAGE = """<!doctype html>
<html><head><title>app</title><link rel="stylesheet" href="/static/site.css"></head>
<body><p id="value">%s</p>
<script>localStorage.loads = String(Number(localStorage.loads || 0) + 1);</script>
</body></html>
"""


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: without it, 40 ms a kept-alive request

    def send(self, body, kind, status=200):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/":
            return self.send((PAGE % VALUE).encode(), "text/html; charset=utf-8")
        if self.path == "/gz":
            import gzip
            body = gzip.compress((PAGE % VALUE).encode())
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            return self.wfile.write(body)
        if self.path == "/json":
            return self.send(json.dumps({"value": VALUE, "list": list(range(50))}).encode(), "application/json")
        if self.path == "/blob":
            return self.send(BLOB, "application/octet-stream")
        if self.path.startswith("/static/"):
            with open(self.path.split("?")[0].lstrip("/"), "rb") as f:
                return self.send(f.read(), "text/css")
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/json")
            self.send_header("Content-Length", "0")
            return self.end_headers()
        if self.path == "/sse":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(3):
                data = ("data: %d %f\n\n" % (i, time.time())).encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
                time.sleep(0.4)
            self.wfile.write(b"0\r\n\r\n")
            return
        if self.path == "/ws":
            return self.websocket_echo()
        self.send(b"not found", "text/plain", 404)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send(hashlib.sha256(body).hexdigest().encode(), "text/plain")

    def websocket_echo(self):
        key = self.headers["Sec-WebSocket-Key"]
        accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept.decode())
        self.end_headers()
        while True:
            head = self.rfile.read(2)
            if len(head) < 2:
                return
            opcode, length = head[0] & 0x0F, head[1] & 0x7F
            if length == 126:
                length = struct.unpack("!H", self.rfile.read(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", self.rfile.read(8))[0]
            mask = self.rfile.read(4)
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(length)))
            if opcode == 8:
                self.wfile.write(b"\x88\x00")
                return
            header = bytes([0x80 | opcode]) + (bytes([length]) if length < 126 else b"\x7e" + struct.pack("!H", length))
            self.wfile.write(header + data)
            self.wfile.flush()

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


Server(("0.0.0.0", 8000), Handler).serve_forever()
'''


def make_app(project, browser: str = "browser: true") -> None:
    project.write("app.py", APP)
    project.write("value.py", value_module("v1"))
    project.write("static/site.css", "body { color: rgb(0, 0, 1); }\n")
    project.config(CONFIG.replace("BROWSER", browser))


def fetch(port: int, path: str, method: str = "GET", body: bytes | None = None,
          headers: dict | None = None) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        answer = conn.getresponse()
        return answer.status, dict(answer.getheaders()), answer.read()
    finally:
        conn.close()


def save(project, value: str) -> None:
    """A whole-file save, as an editor that saves safely makes it."""
    (project.path / "value.py.new").write_text(value_module(value))
    os.replace(project.path / "value.py.new", project.path / "value.py")


def test_requests_during_a_restart_wait_for_the_new_server(project, python_image):
    make_app(project)
    run = project.up()
    run.wait_for(r"ready in [\d.]+s \(start\)", timeout=60)
    answers: list = []

    def ask() -> None:
        try:
            status, _, body = fetch(project.port, "/json")
            answers.append((status, json.loads(body)["value"]))
        except Exception as e:  # a refused or cut connection: what this must never give
            answers.append(repr(e))

    save(project, "v2")
    requests = []
    for _ in range(20):  # fired through the restart: the server is gone for 1.5 s of it
        thread = threading.Thread(target=ask)
        thread.start()
        requests.append(thread)
        time.sleep(0.1)
    for thread in requests:
        thread.join(40)
    assert len(answers) == 20 and all(isinstance(a, tuple) and a[0] == 200 for a in answers), answers
    assert answers[-1] == (200, "v2"), answers
    # a POST's body is kept while it waits, and reaches the new server whole
    save(project, "v3")
    payload = random.Random(3).randbytes(300_000)
    status, _, body = fetch(project.port, "/upload", "POST", payload)
    assert (status, body.decode()) == (200, hashlib.sha256(payload).hexdigest())
    assert run.interrupt() == 0


def test_bodies_streams_redirects_and_websockets_pass_through(project, python_image):
    make_app(project)
    run = project.up()
    run.wait_for(r"ready in [\d.]+s \(start\)", timeout=60)
    status, headers, blob = fetch(project.port, "/blob")
    assert status == 200 and blob == random.Random(7).randbytes(1 << 20)
    assert headers["Content-Length"] == str(1 << 20) and headers["Content-Type"] == "application/octet-stream"
    status, headers, body = fetch(project.port, "/json")
    assert body == json.dumps({"value": "v1", "list": list(range(50))}).encode()
    assert headers["Content-Length"] == str(len(body))
    status, headers, body = fetch(project.port, "/redirect")
    assert (status, headers["Location"], body) == (302, "/json", b"")
    assert fetch(project.port, "/missing")[0] == 404

    # server-sent events arrive as they are sent, not all at the end
    conn = http.client.HTTPConnection("127.0.0.1", project.port, timeout=30)
    conn.request("GET", "/sse")
    answer = conn.getresponse()
    arrivals = []
    while len(arrivals) < 3:
        line = answer.fp.readline()
        if line.startswith(b"data: "):
            arrivals.append(time.monotonic())
    conn.close()
    assert arrivals[2] - arrivals[0] > 0.6, arrivals  # 0.4 s apart at the server

    # a WebSocket echoes through the port
    with socket.create_connection(("127.0.0.1", project.port), timeout=10) as ws:
        key = base64.b64encode(os.urandom(16)).decode()
        ws.sendall(f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += ws.recv(1)
        assert head.startswith(b"HTTP/1.1 101"), head
        for text in ("hello", "x" * 1000):
            data = text.encode()
            mask = os.urandom(4)
            size = bytes([0x80 | len(data)]) if len(data) < 126 else b"\xfe" + struct.pack("!H", len(data))
            ws.sendall(b"\x81" + size + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))
            frame = b""
            want = 2 + (2 if len(data) >= 126 else 0) + len(data)
            while len(frame) < want:
                frame += ws.recv(65536)
            assert frame[0] == 0x81 and frame.endswith(data), frame[:10]
    assert run.interrupt() == 0


def test_without_browser_the_html_is_the_apps_own(project, python_image):
    make_app(project, browser="")
    run = project.up()
    run.wait_for(r"ready in [\d.]+s \(start\)", timeout=60)
    status, _, page = fetch(project.port, "/", headers={"Accept": "text/html", "Accept-Encoding": "gzip, br"})
    assert status == 200 and b"__devbox" not in page and page.startswith(b"<!doctype html>")
    assert page == fetch(project.port, "/")[2] and b'<p id="value">v1</p>\n<script>localStorage' in page
    assert run.interrupt() == 0


def test_html_gets_the_script_with_a_right_length_and_a_crash_page_reloads_on_a_fix(project, python_image):
    make_app(project)
    run = project.up()
    run.wait_for(r"ready in [\d.]+s \(start\)", timeout=60)
    status, headers, page = fetch(project.port, "/", headers={"Accept": "text/html", "Accept-Encoding": "gzip, br"})
    assert status == 200 and b'<script src="/__devbox/client.js" data-generation="1"></script></body>' in page
    assert headers["Content-Length"] == str(len(page)) and "Content-Encoding" not in headers
    status, headers, page = fetch(project.port, "/gz", headers={"Accept": "text/html", "Accept-Encoding": "gzip"})
    assert status == 200 and "Content-Encoding" not in headers and headers["Content-Length"] == str(len(page))
    assert page.startswith(b"<!doctype html>") and b"/__devbox/client.js" in page  # decoded, then injected
    project.write("value.py", "raise SystemExit(4)\n")
    run.wait_for(r"server exited with code 4", timeout=30)
    status, _, page = fetch(project.port, "/", headers={"Accept": "text/html"})
    assert status == 503 and b"The server exited with code 4" in page and b"/__devbox/client.js" in page
    save(project, "v5")
    wait_http(project.port, '<p id="value">v5</p>', "/", timeout=30)
    assert run.interrupt() == 0


# -- a real browser ---------------------------------------------------------------------------------

CHROMIUM = "/usr/lib/chromium/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not os.path.exists(CHROMIUM) or not os.path.exists(CHROMEDRIVER):
        pytest.fail("Chromium is missing: apt-get install chromium chromium-driver (.ci/run does)")
    profile = tmp_path / "chromium-profile"  # its own: a fresh localStorage, and how its processes are found
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        # Chromium's helpers (its crash handler) may outlive quit(): end what still runs with this profile
        needle = str(profile).encode()
        for pid in os.listdir("/proc"):
            try:
                if pid.isdigit() and needle in open(f"/proc/{pid}/cmdline", "rb").read():
                    os.kill(int(pid), 9)
            except OSError:
                pass


def test_an_open_page_reloads_once_per_save_when_the_new_server_is_ready(project, python_image, browser):
    make_app(project)
    run = project.up()
    run.wait_for(r"ready in [\d.]+s \(start\)", timeout=60)
    browser.get(f"http://127.0.0.1:{project.port}/")
    assert browser.find_element("id", "value").text == "v1"
    seen_error = []

    def loads() -> int:
        return int(browser.execute_script("return Number(localStorage.loads || 0)"))

    assert loads() == 1
    # more tabs, one event stream for the browser (a SharedWorker holds it)
    first = browser.current_window_handle
    for _ in range(2):
        browser.switch_to.new_window("tab")
        browser.get(f"http://127.0.0.1:{project.port}/")
    assert loads() == 3
    wait_until(lambda: json.loads(fetch(project.port, "/__devbox/status")[2])["streams"] == 1, 10, "one stream")
    for handle in browser.window_handles:
        if handle != first:
            browser.switch_to.window(handle)
            browser.close()
    browser.switch_to.window(first)
    browser.execute_script("localStorage.loads = '1'")
    for i, value in enumerate(("v2", "v3", "v4"), start=2):
        save(project, value)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                source = browser.page_source
                if "The server exited" in source:
                    seen_error.append(source)
                if f'<p id="value">{value}</p>' in source:
                    break
            except Exception:  # the page is reloading
                pass
            time.sleep(0.05)
        assert browser.find_element("id", "value").text == value
        run.wait_for(r"ready in [\d.]+s \(value.py changed\)", count=i - 1, timeout=30)
        assert loads() == i  # exactly one reload for the save
    assert seen_error == []

    # a stylesheet matched by `action: none` is swapped without a reload
    project.write("static/site.css", "body { color: rgb(0, 0, 2); }\n")
    wait_until(lambda: browser.execute_script("return getComputedStyle(document.body).color") == "rgb(0, 0, 2)", 10,
               "the new stylesheet in the open page")
    assert loads() == 4

    # a crash: the page (loaded again by hand) says so, and reloads itself once a fix is served
    project.write("value.py", "raise SystemExit(4)\n")
    run.wait_for(r"server exited with code 4", timeout=30)
    browser.refresh()
    assert "The server exited with code 4" in browser.page_source
    save(project, "v5")
    wait_until(lambda: '<p id="value">v5</p>' in browser.page_source, 30, "the error page to reload itself")
    assert run.interrupt() == 0


def test_browser_config(tmp_path):
    from devbox.config import Browser, load
    from devbox.identity import container_spec

    base = "name: b\nimage: x\ncommand: python3 app.py\nports: ['8000:8000']\n"
    cases = {"": None, "browser: false\n": None, "browser: true\n": Browser(True, True),
             "browser: {reload: false}\n": Browser(False, True), "browser: {hold: false}\n": Browser(True, False)}
    for text, expected in cases.items():
        (tmp_path / "devbox.yaml").write_text(base + text)
        config = load(tmp_path / "devbox.yaml")
        assert config.browser == expected, text
        # the container publishes the first port itself only without `browser:`: a new container when toggled
        assert ("browser" in container_spec(config)) == (expected is not None), text


def test_clients_that_hang_up_mid_request_leave_no_trace_on_the_terminal(project, python_image):
    """Browsers cancel requests on every navigation: 300 clients that send half a body, or ask and leave
    before the answer, put nothing on the user's terminal, and the app still answers."""
    make_app(project)
    run = project.up()
    wait_http(project.port, "v1", "/json")

    def hang_up(i: int) -> None:
        with socket.create_connection(("127.0.0.1", project.port), timeout=5) as s:
            if i % 2:  # half a body
                s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
            else:  # a request, gone before the answer (reset: SO_LINGER 0)
                s.sendall(b"GET /blob HTTP/1.1\r\nHost: x\r\n\r\n")
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    threads = [threading.Thread(target=hang_up, args=(i,)) for i in range(300)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert wait_http(project.port, "v1", "/json")  # the front and the app still answer
    time.sleep(1)  # not a wait for a condition: the grace for lines that must NOT come (none can be awaited)
    # (the app's own stdlib server may print its BrokenPipeError when the front lets go of an answer nobody
    # reads any more: the app's output, as without devbox; devbox's front prints nothing)
    printed = run.output
    assert "Error handling request" not in printed and "aiohttp" not in printed, printed
    assert "devbox/browser.py" not in printed and "Connection lost" not in printed, printed
    assert run.interrupt() == 0
