"""The server slot: the one server process tree the container runs at a time.

It owns the launcher (preloaded or cold), the current server, why and when it was started, its ready
probe and the line that reports it, what an exit means (exits.py decides), and the `devbox restart`s
waiting for the next ready line. The loop hands it events; the container keeper hands it a container.
"""

from __future__ import annotations

__all__ = ["ServerSlot"]

import json
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from .. import output
from ..browser import BrowserFront
from ..container import ContainerState
from ..debugger import CONTAINER_PORT as DEBUG_PORT, DebugSession, launch_configuration
from ..channel import open_channel
from ..debugrelay import DebugRelay
from ..engine import endpoint
from ..errors import ContainerError, ContainerGone, DevboxError, DockerUnavailable
from ..lock import runtime_dir
from ..logs import ServerLog
from ..preload import ColdMemory, PreloadLauncher, wants_preload
from ..ready import ProbeOutcome, wait_ready
from ..reloaders import own_reloader_hint, parse_tree
from ..server import ExecLauncher, ServerProcess, command_argv, server_command
from ..syntax import host_errors
from .events import ContainerLost, Exited, Probed, Retry
from .exits import ExitAction, ExitFacts, ExitHistory, decide_exit

if TYPE_CHECKING:
    from .supervisor import Supervisor

CRASH_LINES = 10


