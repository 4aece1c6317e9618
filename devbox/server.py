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

__all__ = ["ServerProcess", "ExecLauncher", "StopStuck", "command_argv"]

import collections
import os
import re
import shlex
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

from docker import APIClient
from docker.utils.socket import frames_iter

from . import inside, output
from .inside import SERVER_RECORD, TASK_RECORD
from .channel import Channel, ChannelFailed
from .errors import ContainerError, docker_error
from .output import Lines

TOKEN_VAR = "DEVBOX_SERVER_ID"  # every process the server starts inherits it, even one that leaves the group
KILL_GRACE = 10.0  # seconds to wait for the tree to go after SIGKILL before saying so

# Record the group leader's pid (in the container's namespace) and the start's token, then become the command.
_WRAPPER = 'echo "$$ $DEVBOX_SERVER_ID" > "$0"; exec "$@"'

# The stop script (devbox/inside/stop.sh, a file of the package, run in the container with `sh -c`):
# it finds the tree by its group and by its token, signals it, waits, escalates.
_STOP_SCRIPT = inside.read("stop.sh")
_GRACE_STEPS = str(int(KILL_GRACE / 0.02))

TAIL_LINES = 20
# words that are the shell's own, not programs: `exec httpd ...` needs the shell it names
_SHELL_BUILTINS = {"exec", "cd", "export", "source", ".", "set", "unset", "eval", "ulimit", "umask", "trap",
                   "alias", "read", "wait", "shift", "test", "[", "if", "for", "while", "case", "until", "!"}
MATCHED_CHARS = 4096  # of each line, for `ready.log`: a bound on the work one line can cost
_SHELL = re.compile(r"[$`|&;<>(){}*?\[\]~\\\n#]|^\w+=")  # what only a shell would make sense of


def command_argv(command: str | tuple[str, ...]) -> list[str] | None:
    """The command as an argv, if running it needs no shell (no variables, operators, redirections).
    Such a string runs as that argv: `sh -c` would add a process of its own (dash does not exec the
    last command), and the server would not be the one process with its command line."""
    if isinstance(command, tuple):
        return list(command)
    if _SHELL.search(command.strip()):
        return None
    try:
        argv = shlex.split(command)
    except ValueError:
        return None
    return argv if argv and argv[0] not in _SHELL_BUILTINS else None


def server_command(command: str | tuple[str, ...], entrypoint: tuple[str, ...] | None) -> str | tuple[str, ...]:
    """What a start runs: the command, after the entrypoint as Docker runs ENTRYPOINT + CMD (a command
    that needs a shell goes to the entrypoint as `sh -c COMMAND`)."""
    if not entrypoint:
        return command
    return (*entrypoint, *(command_argv(command) or ["sh", "-c", command]))


@dataclass(frozen=True)
class StopAnswer:
    """What the in-container stop script reports, one word a line."""

    signalled: bool = False  # there was a tree, and it was signalled
    killed: bool = False  # it outlived the stop signal: SIGKILL
    stuck: bool = False  # it outlived SIGKILL too

    @classmethod
    def parse(cls, output: str) -> "StopAnswer":
        words = set(output.split())
        return cls("signalled" in words, "killed" in words, "stuck" in words)


class StopStuck(ContainerError):
    """Processes of the server outlived SIGKILL (uninterruptible sleep, a stuck mount)."""


@dataclass
class ServerProcess:
    """One started server tree; `exited` is set when its leader has exited and `exit_code` is known
    (None: unknown, the engine or the container went away)."""

    exec_id: str
    token: str
    host_pid: int | None = None
    host_pid_checked: bool = False
    exit_code: int | None = None
    ready: bool = False  # the ready check passed once: an exit 3 from now on means "restart me"
    preloaded: bool = False  # forked by the preloader (preload.py), not started cold
    exited: threading.Event = field(default_factory=threading.Event)
    log_matched: threading.Event = field(default_factory=threading.Event)
    tail: collections.deque = field(default_factory=lambda: collections.deque(maxlen=TAIL_LINES))


