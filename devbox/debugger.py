"""The debugger, host side: one debug session per container for a whole `devbox up`.

devbox brings debugpy: the host's own copy (a dependency of devbox), its Python files and the
compiled parts for Linux, goes into the container once, under DEBUGPY_DIR in the container's own
layer (it survives a stop, and goes with the container). Its compiled tracer is used where the
container's Python matches the host's; elsewhere pydevd runs as pure Python, slower but the same.

In the container the hub (inside/debugger.py) keeps debugpy's adapter for the whole `up`; each
server start attaches to it as a child session of the hub, whether it is forked by the preloader or
started cold (see `environment`). On the host, DebugRelay answers at 127.0.0.1:`debugger.port` and
forwards to the adapter's port, which the container publishes on a loopback port of its own.
"""

from __future__ import annotations

__all__ = ["DebugSession", "CONTAINER_PORT", "debugpy_version", "launch_configuration"]

import collections
import io
import os
import tarfile
import threading
import time
import uuid
from typing import Callable

from docker import APIClient

from . import output
from .config import Config, Debugger
from .errors import DevboxError, docker_error
from .inside import STATE_DIR, PRELOADER_FILE, read

CONTAINER_PORT = 5678  # the adapter's port in the container, published on a loopback port of the host
DEBUGPY_DIR = "/.devbox-debugpy"
HUB_FILE = f"{STATE_DIR}/debugger.py"
SITE_DIR = f"{STATE_DIR}/debug-site"  # inside/debugger.py's SITE_DIR: its sitecustomize attaches a cold start
READY_WAIT = 30.0  # seconds for the hub to listen: a first import of debugpy on a slow disk
HUB_RESTARTS = 5  # a hub that keeps losing its adapter is not started again past this
_SKIPPED = (".pyc", ".dll", ".exe", ".dylib", ".pyd")  # not for a Linux container

# Write the hub and the preloader (for its rename) atomically: a preloader starting meanwhile writes
# the same file. Then run the hub under the image's Python.
_START = f"""write() {{ printf '%s' "$2" > "$1.$$" && mv -f "$1.$$" "$1"; }}
write {HUB_FILE} "$DEVBOX_HUB" || exit 1
write {PRELOADER_FILE} "$DEVBOX_PRELOADER" || exit 1
unset DEVBOX_HUB DEVBOX_PRELOADER
py=$(command -v python3 || command -v python) || {{ echo "devbox-debugger: off the image has no python3"; exit 1; }}
exec "$py" {HUB_FILE} hub "$@"
"""


def debugpy_version() -> str:
    import debugpy

    return debugpy.__version__


def launch_configuration(port: int, config: Config) -> dict:
    """The VS Code launch configuration that attaches to devbox's debugger: each folder of the project that
    the container has, mapped to where it has it (`./backend/app` at /app/app: `${workspaceFolder}/backend/app`)."""
    mappings = []
    for source, target in config.code_roots():
        relative = source.relative_to(config.project_dir).as_posix()
        local = "${workspaceFolder}" + ("" if relative == "." else "/" + relative)
        mappings.append({"localRoot": local, "remoteRoot": target})
    return {"name": "devbox: attach", "type": "debugpy", "request": "attach",
            "connect": {"host": "127.0.0.1", "port": port}, "pathMappings": mappings}


_archive: bytes | None = None


def _debugpy_archive(root: str) -> bytes:
    """The host's debugpy package as a tar for the container, rooted at `root` (made once a process)."""
    global _archive
    if _archive is None:
        import debugpy

        package = os.path.dirname(debugpy.__file__)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for folder, dirs, files in os.walk(package):
                dirs[:] = sorted(d for d in dirs if d != "__pycache__")
                for name in sorted(files):
                    if name.endswith(_SKIPPED):
                        continue
                    path = os.path.join(folder, name)
                    info = tar.gettarinfo(path, f"{root.lstrip('/')}/debugpy/{os.path.relpath(path, package)}")
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    info.mode = 0o755 if info.mode & 0o111 else 0o644
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
        _archive = buffer.getvalue()
    return _archive


