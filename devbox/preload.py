"""The preloaded restart: a start forks from a process that imported the server's libraries once.

Each cold start of a Python server pays its imports again (Django's are most of its start). The
preloader (preloader.py, run in the container) imports what the server imported last time from
outside the project, and forks a child per start; the child imports only the project's own modules,
and is made indistinguishable from a cold start (preloader.py says how). The first start of a
launcher is cold and does not wait: the preloader starts beside it, and what later servers import is
recorded for it.

PreloadLauncher keeps ExecLauncher's contract: a start is still one exec, of a small client that
hands its stdio, environment and folder to the preloader and exits with the child's exit code. So
the output stream, the exit code, the pid record and the whole stop path are the cold start's.

When the preloader goes stale it is started again, in the background: when the server's
environment changes (a config change), after setup or an exec rule ran (they may install packages),
when a preloaded file changes (the preloader checks before every fork), or when a module it
imported turned out to start a thread or keep a file open (it is then left to the child).

When preloading is off, it says so once, and it is true: a launcher whose preloader failed, or whose
server failed preloaded but served cold, starts cold from then on; ColdMemory keeps that for the
project (in the runtime folder) until the container, the command or the environment changes.
"""

from __future__ import annotations

__all__ = ["ColdMemory", "PreloadLauncher", "wants_preload"]

import collections
import hashlib
import json
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from docker import APIClient

from . import output
from .lock import write_private
from .inside import PRELOAD_SOCKET, PRELOADER_FILE, PRELOADER_RECORD, read
from .inside.preloader import ARGV_VAR, SEP
from .server import TOKEN_VAR, ExecLauncher, ServerProcess, command_argv

SOCKET, RECORD = PRELOAD_SOCKET, PRELOADER_RECORD
READY_WAIT = 15.0  # seconds a start waits for a preloader that is importing (about a cold start)
RESTARTS = 5  # preloader restarts for unsafe modules before preloading is left off
SOURCE = read("preloader.py")
# `preload: auto` preloads commands that start with these (Python itself, or a Python server's script)
PYTHON_SERVERS = {"flask", "uvicorn", "gunicorn", "hypercorn", "daphne", "django-admin", "fastapi", "granian"}

# Record the preloader's pid (as the server's wrapper does), write the program (whole, at once: the
# debugger's hub writes it too), run it under the image's Python; preloader.py re-executes itself
# under the command's own interpreter and options.
_START = f"""echo "$$ ${TOKEN_VAR}" > {RECORD}
printf '%s' "$DEVBOX_PRELOADER" > {PRELOADER_FILE}.$$ && mv -f {PRELOADER_FILE}.$$ {PRELOADER_FILE} || exit 1
unset DEVBOX_PRELOADER
py=$(command -v python3 || command -v python) || {{ echo "devbox-preload: off the image has no python3"; exit 1; }}
exec "$py" {PRELOADER_FILE} serve {SOCKET} "$@"
"""


def wants_preload(setting: bool | None, command: str | tuple[str, ...]) -> tuple[bool, str]:
    """Whether to preload, and why not (for `preload: true`, said to the user)."""
    if setting is False:
        return False, ""
    argv = command_argv(command)
    if argv is None:
        return False, "the command needs a shell (write it as a list, or without $, &&, |, >)"
    name = os.path.basename(argv[0])
    if setting is None and not (re.fullmatch(r"python(\d+(\.\d+)?)?", name) or name in PYTHON_SERVERS):
        return False, f"{name} is not a Python command"
    return True, ""


class ColdMemory:
    """Why preloading is off, per container, command and environment: kept in a file of the runtime
    folder, so that "from now on" holds across `devbox up`s and container recoveries."""

    def __init__(self, path: Path):
        self.path = path

    @staticmethod
    def key(container_id: str, argv: list[str], env: dict[str, str]) -> str:
        return hashlib.sha256(json.dumps([container_id, argv, sorted(env.items())]).encode()).hexdigest()[:20]

    def get(self, key: str) -> str:
        return self._read().get(key, "")

    def put(self, key: str, why: str) -> None:
        kept = self._read()
        kept[key] = why
        write_private(self.path, json.dumps(kept))  # if it cannot be kept, this `up` still knows

    def _read(self) -> dict[str, str]:
        try:
            kept = json.loads(self.path.read_text())
            return kept if isinstance(kept, dict) else {}
        except (OSError, ValueError):
            return {}