class ExecLauncher:
    """Start and stop the server through the exec API (the cold start). PreloadLauncher (preload.py)
    starts it by a fork from a preloaded process instead, and keeps everything else."""

    def __init__(self, api: APIClient, container_id: str, workdir: str):
        self.api, self.container_id, self.workdir = api, container_id, workdir
        # DEVBOX_STOP=exec forces the portable way (for measuring both, and for odd hosts)
        self.method = os.environ.get("DEVBOX_STOP", "auto")
        self._procs_file: str | None = None  # the container's cgroup.procs, as the host sees it
        self.log: Callable[[list[str]], None] = lambda lines: None  # where the server's lines are kept
        self.last_stop = ""  # "host" or "exec": how the last stop reached the server (for the trace)
        self.last_start = "cold"  # how the last start was made (for the trace)
        self.channel: Channel | None = None  # devbox's channel into the container (remote engines: the stops)
        # the debugger's part of a start's environment (debugger.py), when it is on
        self.with_debugger: Callable[[dict[str, str]], dict[str, str]] | None = None

    def invalidate(self) -> None:
        """What a start builds on may have changed (setup ran); nothing to do for a cold start."""

    def close(self) -> None:
        """This launcher will not start anything again."""
        if self.channel is not None:
            self.channel.close()

    # -- start -----------------------------------------------------------------------------------

    def start(self, command: str | tuple[str, ...], env: dict[str, str], log_pattern: str | None,
              on_exit: Callable[[ServerProcess], None], extra_env: dict[str, str] | None = None) -> ServerProcess:
        """Start the server; `extra_env` comes last, so that a preloader client that drops it leaves the
        server's environment in the cold start's order."""
        token = uuid.uuid4().hex
        environment = {**env, "RUN_MAIN": "true", "PYTHONUNBUFFERED": "1", TOKEN_VAR: token, **(extra_env or {})}
        if self.with_debugger is not None:
            environment = self.with_debugger(environment)
        exec_id, stream = self._exec_stream(command, environment, SERVER_RECORD, "start the server")
        proc = ServerProcess(exec_id, token)
        pattern = re.compile(log_pattern) if log_pattern else None
        threading.Thread(target=self._pump, args=(proc, stream, pattern, on_exit), daemon=True,
                         name="devbox-output").start()
        return proc

    def _exec_stream(self, command: str | tuple[str, ...], environment: dict[str, str], record: str, doing: str):
        argv = command_argv(command) or ["sh", "-c", command]
        try:
            exec_id = self.api.exec_create(self.container_id, ["sh", "-c", _WRAPPER, record, *argv],
                                           environment=environment, workdir=self.workdir)["Id"]
            return exec_id, self.api.exec_start(exec_id, socket=True)  # closed at the end: see output.close_exec
        except Exception as e:
            raise docker_error(e, f"cannot {doing} in the container") from e

    def _find_host_pid(self, proc: ServerProcess) -> None:
        """The leader's pid as this host sees it, if we can see it and it carries our token."""
        if self.method == "exec" or proc.host_pid_checked:
            return
        try:
            # right after exec_start the process may not have a pid yet (runc takes tens of ms, more
            # on a busy machine); a stop must not go on before the process exists
            deadline = time.monotonic() + 5
            while True:
                info = self.api.exec_inspect(proc.exec_id)
                pid = info.get("Pid") or 0
                if pid > 0 or info.get("ExitCode") is not None or proc.exited.is_set() \
                        or time.monotonic() > deadline:
                    break
                time.sleep(0.002)
            # the pid is known a moment before it is the command: until runc's init has exec'd it, its
            # environment is runc's, without our token (seen on a busy machine); where pids are not shared
            # (Docker Desktop) it never shows the token, and the exec way is used
            seen_until = min(deadline, time.monotonic() + 0.5)
            while pid > 0 and not proc.exited.is_set():
                if proc.token in _environ_tokens(pid):
                    proc.host_pid = pid
                    if self._procs_file is None:
                        self._procs_file = _cgroup_procs_file(pid)
                    break
                if time.monotonic() > seen_until:
                    self.method = "exec"  # this host does not see the container's processes: stop asking
                    break
                time.sleep(0.002)
        except Exception:  # OSError, or the engine went away: the exec way still works
            pass
        proc.host_pid_checked = True

    def _pump(self, proc: ServerProcess, stream, pattern: re.Pattern | None,
              on_exit: Callable[[ServerProcess], None]) -> None:
        """Copy the server's output to the terminal as it comes; remember the last lines; spot the ready line."""
        self._find_host_pid(proc)  # here, off the restart's critical path
        sinks = {0: output.stdout(), 1: output.stderr()}
        lines = {0: Lines(), 1: Lines()}  # stdout and stderr each keep their own partial line

        def take(new_lines: list[str]) -> None:
            self.log(new_lines)
            proc.tail.extend(new_lines)
            if pattern and not proc.log_matched.is_set() and any(pattern.search(line[:MATCHED_CHARS]) for line in new_lines):
                proc.log_matched.set()

        try:
            for kind, chunk in frames_iter(stream, tty=False):  # (1 stdout | 2 stderr, bytes) as they come
                i = kind - 1
                if not chunk or i not in sinks:
                    continue
                sinks[i].write(chunk)
                take(lines[i].feed(chunk))
                if pattern and not proc.log_matched.is_set() and pattern.search(lines[i].partial()[:MATCHED_CHARS]):
                    proc.log_matched.set()
        except Exception:  # the connection dropped: the exit code below still tells what happened
            pass
        output.close_exec(stream)
        for i in lines:
            take(lines[i].close())
        proc.exit_code = self._exit_code(proc.exec_id)
        proc.exited.set()
        on_exit(proc)

    def _exit_code(self, exec_id: str) -> int | None:
        """The exec's exit code; None if the engine cannot tell (it or the container went away)."""
        deadline = time.monotonic() + 5
        while True:
            try:
                info = self.api.exec_inspect(exec_id)
            except Exception:
                return None
            if not info.get("Running") or time.monotonic() > deadline:
                return info.get("ExitCode")
            time.sleep(0.005)

    # -- stop ------------------------------------------------------------------------------------

    def stop(self, proc: ServerProcess, stop_signal: str, timeout: float,
             hurry: Callable[[], bool] = lambda: False) -> bool:
        """Signal the whole tree, wait for every process of it to be gone, SIGKILL after `timeout`
        (at once when `hurry()` turns true). True if SIGKILL was needed."""
        if not proc.exited.is_set():
            self._find_host_pid(proc)  # in case the pump has not got to it yet
        # Host signalling only while the leader lives: once it is gone its number may be reused on the
        # host, while the exec way stays inside the container.
        if proc.host_pid is not None and not proc.exited.is_set():
            try:
                self.last_stop = "host"
                return self._stop_from_host(proc, stop_signal, timeout, hurry)
            except PermissionError:
                proc.host_pid = None  # fall back to signalling from inside the container
        self.last_stop = "exec"
        return self._stop_by_exec(stop_signal, timeout, SERVER_RECORD, proc.token, hurry).killed

    def end_leftover(self, stop_signal: str, timeout: float) -> bool:
        """End a server left running by an earlier `devbox up` (killed with -9); True if there was one."""
        return self._stop_by_exec(stop_signal, timeout, SERVER_RECORD, "").signalled

    def _stop_from_host(self, proc: ServerProcess, stop_signal: str, timeout: float,
                        hurry: Callable[[], bool]) -> bool:
        assert proc.host_pid is not None
        pgid, sig = proc.host_pid, signal.Signals[stop_signal]
        escaped = self._escaped(proc)
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass
        _signal_each(escaped, sig)
        began = time.monotonic()
        killed = False
        while True:
            if not _group_alive(pgid) and not _any_alive(escaped):
                more = self._escaped(proc)  # one more look: something may have left the group meanwhile
                if not more:
                    return killed
                _signal_each(more, signal.SIGKILL if killed else sig)
                escaped |= more
            if not killed and (time.monotonic() - began >= timeout or hurry()):
                _signal_group(pgid, signal.SIGKILL)
                _signal_each(escaped, signal.SIGKILL)
                killed, began = True, time.monotonic()
            elif killed and time.monotonic() - began > KILL_GRACE:
                raise StopStuck(f"the server's processes outlived SIGKILL for {KILL_GRACE:g}s "
                                "(stuck in the kernel?); `devbox down` removes the container")
            # most servers are gone within 10 ms: poll finely at first (a signal 0 costs microseconds)
            time.sleep(0.001 if time.monotonic() - began < 0.2 else 0.01)

    def _escaped(self, proc: ServerProcess) -> set[int]:
        """Host pids that carry this start's token but are not in its group."""
        if self._procs_file:
            try:
                with open(self._procs_file) as f:
                    pids = [int(line) for line in f if line.strip()]
            except (OSError, ValueError):
                pids = _all_pids()
        else:
            pids = _all_pids()
        return {pid for pid in pids if pid != proc.host_pid and _pgid(pid) != proc.host_pid
                and proc.token in _environ_tokens(pid)}

    def _stop_by_exec(self, stop_signal: str, timeout: float, record: str, token: str,
                      hurry: Callable[[], bool] = lambda: False) -> "StopAnswer":
        """Run the stop script; `token` names the start to stop ("": whatever the record names)."""
        steps = max(0, int(timeout / 0.02))
        argv = ["sh", "-c", _STOP_SCRIPT, "devbox-stop", stop_signal.removeprefix("SIG"), str(steps), record, token,
                TOKEN_VAR, _GRACE_STEPS]
        result: list = []

        def work() -> None:
            try:
                result.append(self._run(argv))
            except Exception as e:  # handed to the caller below: never a thread traceback
                result.append(e)

        worker = threading.Thread(target=work, daemon=True, name="devbox-stop")
        worker.start()
        while worker.is_alive():
            worker.join(0.05)
            if hurry() and worker.is_alive():
                # a second script with no grace: SIGKILL now; the first sees the tree gone and ends
                self._run(["sh", "-c", _STOP_SCRIPT, "devbox-kill", "KILL", "0", record, token, TOKEN_VAR, _GRACE_STEPS])
                worker.join(KILL_GRACE + 5)
                break
        out = result[0] if result else ""
        if isinstance(out, Exception):
            raise out
        answer = StopAnswer.parse(out)
        if answer.stuck:
            raise StopStuck(f"the server's processes outlived SIGKILL for {KILL_GRACE:g}s "
                            "(stuck in the kernel?); `devbox down` removes the container")
        return answer

    # -- one-off commands --------------------------------------------------------------------------

    def run(self, command: str | tuple[str, ...], env: dict[str, str]) -> int | None:
        """Run a one-off command (setup, an exec rule) in the workdir, streaming its output; its exit code.
        `cancel()` from another thread ends it (and everything it started) at once."""
        environment = {**env, TOKEN_VAR: uuid.uuid4().hex}
        exec_id, stream = self._exec_stream(command, environment, TASK_RECORD, f"run `{_show(command)}`")
        sinks = (output.stdout(), output.stderr())
        try:
            for kind, chunk in frames_iter(stream, tty=False):
                if chunk and kind in (1, 2):
                    sinks[kind - 1].write(chunk)
        except Exception as e:
            raise docker_error(e, f"`{_show(command)}` was cut off") from e
        finally:
            output.close_exec(stream)
        return self._exit_code(exec_id)

    def parses_inside(self, paths: list[str]) -> bool:
        """True if the container's python3 parses one of `paths`, or cannot tell (no python3 there)."""
        from .syntax import CONTAINER_CHECK

        try:
            exec_id = self.api.exec_create(self.container_id, ["python3", "-c", CONTAINER_CHECK, *paths])["Id"]
            self.api.exec_start(exec_id)
            return self.api.exec_inspect(exec_id).get("ExitCode") != 1
        except Exception:
            return True  # no verdict: never hold a file back on a guess

    def tree(self, proc: ServerProcess) -> str:
        """One line per process of the server's tree, as reloaders.TREE_SCRIPT prints them."""
        from .reloaders import TREE_SCRIPT

        return self._run(["sh", "-c", TREE_SCRIPT, "devbox-tree", proc.token])

    def cancel(self) -> None:
        """End the one-off command under way, if any."""
        self._stop_by_exec("SIGKILL", 0, TASK_RECORD, "")

    def _run(self, argv: list[str]) -> str:
        """Run a helper command in the container: through devbox's channel where there is one and it is
        free (a remote engine: no exec of its own), else by an exec."""
        if self.channel is not None:
            try:
                out = self.channel.run(argv)
                if out is not None:
                    return out
            except ChannelFailed:
                self.channel = None  # gone with the container, most likely: the exec says so properly
        try:
            exec_id = self.api.exec_create(self.container_id, argv)["Id"]
            out = self.api.exec_start(exec_id)
        except Exception as e:
            raise docker_error(e, "cannot run a command in the container") from e
        return out.decode("utf-8", "replace") if isinstance(out, bytes) else str(out)


def _show(command: str | tuple[str, ...]) -> str:
    return command if isinstance(command, str) else " ".join(command)


# -- the host's view of processes ------------------------------------------------------------------

def _environ_tokens(pid: int) -> set[str]:
    """The values of TOKEN_VAR in a process's environment (empty if it cannot be read)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            data = f.read()
    except OSError:
        return set()
    prefix = f"{TOKEN_VAR}=".encode()
    return {item[len(prefix):].decode() for item in data.split(b"\0") if item.startswith(prefix)}


def _cgroup_procs_file(pid: int) -> str | None:
    """The cgroup.procs file listing the container's processes (cgroup v1 or v2), if the host has it."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            entries = [line.rstrip("\n").split(":", 2) for line in f]
    except OSError:
        return None
    for _, controllers, path in entries:
        for controller in (controllers.split(",") if controllers else [""]):
            candidate = os.path.join("/sys/fs/cgroup", controller.removeprefix("name="), path.lstrip("/"), "cgroup.procs")
            if os.path.isfile(candidate):
                return candidate
    return None


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _any_alive(pids: set[int]) -> bool:
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    return True
        except (OSError, IndexError):
            continue
    return False


def _signal_each(pids: set[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