class DebugSession:
    """The debugger for one container: debugpy put in, the hub started and kept, the attach line said.

    `ready()` waits for the hub (a start attaches only to a listening adapter); a hub that loses its
    adapter is started again (one line); a hub that cannot run at all is a DevboxError at `ready()`."""

    def __init__(self, api: APIClient, container_id: str, workdir: str, settings: Debugger, host_port: int | None,
                 say: Callable[[str], None], on_ready: Callable[["DebugSession"], None]):
        self.api, self.container_id, self.workdir = api, container_id, workdir
        self.settings, self.say, self.on_ready = settings, say, on_ready
        self.root = f"{DEBUGPY_DIR}/{debugpy_version()}"
        self.lock = threading.Lock()
        self.listening = threading.Event()
        self.failed = ""  # why the hub cannot run: said at ready()
        self.closed = False
        self.restarts = 0
        self.host_port = host_port  # where this machine reaches the adapter (the container publishes it)
        self.sock = None
        threading.Thread(target=self._begin, daemon=True, name="devbox-debugger").start()

    # -- for a start -----------------------------------------------------------------------------

    def ready(self, timeout: float = READY_WAIT) -> None:
        """Wait (bounded) until the hub listens; DevboxError if it cannot."""
        deadline = time.monotonic() + timeout
        while not self.listening.is_set() and not self.failed and time.monotonic() < deadline:
            self.listening.wait(0.01)
        if self.failed:
            raise DevboxError(f"debugger: {self.failed}")
        if not self.listening.is_set():
            raise DevboxError(f"debugger: debugpy did not start listening in the container in {timeout:g}s; "
                              "run `devbox up --debug` to see why")

    def environment(self, env: dict[str, str]) -> dict[str, str]:
        """A start's environment with the debugger in: PYTHONPATH gets the sitecustomize that attaches a
        cold start (the preloader's child attaches itself), and what PYTHONPATH was, to put it back.
        The new variables come last: the server's own environment keeps its order."""
        out = dict(env)
        was = env.get("PYTHONPATH")
        out["PYTHONPATH"] = SITE_DIR + (os.pathsep + was if was else "")
        out["DEVBOX_PYTHONPATH"] = was if was is not None else "-"
        out["DEVBOX_DEBUGGER"] = "wait" if self.settings.wait else "attach"
        return out

    # -- the hub ---------------------------------------------------------------------------------

    def _begin(self) -> None:
        try:
            if self.host_port is None:
                raise DevboxError("the container does not publish the debugger's port: run `devbox up --recreate`")
            self._put_debugpy()
            self._start_hub()
        except DevboxError as e:
            self.failed = str(e).removeprefix("debugger: ")
        except Exception as e:  # nothing dies silently: ready() says it
            self.failed = f"cannot start the debugger ({type(e).__name__}: {e})"

    def _put_debugpy(self) -> None:
        check = self.api.exec_create(self.container_id, ["test", "-f", f"{self.root}/debugpy/__init__.py"])["Id"]
        self.api.exec_start(check)
        if self.api.exec_inspect(check).get("ExitCode") == 0:
            return
        try:
            self.api.put_archive(self.container_id, "/", _debugpy_archive(self.root))
        except Exception as e:
            raise docker_error(e, "cannot put debugpy into the container") from e

    def _start_hub(self) -> None:
        exec_id = self.api.exec_create(
            self.container_id, ["sh", "-c", _START, "devbox-debugger", self.root, str(CONTAINER_PORT)],
            environment={"DEVBOX_HUB": read("debugger.py"), "DEVBOX_PRELOADER": read("preloader.py"),
                         "DEVBOX_SERVER_ID": uuid.uuid4().hex},
            workdir=self.workdir, stdin=True)["Id"]
        # stdin stays open as long as devbox holds this socket: when devbox lets go (or goes), the hub
        # ends the adapter and exits
        sock = self.api.exec_start(exec_id, socket=True)
        with self.lock:
            if self.closed:
                output.close_exec(sock)
                return
            self.sock = sock
        threading.Thread(target=self._read, args=(sock,), daemon=True, name="devbox-debugger-hub").start()

    def _read(self, sock) -> None:
        errors: collections.deque[str] = collections.deque(maxlen=3)
        ended = ""
        for stream, line in output.exec_lines(sock):
            text = line.strip()
            if stream == 2:
                if text:
                    errors.append(text)
            elif text.startswith("devbox-debugger: "):
                kind, _, rest = text.removeprefix("devbox-debugger: ").partition(" ")
                if kind == "ready":
                    self.listening.set()
                    self.on_ready(self)
                elif kind in ("off", "lost"):
                    ended = f"{kind} {rest}"
        self.listening.clear()
        with self.lock:
            if self.closed or sock is not self.sock:
                return
        kind, _, why = ended.partition(" ")
        if kind == "lost" and self.restarts < HUB_RESTARTS:
            self.restarts += 1
            self.say(f"debugger: {why}; starting it again (attach the client again)")
            try:
                self._start_hub()
            except Exception as e:
                self.failed = f"cannot start the debugger again ({e})"
            return
        if not why:
            why = f"the debugger exited: {errors[-1]}" if errors else "the debugger exited"
        self.failed = why
        if self.listening.is_set() or kind == "lost":
            self.say(f"debugger: {why}; serving without it")

    def close(self) -> None:
        with self.lock:
            self.closed = True
            sock, self.sock = self.sock, None
        if sock is not None:
            output.close_exec(sock)