@dataclass(frozen=True)
class PreloaderEnd:
    """Why a preloader takes no more starts: it said `off REASON` (preloading stays off for the command)
    or `restart REASON` (what it imported changed: a new one is started), or it went without a word."""

    OFF, RESTART, STALE, DROPPED = "off", "restart", "stale", "dropped"  # stale: a preloaded file changed
    kind: str
    why: str


class PreloaderHandle:
    """The host's handle on one preloader process: its state comes from its `devbox-preload:` lines."""

    def __init__(self, api: APIClient, container_id: str, workdir: str, env: dict[str, str],
                 project_dir: str, argv: list[str], on_gone: Callable[["PreloaderHandle"], None],
                 on_project: Callable[["PreloaderHandle"], None] = lambda p: None):
        self.env, self.on_gone, self.on_project = env, on_gone, on_project
        self.ready = threading.Event()
        self.retired = threading.Event()  # it said off or restart: it takes no more starts
        self.gone = threading.Event()
        self.exe = ""
        self.project_modules: list[str] = []  # the project's own modules it holds (Django's settings, say)
        self.end: PreloaderEnd | None = None  # how it ended, once it has
        self.errors: collections.deque[str] = collections.deque(maxlen=3)  # its last stderr lines
        exec_id = api.exec_create(container_id, ["sh", "-c", _START, "devbox-preloader", project_dir, "--", *argv],
                                  environment={**env, "DEVBOX_PRELOADER": SOURCE, TOKEN_VAR: uuid.uuid4().hex},
                                  workdir=workdir, stdin=True)["Id"]
        # stdin stays open as long as devbox holds this socket: when devbox lets go (or goes), the
        # preloader takes no more starts and ends with the server it forked
        self.sock = api.exec_start(exec_id, socket=True)
        threading.Thread(target=self._read, daemon=True, name="devbox-preloader").start()

    def _read(self) -> None:
        for stream, text in output.exec_lines(self.sock):
            if stream == 1:
                self._take(text.rstrip())
            elif text.strip():
                self.errors.append(text.strip())  # an import's warnings, or why it failed
        if self.end is None:  # it said nothing: maybe it went with its container
            last = f": {self.errors[-1]}" if self.errors else ""
            self.end = PreloaderEnd(PreloaderEnd.DROPPED, f"the preloader exited{last}")
        self.ready.clear()
        self.gone.set()
        if not self.retired.is_set():
            self.on_gone(self)

    def _take(self, line: str) -> None:
        if not line.startswith("devbox-preload: "):
            return
        kind, _, rest = line.removeprefix("devbox-preload: ").partition(" ")
        if kind == "ready":
            modules, took, self.exe = rest.split(" ", 2)
            self.ready.set()
            if os.environ.get("DEVBOX_TRACE") == "1":
                output.say(f"trace: preloader ready, {modules} modules, {took} ms of imports")
        elif kind == "more" and os.environ.get("DEVBOX_TRACE") == "1":
            output.say(f"trace: the preloader now holds {rest} modules")
        elif kind == "project":
            self.project_modules = rest.split()
            self.on_project(self)
        elif kind in (PreloaderEnd.OFF, PreloaderEnd.RESTART, PreloaderEnd.STALE):  # no more starts: a new one can start
            self.end = PreloaderEnd(kind, rest)
            self.ready.clear()
            self.retired.set()
            self.on_gone(self)

    def close(self) -> None:
        output.close_exec(self.sock)


