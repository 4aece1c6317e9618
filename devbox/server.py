"""The server process inside the container: start it through the exec API, stop its whole group, know when it ended.

A process started by `docker exec` is its own session and process-group leader,
so its pid is the pgid of the whole server tree. Stopping means: `stop_signal`
to the group, wait until no process of the group is left, SIGKILL the group
after `stop_timeout`. Only then may the next server start, so its port is free.

Two ways to signal the group, tried in this order:

- host: `exec_inspect` reports the leader's pid as the host sees it; where
  devbox shares the daemon's pid namespace and may signal it (Linux, as root),
  `os.killpg` reaches the group without a second exec. We only trust that pid
  after reading our own token from its /proc environ (pids get reused).
- exec: a small POSIX sh script run by a second exec reads the pid record, signals
  `kill -TERM -PGID` (dash's kill rejects `--`) and polls /proc. It works on any
  image with a shell, Docker Desktop included, and also ends a server left
  behind by a `devbox up` that was killed with -9.
"""

from __future__ import annotations

__all__ = ["ServerProcess", "ExecLauncher"]

import collections
import os
import re
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import BinaryIO, Callable

import docker.errors
from docker import APIClient

from .container import STATE_DIR, docker_reason
from .errors import ContainerError

PID_FILE = f"{STATE_DIR}/server.pid"
TOKEN_VAR = "DEVBOX_SERVER_ID"

# Record the group leader's pid (in the container's namespace), then become the server.
_WRAPPER = f'echo $$ > {PID_FILE}; exec "$@"'

# $1 signal name without SIG, $2 polls of 20 ms before SIGKILL.
# Prints "signalled" if a server was running, and "killed" if SIGKILL was needed.
_STOP_SCRIPT = f"""
sig=$1; steps=$2
pg=$(cat {PID_FILE} 2>/dev/null)
[ -n "$pg" ] || exit 0
alive() {{
  for f in /proc/[0-9]*/stat; do
    read -r line 2>/dev/null <"$f" || continue
    set -- ${{line##*) }}
    [ "$3" = "$pg" ] && [ "$1" != Z ] && return 0
  done
  return 1
}}
alive || {{ rm -f {PID_FILE}; exit 0; }}
kill -$sig -$pg 2>/dev/null
echo signalled
n=0
while alive; do
  if [ $n -eq $steps ]; then kill -KILL -$pg 2>/dev/null; echo killed; fi
  [ $n -gt $((steps + 500)) ] && exit 1
  sleep 0.02
  n=$((n + 1))
done
rm -f {PID_FILE}
"""

TAIL_LINES = 20


@dataclass
class ServerProcess:
    """One started server tree; `exited` is set when its leader has exited and `exit_code` is known."""

    exec_id: str
    token: str
    host_pid: int | None = None
    host_pid_checked: bool = False
    exit_code: int | None = None
    exited: threading.Event = field(default_factory=threading.Event)
    log_matched: threading.Event = field(default_factory=threading.Event)
    tail: collections.deque = field(default_factory=lambda: collections.deque(maxlen=TAIL_LINES))


