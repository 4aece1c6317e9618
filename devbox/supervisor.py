"""The reload loop: wait for a change, an exit or a stop; decide; act; report. One loop, top to bottom.

Other threads (the watcher, the output pump, the ready probe, signal handlers)
only put events on a queue. The loop drains everything queued at once, so the
changes that arrived while a restart was under way fold into one more restart.
"""

from __future__ import annotations

__all__ = ["Supervisor"]

import os
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable

import docker

from .config import LOCAL_NAME, Config, load
from .container import Box
from .errors import ConfigError, ContainerError
from .prestart import Prestart
from .ready import wait_ready
from .server import ExecLauncher, ServerProcess
from .watch import IgnoreRules, Watcher, forget_bytecode, plan

CRASH_LINES = 10


@dataclass
class Changed:
    paths: set[str]
    seen: float


@dataclass
class Exited:
    proc: ServerProcess


@dataclass
class Probed:
    proc: ServerProcess
    outcome: str
    at: float


class Stop:
    pass


Event = Changed | Exited | Probed | Stop


def say(message: str) -> None:
    print(f"devbox: {message}", file=sys.stderr, flush=True)


class Supervisor:
    def __init__(self, config: Config, client: docker.DockerClient, recreate: bool = False,
                 report: Callable[[str], None] = say, prestart: Prestart | None = None):
        self.config, self.client, self.recreate, self.say = config, client, recreate, report
        self.prestart = prestart
        self.events: queue.SimpleQueue[Event] = queue.SimpleQueue()  # put() is safe from signal handlers
        self.box = Box(client, config, report)
        self.launcher: ExecLauncher | None = None
        self.watcher: Watcher | None = None
        self.current: ServerProcess | None = None
        self.reason = ""  # why the current server was started, for the ready line
        self.seen = 0.0  # when the change behind the current start was seen
        self.trace = os.environ.get("DEVBOX_TRACE") == "1"  # time each phase of a restart

    # -- the loop ---------------------------------------------------------------------------------

    def run(self) -> int:
        began = time.monotonic()
        self._watch()  # from the start: an edit made while the container starts is not missed
        previous = {}
        try:
            prestarted = self.prestart is not None and self.prestart.started()
            state = self._ensure_container(self.recreate, prestarted)
            assert self.launcher is not None
            self._trace(began, f"container {state}")
            # only a container that kept running can hold a server left by a `devbox up` killed with -9
            if state == "reused" and self.launcher.end_leftover(self.config.stop_signal, self.config.stop_timeout):
                self.say("ended a server left running by an earlier `devbox up`")
            previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
            self._start("start", began)
            self._trace(began, "server exec started")
            while True:
                batch = self._next_batch()
                if any(isinstance(e, Stop) for e in batch):
                    break
                changed = [e for e in batch if isinstance(e, Changed)]
                if changed:
                    self._on_changes(set().union(*(e.paths for e in changed)), min(e.seen for e in changed))
                    continue  # an exit of the server we just replaced is old news
                for event in batch:
                    if isinstance(event, Probed) and event.proc is self.current:
                        self._on_probed(event)
                    elif isinstance(event, Exited) and event.proc is self.current:
                        self._on_exit(event.proc)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            if self.watcher is not None:
                self.watcher.stop()
            if self.launcher is not None:
                self._stop_server()
                self.say("stopping container")
                self.box.stop()
        return 0

    def _trace(self, since: float, what: str) -> None:
        if self.trace:
            self.say(f"trace: {what} at {1000 * (time.monotonic() - since):.0f}ms")

    def _ensure_container(self, recreate: bool = False, prestarted: bool = False) -> str:
        container, state = self.box.ensure(recreate, prestarted)
        self.launcher = ExecLauncher(self.client.api, container.id, self.config.workdir)
        if state == "created" and self.config.setup and not self._setup():
            self.box.remove(container)  # so that the next `up` runs setup again on a fresh container
            raise ContainerError(f"setup failed, container removed: fix `setup` in {self.config.file.name} "
                                 "and run `devbox up` again")
        return state

    def _watch(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        cfg = self.config
        self.watcher = Watcher(cfg.watch.paths, cfg.project_dir, IgnoreRules.for_project(cfg.project_dir, cfg.watch.ignore),
                               cfg.watch.debounce_ms, lambda paths, seen: self.events.put(Changed(paths, seen)))
        self.watcher.start()

    def _next_batch(self) -> list[Event]:
        batch = [self.events.get()]
        while True:
            try:
                batch.append(self.events.get_nowait())
            except queue.Empty:
                return batch

    def _on_signal(self, signum, frame) -> None:
        # Only enqueue: the loop acts. A second Ctrl-C changes nothing, so shutdown always completes
        # (it is bounded by stop_timeout) and never leaves the container running.
        self.events.put(Stop())

    # -- decide ---------------------------------------------------------------------------------

    def _on_changes(self, paths: set[str], seen: float) -> None:
        if paths & self.config_files:
            self._reload_config()
        todo = plan(paths, self.config.watch.rules)
        forget_bytecode(self.config.project_dir, paths)
        for command in todo.exec:
            self.say(f"running `{_show(command)}` ({todo.reason})")
            self._run_in_container(command)
        if todo.rebuild:
            self.say("rebuild: `build:` is not supported yet; restarting the server instead")
        if todo.setup:
            self._stop_server()
            if not self._setup():
                self.say("setup failed; waiting for a change")
                return
        if todo.restart:
            self._restart(todo.reason, seen)

    @property
    def config_files(self) -> set[str]:
        return {self.config.file.name, LOCAL_NAME}

    def _reload_config(self) -> None:
        """Live config: an invalid file keeps the old config; container keys recreate; the rest restarts."""
        try:
            new = load(self.config.file)
        except ConfigError as e:
            for problem in e.problems:
                self.say(str(problem))
            self.say("config not applied; still running the previous one")
            return
        old, self.config = self.config, new
        self.box = Box(self.client, new, self.say)
        if new.container_spec() != old.container_spec() or new.name != old.name:
            self._stop_server()
            if new.name != old.name:
                Box(self.client, old, self.say).stop()  # no longer this project's: stop, keep for `down`
            self._ensure_container()
        if new.watch != old.watch:
            self._watch()
        self.say(f"reloaded {new.file.name}")

    def _on_exit(self, proc: ServerProcess) -> None:
        code = proc.exit_code
        if code == 3:  # the Django/Werkzeug protocol: "restart me"
            self._restart("server asked to restart (exit 3)", time.monotonic())
            return
        self._stop_server()  # the leader is gone; end whatever it left running in its group
        if code == 127:
            self.say(f"command not found in the container: `{_show(self.config.command)}` "
                     f"(check `command` in {self.config.file.name} and that the image has it)")
        else:
            self.say(f"server exited with code {code}; last lines:")
            for line in list(proc.tail)[-CRASH_LINES:]:
                print(f"  | {line}", file=sys.stderr, flush=True)
        self.say("waiting for a change to start it again")

    def _on_probed(self, event: Probed) -> None:
        took = event.at - self.seen
        if event.outcome == "ready":
            self.say(f"ready in {took:.2f}s ({self.reason})")
        elif event.outcome == "no check":
            self.say(f"started in {took:.2f}s ({self.reason})")
        elif event.outcome == "timeout":
            self.say(f"not ready after {self.config.ready.timeout:g}s ({self.reason}); "
                     "it still runs: check `ready` in " + self.config.file.name)

    # -- act ------------------------------------------------------------------------------------

    def _restart(self, reason: str, seen: float) -> None:
        acted = time.monotonic()
        self._stop_server()
        stopped = time.monotonic()
        self._start(reason, seen)
        if self.trace:
            self.say(f"trace: seen->act {1000 * (acted - seen):.1f}ms, stop {1000 * (stopped - acted):.1f}ms, "
                     f"start exec {1000 * (time.monotonic() - stopped):.1f}ms")

    def _start(self, reason: str, seen: float) -> None:
        assert self.launcher is not None
        self.reason, self.seen = reason, seen
        proc = self.launcher.start(self.config.command, self.config.server_env(), self.config.ready.log,
                                   on_exit=lambda p: self.events.put(Exited(p)))
        self.current = proc
        threading.Thread(target=self._probe, args=(proc,), daemon=True, name="devbox-ready").start()

    def _probe(self, proc: ServerProcess) -> None:
        outcome = wait_ready(self.config, proc, cancelled=lambda: proc is not self.current)
        self.events.put(Probed(proc, outcome, time.monotonic()))

    def _stop_server(self) -> None:
        proc, self.current = self.current, None
        if proc is None or self.launcher is None:
            return
        if self.launcher.stop(proc, self.config.stop_signal, self.config.stop_timeout):
            self.say(f"server ignored {self.config.stop_signal} for {self.config.stop_timeout:g}s; killed it")

    def _setup(self) -> bool:
        for command in self.config.setup:
            self.say(f"setup: {_show(command)}")
            code = self._run_in_container(command)
            if code != 0:
                self.say(f"setup command failed with exit code {code}: `{_show(command)}`")
                return False
        return True

    def _run_in_container(self, command: str | tuple[str, ...]) -> int:
        assert self.launcher is not None
        try:
            return self.launcher.run(command, self.config.server_env())
        except ContainerError as e:
            self.say(str(e))
            return -1


def _show(command: str | tuple[str, ...]) -> str:
    return command if isinstance(command, str) else " ".join(command)
