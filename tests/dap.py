"""A Debug Adapter Protocol client that attaches as VS Code's Python debugger does, for the tests and
the bench: initialize, attach with `connect` and `pathMappings`, setBreakpoints, configurationDone;
a child session opened, the same way, whenever the adapter asks for one (the `startDebugging` reverse
request, or debugpy's `debugpyAttach` event for clients that do not support it); stackTrace on
`stopped`; continue."""

from __future__ import annotations

import itertools
import json
import queue
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any


class DapError(Exception):
    pass


class Session:
    """One DAP connection: requests with their responses, events, and reverse requests."""

    def __init__(self, host: str, port: int, client: "Client", name: str, timeout: float = 10):
        self.client, self.name = client, name
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(None)
        self.seq = itertools.count(1)
        self.lock = threading.Lock()
        self.pending: dict[int, queue.Queue] = {}
        self.events: queue.Queue = queue.Queue()
        self.closed = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True, name=f"dap-{name}")
        self.reader.start()

    def send(self, message: dict[str, Any]) -> int:
        seq = next(self.seq)
        body = json.dumps({"seq": seq, **message}).encode()
        with self.lock:
            self.sock.sendall(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        return seq

    def request_async(self, command: str, arguments: dict | None = None) -> queue.Queue:
        answer: queue.Queue = queue.Queue()
        with self.lock:
            seq = next(self.seq)
            self.pending[seq] = answer
            body = json.dumps({"seq": seq, "type": "request", "command": command,
                               "arguments": arguments or {}}).encode()
            self.sock.sendall(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        return answer

    def request(self, command: str, arguments: dict | None = None, timeout: float = 20) -> dict:
        return self.answer(self.request_async(command, arguments), command, timeout)

    def answer(self, pending: queue.Queue, command: str, timeout: float = 20) -> dict:
        try:
            response = pending.get(timeout=timeout)
        except queue.Empty:
            raise DapError(f"{self.name}: no answer to {command} in {timeout} s") from None
        if response is None:
            raise DapError(f"{self.name}: the connection closed before {command} was answered")
        if not response.get("success"):
            raise DapError(f"{self.name}: {command} failed: {response.get('message')}")
        return response.get("body") or {}

    def wait_event(self, name: str, timeout: float = 20) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DapError(f"{self.name}: no {name} event in {timeout} s")
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if event.get("event") == name:
                return event.get("body") or {}

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def _read(self) -> None:
        stream = self.sock.makefile("rb")
        try:
            while True:
                length = None
                while True:
                    line = stream.readline()
                    if not line:
                        return
                    line = line.strip()
                    if not line:
                        break
                    key, _, value = line.partition(b":")
                    if key.strip().lower() == b"content-length":
                        length = int(value)
                if length is None:
                    return
                message = json.loads(stream.read(length))
                kind = message.get("type")
                if kind == "response":
                    pending = self.pending.pop(message.get("request_seq"), None)
                    if pending is not None:
                        pending.put(message)
                elif kind == "event":
                    self.events.put(message)
                    self.client.on_event(self, message)
                elif kind == "request":
                    self.client.on_reverse_request(self, message)
        except (OSError, ValueError):
            return
        finally:
            self.closed.set()
            for pending in list(self.pending.values()):
                pending.put(None)


@dataclass
class Stop:
    session: Session
    thread_id: int
    frames: list[dict]

    @property
    def top(self) -> dict:
        return self.frames[0]

    def resume(self) -> None:
        self.session.request("continue", {"threadId": self.thread_id})


class Client:
    """What VS Code does for `"request": "attach"` with debugpy, child sessions included."""

    def __init__(self, host: str, port: int, path_mappings: list[dict], breakpoints: dict[str, list[int]],
                 start_debugging: bool = True):
        self.host, self.port = host, port
        self.path_mappings, self.breakpoints = path_mappings, breakpoints
        self.start_debugging = start_debugging  # advertise supportsStartDebuggingRequest, as VS Code does
        self.sessions: list[Session] = []
        self.stops: queue.Queue = queue.Queue()
        self.children = 0  # child sessions the adapter asked for
        self.configured = 0  # child sessions attached with their breakpoints set
        self.errors: list[str] = []
        self.verified: list[bool] = []

    def attach(self, timeout: float = 20) -> Session:
        config = {"name": "devbox: attach", "type": "debugpy", "request": "attach",
                  "connect": {"host": self.host, "port": self.port}, "pathMappings": self.path_mappings,
                  "justMyCode": True}
        return self._open(config, "root", timeout)

    def _open(self, config: dict, name: str, timeout: float = 20) -> Session:
        connect = config.get("connect") or {}
        session = Session(connect.get("host", self.host), int(connect.get("port", self.port)), self, name, timeout)
        self.sessions.append(session)
        session.request("initialize", {
            "clientID": "vscode", "clientName": "devbox tests", "adapterID": "debugpy", "pathFormat": "path",
            "linesStartAt1": True, "columnsStartAt1": True, "supportsVariableType": True,
            "supportsRunInTerminalRequest": True, "supportsStartDebuggingRequest": self.start_debugging,
        }, timeout)
        attached = session.request_async("attach", config)
        session.wait_event("initialized", timeout)
        for path, lines in self.breakpoints.items():
            body = session.request("setBreakpoints", {"source": {"path": path},
                                                      "breakpoints": [{"line": n} for n in lines]}, timeout)
            self.verified.extend(bool(b.get("verified")) for b in body.get("breakpoints", []))
        session.request("configurationDone", {}, timeout)
        session.answer(attached, "attach", timeout)
        return session

    def on_event(self, session: Session, event: dict) -> None:
        name, body = event.get("event"), event.get("body") or {}
        if name == "stopped":
            thread_id = body.get("threadId")
            threading.Thread(target=self._stopped, args=(session, thread_id), daemon=True).start()
        elif name == "debugpyAttach":
            self._child(body)

    def on_reverse_request(self, session: Session, message: dict) -> None:
        if message.get("command") == "startDebugging":
            session.send({"type": "response", "request_seq": message["seq"], "success": True,
                          "command": "startDebugging", "body": {}})
            self._child(message["arguments"]["configuration"])
        else:
            session.send({"type": "response", "request_seq": message["seq"], "success": False,
                          "command": message.get("command"), "message": "not supported"})

    def _child(self, config: dict) -> None:
        self.children += 1
        name = f"child-{config.get('subProcessId')}"

        def run() -> None:
            try:
                self._open(config, name)
                self.configured += 1
            except Exception as e:  # the test sees it in `errors`
                self.errors.append(f"{name}: {e}")

        threading.Thread(target=run, daemon=True, name=name).start()

    def _stopped(self, session: Session, thread_id: int) -> None:
        try:
            body = session.request("stackTrace", {"threadId": thread_id, "startFrame": 0, "levels": 20})
            self.stops.put(Stop(session, thread_id, body.get("stackFrames", [])))
        except Exception as e:
            self.errors.append(f"stackTrace: {e}")

    def wait_configured(self, children: int, timeout: float = 20) -> None:
        """Until `children` child sessions have been asked for and have their breakpoints set (VS Code
        opens them in the background too: a request made before that runs past the breakpoint)."""
        deadline = time.monotonic() + timeout
        while self.children < children or self.configured + len(self.errors) < self.children:
            if time.monotonic() > deadline:
                raise DapError(f"child sessions not configured in {timeout} s: {self.configured} of {self.children}")
            time.sleep(0.01)

    def wait_stop(self, timeout: float = 30) -> Stop:
        try:
            return self.stops.get(timeout=timeout)
        except queue.Empty:
            raise DapError(f"no breakpoint was hit in {timeout} s; sessions: {len(self.sessions)}, child sessions asked "
                           f"for: {self.children}, errors: {self.errors}") from None

    def close(self) -> None:
        for session in self.sessions:
            try:
                session.request_async("disconnect", {"restart": False, "terminateDebuggee": False})
            except OSError:
                pass
        for session in self.sessions:
            session.close()