class ExecLauncher:
    """Start and stop the server through the exec API. A later launcher (fork from a preloaded
    process) implements the same three methods: start, stop, end_leftover."""

    def __init__(self, api: APIClient, container_id: str, workdir: str):
        self.api, self.container_id, self.workdir = api, container_id, workdir
        self.stdout: BinaryIO = sys.stdout.buffer
        self.stderr: BinaryIO = sys.stderr.buffer
        # DEVBOX_STOP=exec forces the portable way (for measuring both, and for odd hosts)
        self.method = os.environ.get("DEVBOX_STOP", "auto")
        self._write_lock = threading.Lock()

    # -- start -----------------------------------------------------------------------------------

    def start(self, command: str | tuple[str, ...], env: dict[str, str], log_pattern: str | None,
              on_exit: Callable[[ServerProcess], None]) -> ServerProcess:
        argv = ["sh", "-c", command] if isinstance(command, str) else list(command)
        token = uuid.uuid4().hex
        environment = {**env, "RUN_MAIN": "true", "PYTHONUNBUFFERED": "1", TOKEN_VAR: token}
        try:
            exec_id = self.api.exec_create(self.container_id, ["sh", "-c", _WRAPPER, "devbox-server", *argv],
                                           environment=environment, workdir=self.workdir)["Id"]
            stream = self.api.exec_start(exec_id, stream=True, demux=True)
        except docker.errors.APIError as e:
            raise ContainerError(f"cannot start the server in the container: {docker_reason(e)}") from e
        proc = ServerProcess(exec_id, token)
        pattern = re.compile(log_pattern) if log_pattern else None
        threading.Thread(target=self._pump, args=(proc, stream, pattern, on_exit), daemon=True,
                         name="devbox-output").start()
        return proc

    def _find_host_pid(self, proc: ServerProcess) -> None:
        """The leader's pid as this host sees it, if we can see it and it carries our token."""
        if self.method == "exec" or proc.host_pid_checked:
            return
        try:
            for _ in range(50):  # right after exec_start the process may not have a pid yet
                pid = self.api.exec_inspect(proc.exec_id).get("Pid") or 0
                if pid > 0 or proc.exited.is_set():
                    break
                time.sleep(0.002)
            if pid > 0:
                with open(f"/proc/{pid}/environ", "rb") as f:  # fails where pids are not shared (Docker Desktop)
                    if f"{TOKEN_VAR}={proc.token}".encode() in f.read().split(b"\0"):
                        proc.host_pid = pid
        except (OSError, docker.errors.APIError):
            pass
        proc.host_pid_checked = True

    def _pump(self, proc: ServerProcess, stream, pattern: re.Pattern | None,
              on_exit: Callable[[ServerProcess], None]) -> None:
        """Copy the server's output to the terminal as it comes; remember the last lines; spot the ready line."""
        self._find_host_pid(proc)  # here, off the restart's critical path
        partial = b""
        try:
            for out, err in stream:
                for chunk, sink in ((out, self.stdout), (err, self.stderr)):
                    if not chunk:
                        continue
                    with self._write_lock:
                        sink.write(chunk)
                        sink.flush()
                    lines = (partial + chunk).split(b"\n")
                    partial = lines.pop()
                    for line in lines:
                        text = line.decode("utf-8", "replace").rstrip("\r")
                        proc.tail.append(text)
                        if pattern and pattern.search(text):
                            proc.log_matched.set()
                    if pattern and partial and pattern.search(partial.decode("utf-8", "replace")):
                        proc.log_matched.set()
        except Exception:  # the connection dropped: the exit code below still tells what happened
            pass
        if partial:
            proc.tail.append(partial.decode("utf-8", "replace"))
        proc.exit_code = self._exit_code(proc.exec_id)
        proc.exited.set()
        on_exit(proc)

    def _exit_code(self, exec_id: str) -> int:
        deadline = time.monotonic() + 5
        while True:
            try:
                info = self.api.exec_inspect(exec_id)
            except docker.errors.APIError:
                return -1
            if not info.get("Running") or time.monotonic() > deadline:
                code = info.get("ExitCode")
                return -1 if code is None else code
            time.sleep(0.005)

    # -- stop ------------------------------------------------------------------------------------

    def stop(self, proc: ServerProcess, stop_signal: str, timeout: float) -> bool:
        """Signal the whole group, wait for every process of it to be gone, SIGKILL after `timeout`.
        True if SIGKILL was needed."""
        if not proc.exited.is_set():
            self._find_host_pid(proc)  # in case the pump has not got to it yet
        # Host signalling only while the leader lives: once it is gone its number may be reused on the
        # host, while the exec way stays inside the container.
        if proc.host_pid is not None and not proc.exited.is_set():
            try:
                return self._stop_from_host(proc.host_pid, stop_signal, timeout)
            except PermissionError:
                proc.host_pid = None  # fall back to signalling from inside the container
        return "killed" in self._stop_by_exec(stop_signal, timeout)

    def end_leftover(self, stop_signal: str, timeout: float) -> bool:
        """End a server left running by an earlier `devbox up` (killed with -9); True if there was one."""
        return "signalled" in self._stop_by_exec(stop_signal, timeout)

    @staticmethod
    def _stop_from_host(pgid: int, stop_signal: str, timeout: float) -> bool:
        try:
            os.killpg(pgid, signal.Signals[stop_signal])
        except ProcessLookupError:
            return False
        began = time.monotonic()
        killed = False
        while True:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return killed
            if not killed and time.monotonic() - began >= timeout:
                os.killpg(pgid, signal.SIGKILL)
                killed = True
            # most servers are gone within 10 ms: poll finely at first (a signal 0 costs microseconds)
            time.sleep(0.001 if time.monotonic() - began < 0.2 else 0.01)

    def _stop_by_exec(self, stop_signal: str, timeout: float) -> str:
        steps = max(0, int(timeout / 0.02))
        return self._run(["sh", "-c", _STOP_SCRIPT, "devbox-stop", stop_signal.removeprefix("SIG"), str(steps)])

    def run(self, command: str | tuple[str, ...], env: dict[str, str]) -> int:
        """Run a one-off command (setup, an exec rule) in the workdir, streaming its output; its exit code."""
        argv = ["sh", "-c", command] if isinstance(command, str) else list(command)
        try:
            exec_id = self.api.exec_create(self.container_id, argv, environment=env, workdir=self.workdir)["Id"]
            for out, err in self.api.exec_start(exec_id, stream=True, demux=True):
                for chunk, sink in ((out, self.stdout), (err, self.stderr)):
                    if chunk:
                        with self._write_lock:
                            sink.write(chunk)
                            sink.flush()
        except docker.errors.APIError as e:
            raise ContainerError(f"cannot run `{argv}` in the container: {docker_reason(e)}") from e
        return self._exit_code(exec_id)

    def _run(self, argv: list[str]) -> str:
        try:
            exec_id = self.api.exec_create(self.container_id, argv)["Id"]
            output = self.api.exec_start(exec_id)
        except docker.errors.APIError as e:
            raise ContainerError(f"cannot run a command in the container: {docker_reason(e)}") from e
        return output.decode("utf-8", "replace") if isinstance(output, bytes) else str(output)