class PreloadLauncher(ExecLauncher):
    """Starts the server by a fork from the preloader; falls back to ExecLauncher's cold start."""

    def __init__(self, api: APIClient, container_id: str, workdir: str, project_dir: str,
                 command: str | tuple[str, ...], say: Callable[[str], None], memory: ColdMemory):
        super().__init__(api, container_id, workdir)
        self.project_dir, self.say, self.memory = project_dir, say, memory
        self.argv = command_argv(command) or []
        self.preloader: PreloaderHandle | None = None
        self.lock = threading.Lock()  # the preloader is swapped by a start, and by the reader of one that ended
        self.closed = False
        self.off = ""  # why preloading is off for the rest of this launcher's life
        self.restarts = 0
        self.cold_once = False  # the next start is cold: is preloading why the last one failed?
        self.env: dict[str, str] = {}  # the server's environment at the last start (keys ColdMemory)
        self.last_start = ""  # "preloaded" or "cold" (for the trace); "": no start yet

    def start(self, command: str | tuple[str, ...], env: dict[str, str], log_pattern: str | None,
              on_exit: Callable[[ServerProcess], None]) -> ServerProcess:
        server_env = {**env, "RUN_MAIN": "true", "PYTHONUNBUFFERED": "1"}
        # The first start does not wait for its new preloader, which has nothing to import yet: it
        # starts cold at once, with the preloader starting beside it.
        self.env = server_env
        if self.cold_once:  # no wait for a preloader this start would not use
            self.cold_once, exe = False, ""
        else:
            exe = self._ready_preloader(server_env, wait=bool(self.last_start))
        if exe:
            self.last_start = "preloaded"
            proc = super().start((exe, "-I", "-S", PRELOADER_FILE, "client", SOCKET), env, log_pattern, on_exit,
                                 extra_env={ARGV_VAR: SEP.join(self.argv)})
            proc.preloaded = True
            return proc
        self.last_start = "cold"
        return super().start(command, env, log_pattern, on_exit)

    def start_cold_once(self) -> None:
        """The next start is cold (a preloaded one exited before it was ready: was preloading the cause?)."""
        self.cold_once = True

    def serves_only_cold(self, why: str) -> None:
        """A start failed preloaded and served cold: this command starts cold from now on."""
        with self.lock:
            self._turn_off(why)

    def _key(self, env: dict[str, str]) -> str:
        return ColdMemory.key(self.container_id, self.argv, env)

    def _ready_preloader(self, env: dict[str, str], wait: bool = True) -> str:
        """The interpreter of a ready preloader for `env`, starting one if needed (and waiting for it to be
        ready, with `wait`); "" for a cold start."""
        with self.lock:
            p = self.preloader
            if self.off:
                return ""
            if p is not None and p.env != env:
                self._replace(env)  # the config changed: this start is cold, the next one is not
                return ""
            if p is None:
                remembered = self.memory.get(self._key(env))
                if remembered:
                    self.off = remembered
                    self.say(f"preload off: {remembered}; starting cold from now on")
                    return ""
                p = self._spawn(env)
        if p is None or not _either(p.ready, p.retired, p.gone, timeout=READY_WAIT if wait else 0):
            return ""
        return p.exe

    def _spawn(self, env: dict[str, str]) -> PreloaderHandle | None:
        """Start a preloader (it imports in the background); called with the lock held."""
        try:
            self.preloader = PreloaderHandle(self.api, self.container_id, self.workdir, env, self.project_dir, self.argv,
                                             on_gone=self._ended, on_project=self._holds_project)
        except Exception as e:
            self._turn_off(f"cannot start the preloader ({e})", env)
            return None
        return self.preloader

    def _ended(self, p: PreloaderHandle) -> None:
        """A preloader exited (called by its reader): start a new one at once if it asked to be, so the
        next start finds it warm; if it failed, leave preloading off."""
        with self.lock:
            if p is not self.preloader or self.closed:
                return  # replaced or closed on purpose
            end = p.end or PreloaderEnd(PreloaderEnd.DROPPED, "")
        if end.kind == PreloaderEnd.DROPPED and self._container_gone():
            with self.lock:
                if p is self.preloader:
                    self.preloader = None  # it went with its container: one brought back preloads again
            return
        with self.lock:
            if p is not self.preloader or self.closed:
                return
            if end.kind == PreloaderEnd.STALE:  # a file it imported changed: a fresh one, as often as it takes
                self.preloader = None
                if os.environ.get("DEVBOX_TRACE") == "1":
                    self.say(f"trace: preloader restarts: {end.why}")
                self._spawn(p.env)
            elif end.kind == PreloaderEnd.RESTART and self.restarts < RESTARTS:
                self.preloader = None
                self.restarts += 1
                if os.environ.get("DEVBOX_TRACE") == "1":
                    self.say(f"trace: preloader restarts: {end.why}")
                self._spawn(p.env)
            else:
                self._turn_off(end.why, p.env)

    def _holds_project(self, p: PreloaderHandle) -> None:
        """Say once which of the project's own modules the warm process holds, and what that means."""
        if p.project_modules:
            shown = ", ".join(p.project_modules[:3]) + (f" and {len(p.project_modules) - 3} more"
                                                        if len(p.project_modules) > 3 else "")
            self.say(f"preload: on; the warm process holds the project's {shown}: a save of one of those starts "
                     "cold once and warms a new process (any other save forks); `preload: false` turns it off")

    def describe(self) -> str:
        """Preloading now, for `devbox status`: on (with the project's modules it holds), or off and why."""
        if self.off:
            return f"off: {self.off}"
        p = self.preloader
        if p is None or not p.ready.is_set():
            return "on (warming up)"
        return "on" + (f" (holds the project's {', '.join(p.project_modules)})" if p.project_modules else "")

    def _container_gone(self) -> bool:
        """Whether the container stopped (the engine may record it a moment after the exec's end)."""
        deadline = time.monotonic() + 1.0
        while True:
            try:
                if not self.api.inspect_container(self.container_id)["State"]["Running"]:
                    return True
            except Exception:
                return True  # removed, or the engine went with it
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)

    def _turn_off(self, why: str, env: dict[str, str] | None = None) -> None:
        """Preloading is off for this command from now on (called with the lock held)."""
        if self.preloader is not None:
            self.preloader.close()  # it takes no more starts, and ends with the server it forked
            self.preloader = None
        self.off = why or "the preloader exited"
        self.memory.put(self._key(env if env is not None else self.env), self.off)
        self.say(f"preload off: {self.off}; starting cold from now on")

    def invalidate(self) -> None:
        """What the preloader imported may have changed (setup or an exec rule ran): start a new one."""
        with self.lock:
            if self.preloader is not None and not self.off:
                self._replace(self.preloader.env)

    def _replace(self, env: dict[str, str]) -> None:
        """End the preloader and start a new one for `env`; called with the lock held."""
        old, self.preloader = self.preloader, None
        if old is not None:
            old.close()  # its stdin closes: it takes no more starts, and ends once its server is stopped
        if os.environ.get("DEVBOX_TRACE") == "1":
            self.say("trace: preloader restarts: what it imported may have changed")
        self._spawn(env)

    def close(self) -> None:
        super().close()
        with self.lock:
            self.closed = True
            if self.preloader is not None:
                self.preloader.close()
                self.preloader = None

    def end_leftover(self, stop_signal: str, timeout: float) -> bool:
        found = super().end_leftover(stop_signal, timeout)
        self._stop_by_exec("SIGKILL", 0, RECORD, "")  # a preloader of an `up` killed with -9, if any
        return found


def _either(ready: threading.Event, *failed: threading.Event, timeout: float) -> bool:
    """Wait until `ready` or one of `failed` is set (bounded); True if `ready` is, and none of `failed`."""
    deadline = time.monotonic() + timeout
    while not ready.is_set() and not any(f.is_set() for f in failed) and time.monotonic() < deadline:
        ready.wait(0.005)
    return ready.is_set() and not any(f.is_set() for f in failed)