class ServerSlot:
    def __init__(self, loop: "Supervisor"):
        self.loop = loop  # the config, the queue, the user's lines, the interrupt plumbing
        self.launcher: ExecLauncher | None = None
        self.launcher_for: tuple = ()  # what the launcher was made for: a change makes a new one
        self.container_id = ""
        self.current: ServerProcess | None = None
        self.reason = ""  # why the current server was started, for the ready line
        self.seen = 0.0  # when the change behind the current start was seen
        self.started = 0.0  # when the current server was started
        self.generation = 0  # counts starts, so that a planned retry knows whether it is still due
        self.exits = ExitHistory()  # what the exit backoffs count
        self.waiting: list[Callable[[dict[str, Any]], None]] = []  # `devbox restart`s waiting for a ready line
        self.last_ready: tuple[float, float] | None = None  # (when, how long it took)
        # from the exec to ready, last time, for preloaded and for cold starts apart: a cold start's time
        # taken as a preloaded one's would hold the next probe back, and the ready line would say so
        self.start_took: dict[bool, float] = {}
        self.log = ServerLog(loop.config.name, on_failure=loop.say)  # the server's output, for `devbox logs`
        self.cold_check: ServerProcess | None = None  # a cold start telling whether preloading made one fail
        self.cold_check_code: int | None = None  # how the preloaded one exited
        self.reloader_looked = threading.Event()  # the first ready server's tree was looked at (once per `up`)
        self.said: set[str] = set()  # lines said once per `up` (a new launcher finds preloading off again)
        self.debugger: DebugSession | None = None  # the container's debugger (`debugger:`)
        self.relay: DebugRelay | None = None  # 127.0.0.1:debugger.port, for the whole `up`
        self.front: BrowserFront | None = None  # devbox on the first published port (`browser:`)
        self.front_for: tuple | None = None  # (the first port, the browser settings) the front was made for

    @property
    def config(self):
        return self.loop.config

    def say(self, line: str) -> None:
        self.loop.say(line)

    def say_once(self, line: str) -> None:
        if line not in self.said:
            self.said.add(line)
            self.say(line)

    def command(self) -> str | tuple[str, ...]:
        return server_command(self.config.command, self.config.entrypoint)

    # -- the launcher ----------------------------------------------------------------------------

    def attach_container(self, container_id: str, state: ContainerState | None) -> None:
        """A (new) container to run the server in: its debugger, where the browser front forwards to, and
        a launcher for it."""
        self.container_id = container_id
        self._new_debugger(container_id, state.host_port(DEBUG_PORT) if state else None)
        self.open_front()
        upstream = state.host_port(self.config.ports[0].container_port) if state and self.front else None
        if self.front is not None and upstream is not None:
            self.front.set_upstream("127.0.0.1", upstream)
        self.new_launcher()

    def new_launcher(self) -> None:
        """The launcher for the container and the config: preloaded where it can be, else cold."""
        if self.launcher is not None:
            self.launcher.close()
        container_id = self.container_id
        cfg, api = self.config, self.loop.client.api
        command = self.command()
        preload, why = wants_preload(cfg.preload, command)
        if cfg.preload and not preload:
            self.say(f"preload off: {why}")
        if preload:
            self.launcher = PreloadLauncher(api, container_id, cfg.workdir,
                                            cfg.container_path(cfg.project_dir) or cfg.workdir, command,
                                            self.say_once, ColdMemory(runtime_dir() / f"{cfg.name}.preload.json"))
        else:
            self.launcher = ExecLauncher(api, container_id, cfg.workdir)
        self.launcher.log = self.log.write
        if not endpoint().on_this_machine:  # its pids are another machine's: stops go through devbox's channel
            self.launcher.method = "exec"
            try:
                self.launcher.channel = open_channel(api, container_id)
            except DevboxError:
                pass  # the container went away: its recovery makes a new launcher
        self.launcher_for = (cfg.preload, command, cfg.project_dir)
        if self.debugger is not None:
            self.launcher.with_debugger = self.debugger.environment

    # -- the browser front -----------------------------------------------------------------------

    def open_front(self) -> None:
        """With `browser:`, devbox answers on the first published port (in use: `up` ends here)."""
        cfg = self.config
        wanted = (cfg.ports[0], cfg.browser) if cfg.browser is not None and cfg.ports else None
        if self.front is not None and self.front_for != wanted:
            self.front.close()
            self.front = None
        if wanted is not None and self.front is None:
            first, settings = wanted
            self.front = BrowserFront(first.host_ip, first.host_port, settings.reload, settings.hold,
                                      cfg.ready.timeout, self.say, cfg.file.name)
        self.front_for = wanted

    def front_address(self) -> tuple[str, int] | None:
        """Where the ready probe reaches the server past the front (None: as configured)."""
        return self.front.upstream if self.front is not None else None

    def stylesheets_changed(self, paths: list[str]) -> None:
        if paths and self.front is not None:
            self.front.css_changed(paths)

    # -- the debugger ----------------------------------------------------------------------------

    def open_debugger_port(self) -> None:
        """Listen at 127.0.0.1:debugger.port (a port in use ends `up` here, before anything is built)."""
        settings = self.config.debugger
        if self.relay is not None and (settings is None or settings.port != self.relay.port):
            self.relay.close()
            self.relay = None
        if settings is not None and self.relay is None:
            self.relay = DebugRelay(settings.port, self.say, self.config.file.name)

    def _new_debugger(self, container_id: str, host_port: int | None) -> None:
        """The container's debugger (kept while the launcher changes: an attached client stays)."""
        if self.debugger is not None:
            self.debugger.close()
            self.debugger = None
        settings = self.config.debugger
        if settings is None:
            return
        self.open_debugger_port()
        self.debugger = DebugSession(self.loop.client.api, container_id, self.config.workdir, settings, host_port,
                                     self.say, on_ready=self._debugger_ready)

    def _debugger_ready(self, session: DebugSession) -> None:
        if self.relay is None or session is not self.debugger:
            return
        self.relay.target = ("127.0.0.1", session.host_port)
        cfg = self.config
        shown = json.dumps(launch_configuration(self.relay.port, cfg))
        self.say_once(f"debugger: attach a client at 127.0.0.1:{self.relay.port}; VS Code: {shown}")

    def close(self) -> None:
        """This `up` ends: the debugger's port and the browser front close."""
        if self.front is not None:
            self.front.close()
            self.front = None
        if self.debugger is not None:
            self.debugger.close()
        if self.relay is not None:
            self.relay.close()
            self.relay = None

    def let_go(self) -> None:
        """The container goes (replaced): its preloader with it, which is no reason to preload no more."""
        if self.launcher is not None:
            self.launcher.close()
        if self.debugger is not None:
            self.debugger.close()
            self.debugger = None

    def invalidate_preload(self) -> None:
        """Setup or an exec rule ran: it may have installed packages the preloader imported."""
        if self.launcher is not None:
            self.launcher.invalidate()

    # -- start, stop -----------------------------------------------------------------------------

    def restart(self, reason: str, seen: float, files_in: Callable[[], bool] = lambda: True) -> None:
        """Stop, then start once the batch's files are in (a synced container gets them meanwhile; if they
        could not be sent, that was said, and the server starts on the files it has)."""
        acted = time.monotonic()
        self.stop()
        files_in()
        stopped = time.monotonic()
        self.start(reason, seen)
        if self.loop.trace:
            self.say(f"trace: seen->act {1000 * (acted - seen):.1f}ms, "
                     f"stop ({self.launcher.last_stop or 'none'}) {1000 * (stopped - acted):.1f}ms, "
                     f"start exec ({self.launcher.last_start}) {1000 * (time.monotonic() - stopped):.1f}ms")

    def start(self, reason: str, seen: float) -> None:
        assert self.launcher is not None
        command = self.command()
        if self.launcher_for != (self.config.preload, command, self.config.project_dir):
            self.new_launcher()  # the config changed how the server starts
        self.reason, self.seen, self.started = reason, seen, time.monotonic()
        self.generation += 1
        self.log.marker(self.generation, reason)
        events = self.loop.events
        if self.debugger is not None:
            self.debugger.ready()  # a start attaches only to a listening debugger
        try:
            proc = self.launcher.start(command, self.config.server_env(), self.config.ready.log,
                                       on_exit=lambda p: events.put(Exited(p)))
        except (ContainerGone, DockerUnavailable):
            events.put(ContainerLost(self.container_id))  # the loop brings the container back
            return
        self.current = proc
        threading.Thread(target=self.probe, args=(proc,), daemon=True, name="devbox-ready").start()

    def stop(self, hurry: Callable[[], bool] | None = None) -> None:
        proc, self.current = self.current, None
        if proc is None or self.launcher is None:
            return
        if self.front is not None:
            self.front.restarting()  # requests from now on wait for the next server
        mark = self.loop.interrupts.count
        try:
            killed = self.launcher.stop(proc, self.config.stop_signal, self.config.stop_timeout,
                                        hurry or self.loop.hurried_since(mark))
        except (ContainerGone, DockerUnavailable):
            return  # the container or the engine went away, and the server with it
        if killed:
            self.say(f"server ignored {self.config.stop_signal} for {self.config.stop_timeout:g}s; killed it")

    def forget(self) -> None:
        """The server went with its container (or is ended as a leftover): no stop to send."""
        self.current = None

    # -- ready -----------------------------------------------------------------------------------

    def probe(self, proc: ServerProcess) -> None:
        if self.config.debugger is not None and self.config.debugger.wait:
            self._wait_for_debug_client(proc)
        started = time.monotonic()
        error = ""
        try:
            outcome = wait_ready(self.config, proc, cancelled=lambda: proc is not self.current,
                                 expected=self.start_took.get(proc.preloaded, 0.0),
                                 direct_ip=self.loop.keeper.container_ip, published=self.front_address())
        except Exception as e:  # a bug in a probe must not leave the loop (or a `devbox restart`) without a word
            outcome, error = ProbeOutcome.FAILED, f"{type(e).__name__}: {e}"
        if outcome is ProbeOutcome.READY and proc.exited.is_set():
            outcome = ProbeOutcome.EXITED  # what answered is not this server, which had gone (its exit says so)
        # "started in" is the time to the start itself, not to the end of the wait that it did not fail
        at = started if outcome is ProbeOutcome.NO_CHECK else time.monotonic()
        self.loop.events.put(Probed(proc, outcome, at, error))

    def _wait_for_debug_client(self, proc: ServerProcess) -> None:
        """`debugger: {wait: true}`: the server waits for a client; so does its ready probe, or it would time
        out while the user attaches. A wait on the user: it ends with the start (a save, a stop)."""
        while self.relay is not None and not self.relay.sessions and proc is self.current and not proc.exited.is_set():
            time.sleep(0.05)

    def on_probed(self, event: Probed) -> None:
        took = event.at - self.seen
        up = event.outcome in (ProbeOutcome.READY, ProbeOutcome.NO_CHECK)
        if up and event.proc is self.cold_check:
            self.cold_check = None
            if isinstance(self.launcher, PreloadLauncher):
                self.launcher.serves_only_cold(f"the server exited with code {self.cold_check_code} before it was "
                                               "ready when preloaded, and serves cold")
        if up:
            event.proc.ready = True
            self.last_ready = (time.time(), took)
            if self.front is not None:
                self.front.ready()
        if event.outcome is ProbeOutcome.READY:
            self.start_took[event.proc.preloaded] = event.at - self.started  # the next probe waits a share of it
            if not self.reloader_looked.is_set():
                threading.Thread(target=self._hint_own_reloader, args=(event.proc,), daemon=True,
                                 name="devbox-reloader-hint").start()
        lines = {
            ProbeOutcome.READY: f"ready in {took:.2f}s ({self.reason})",
            ProbeOutcome.NO_CHECK: f"started in {took:.2f}s ({self.reason})",
            ProbeOutcome.TIMEOUT: f"not ready after {self.config.ready.timeout:g}s ({self.reason}); it still runs: "
                                  f"check `ready` in {self.config.file.name}",
            ProbeOutcome.FAILED: f"the ready check failed ({event.error}); the server still runs: run `devbox up "
                                 "--debug` and report it",
        }
        line = lines.get(event.outcome, "")  # EXITED and CANCELLED: the exit's line, or the newer start's
        if line and self.config.ready.log is not None:
            # the line that made it ready is on its way to stdout, in another thread: let it go first (a
            # paused reader holds this back for 50 ms at most)
            output.stdout().flush(0.05)
        if line:
            self.say(line)
            self.answer_waiting({"ok": event.proc.ready, "line": line})

    def _hint_own_reloader(self, proc: ServerProcess) -> None:
        """Say once if the framework's own reloader is on (it works, but only polls the files again)."""
        launcher = self.launcher
        if launcher is None:
            return
        try:
            hint = own_reloader_hint(command_argv(self.config.command), parse_tree(launcher.tree(proc)))
        except DevboxError:
            return  # a hint, not a check: the container went away meanwhile
        if proc is not self.current or proc.exited.is_set() or self.reloader_looked.is_set():
            return  # being restarted while we looked: look again at the next ready server
        self.reloader_looked.set()
        if hint:
            self.say(hint)

    def answer_waiting(self, answer: dict[str, Any]) -> None:
        waiting, self.waiting = self.waiting, []
        for reply in waiting:
            reply(answer)

    # -- exits -----------------------------------------------------------------------------------

    def on_exit(self, proc: ServerProcess, change_follows: bool) -> None:
        code = proc.exit_code
        keeper = self.loop.keeper
        if keeper.went_away(code):
            keeper.recover()
            return
        since = time.monotonic() - keeper.services_started if keeper.services_started else None
        facts = ExitFacts(code=code, ready=proc.ready, preloaded=proc.preloaded,
                          preloading=isinstance(self.launcher, PreloadLauncher), change_follows=change_follows,
                          ran_for=time.monotonic() - self.started, since_services=since,
                          ever_ready=self.last_ready is not None, ready_timeout=self.config.ready.timeout)
        decision = decide_exit(facts, self.exits)
        if decision.line:
            self.say(decision.line)
        action = decision.action
        if action is ExitAction.NOTHING:
            return
        if action in (ExitAction.RESTART, ExitAction.RESTART_LATER):
            self.current = None
            if action is ExitAction.RESTART:
                self.restart("server asked to restart (exit 3)", time.monotonic())
            else:
                self.retry_after(decision.delay, Retry(self.generation))
            return
        self.stop()  # the leader is gone; end whatever it left running
        if action is ExitAction.RETRY_LATER:
            self.retry_after(decision.delay, Retry(self.generation, self.reason, self.seen))
        elif action is ExitAction.COLD_CHECK:
            assert isinstance(self.launcher, PreloadLauncher)
            self.launcher.start_cold_once()
            self.start(self.reason, self.seen)
            self.cold_check, self.cold_check_code = self.current, code
        else:
            self._say_crash(proc, change_follows)

    def on_retry(self, retry: Retry) -> None:
        if retry.generation == self.generation and self.current is None:
            self.start(retry.reason, time.monotonic() if retry.seen is None else retry.seen)

    def retry_after(self, delay: float, retry: Retry) -> None:
        timer = threading.Timer(delay, self.loop.events.put, args=(retry,))
        timer.daemon = True  # a pending retry must not hold up devbox's exit
        timer.start()

    def _say_crash(self, proc: ServerProcess, change_follows: bool) -> None:
        code = proc.exit_code
        self.cold_check = None
        if code == 127:
            self.say(f"command not found in the container: `{show(self.config.command)}` "
                     f"(check `command` in {self.config.file.name} and that the image has it)")
        else:
            why = " before it was ready (uvicorn does that when the app cannot be imported)" if code == 3 else ""
            self.say(f"server exited with code {code}{why}; last lines:")
            for line in list(proc.tail)[-CRASH_LINES:]:
                self.say(f"  | {line}")
        if not change_follows:
            self.say("waiting for a change to start it again")
        if self.front is not None:
            self.front.crashed(code, list(proc.tail)[-CRASH_LINES:])
        self.answer_waiting({"ok": False, "line": f"server exited with code {code}; see `devbox logs`"})

    # -- commands in the container ---------------------------------------------------------------

    def setup(self) -> bool:
        try:
            for command in self.config.setup:
                self.say(f"setup: {show(command)}")
                code = self.run_in_container(command)
                if code != 0:
                    self.say(f"setup command failed with exit code {code}: `{show(command)}`")
                    return False
            return True
        finally:
            self.invalidate_preload()

    def run_in_container(self, command: str | tuple[str, ...]) -> int | None:
        launcher = self.launcher
        assert launcher is not None
        try:
            return self.loop.interruptible(lambda: launcher.run(command, self.config.server_env()),
                                           cancel=launcher.cancel)
        except ContainerError as e:
            self.say(str(e))
            return -1

    def held_back(self, paths: set[str], files_in: Callable[[], bool] = lambda: True) -> bool:
        """Every changed .py file fails to parse, here and in the container: keep the old server serving."""
        cfg = self.config
        errors = host_errors(cfg.project_dir, paths)
        if not errors or self.launcher is None:
            return False
        files_in()  # the container's copy is what it parses
        inside = [cfg.container_path(cfg.project_dir / relative) for relative, _ in errors]
        if None in inside or self.launcher.parses_inside([p for p in inside if p]):
            return False  # not mounted, no python3 there, or its grammar accepts one: the container decides
        for _, line in errors:
            self.say(line)
        self.say("kept the running server: save a fix and it restarts")
        return True

    # -- status ----------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The server's side of `devbox status`."""
        proc = self.current
        server = None
        if proc is not None and not proc.exited.is_set():
            try:
                pid = self.loop.client.api.exec_inspect(proc.exec_id).get("Pid") or None
            except Exception:
                pid = None
            server = {"pid": pid, "uptime_s": round(time.monotonic() - self.started, 1),
                      "ready": proc.ready, "started_because": self.reason}
        launcher = self.launcher
        preload = launcher.describe() if isinstance(launcher, PreloadLauncher) else "off"
        return {"server": server, "restarts": max(0, self.generation - 1), "preload": preload,
                "last_ready": None if self.last_ready is None else
                {"at": self.last_ready[0], "took_s": round(self.last_ready[1], 3)}}


def show(command: str | tuple[str, ...]) -> str:
    return command if isinstance(command, str) else " ".join(command)
