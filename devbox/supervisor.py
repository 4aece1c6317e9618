"""The reload loop: wait for something to happen; decide; act; report. One loop, top to bottom.

Other threads (the watcher, the output pumps, the ready probes, the engine's
event stream, the control socket, signal handlers) only put events on a queue.
The loop drains everything queued at once, so the changes that arrived while a
restart was under way fold into one more restart, and an exit that came with a
change is seen together with it.

Steps that can take long (an image pull, setup, an exec rule) run in a worker
thread while the loop's thread waits for them or for a signal, so Ctrl-C is
honoured within a fraction of a second wherever devbox is.
"""

from __future__ import annotations

__all__ = ["Supervisor"]

import enum
import json
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

import docker

from . import output
from .compose import Services, remember_started
from .config import LOCAL_NAME, Config, load, read_env_file
from .container import LABEL_HASH, Box, EventFollower, Outcome
from .errors import ConfigError, ContainerError, ContainerGone, DevboxError, DockerUnavailable
from .eventqueue import EventQueue
from .exits import ExitAction, ExitFacts, ExitHistory, decide_exit
from .exposure import exposure_warnings
from .interrupts import Interrupts
from .lock import runtime_dir
from .logs import ServerLog
from .ports import port_in_use_error, taken_ports
from .prestart import Prestart
from .ready import ProbeOutcome, wait_ready
from .preload import ColdMemory, PreloadLauncher, wants_preload
from .reloaders import own_reloader_hint, parse_tree
from .server import ExecLauncher, ServerProcess, command_argv, server_command
from .syntax import host_errors
from .watch import Watcher, forget_bytecode, plan

CRASH_LINES = 10
RECOVERY_LIMIT, RECOVERY_WINDOW = 5, 60.0  # container losses in seconds before `up` gives up
T = TypeVar("T")


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
    outcome: ProbeOutcome
    at: float
    error: str = ""  # for ProbeOutcome.FAILED: what broke


@dataclass
class Stop:
    signal: str  # the signal's name (SIGINT, SIGTERM, SIGHUP)
    count: int = 0  # signals counted when it was sent: any signal after it hurries the stop


class EngineAction(enum.Enum):
    """What the engine's event stream says of devbox's container (only what the loop acts on)."""

    DIED = "die"
    DESTROYED = "destroy"
    ENGINE_LOST = "engine-lost"  # the stream itself broke
    OTHER = "other"

    @classmethod
    def of(cls, action: str) -> "EngineAction":
        return next((a for a in cls if a.value == action), cls.OTHER)


@dataclass
class EngineEvent:
    container_id: str
    action: EngineAction


@dataclass
class ContainerLost:
    """The loop found, itself, that the container or the engine went away (a start could not exec)."""

    container_id: str


@dataclass
class Retry:
    generation: int  # the start this retry was planned after; stale once another start happened
    reason: str = "restart after exit 3"
    seen: float | None = None  # when its cause was seen (None: when the retry is due)


@dataclass
class Failed:
    message: str  # a helper thread died: `up` ends with this line, exit 1


class Verb(enum.Enum):
    """What another devbox command asks of the running `up` (through control.py)."""

    DOWN = "down"
    RESTART = "restart"
    REBUILD = "rebuild"
    STATUS = "status"


@dataclass
class Control:
    verb: Verb | str  # a string: a verb this devbox does not know (a newer client's), answered as such
    reply: Callable[[dict[str, Any]], None] = field(repr=False)

    @classmethod
    def parse(cls, verb: str, reply: Callable[[dict[str, Any]], None]) -> "Control":
        return cls(next((v for v in Verb if v.value == verb), verb), reply)


class StoppedBy(enum.Enum):
    SIGNAL = "signal"  # Ctrl-C, SIGTERM, SIGHUP: the container is stopped, kept for the next `up`
    DOWN = "down"  # `devbox down`: it removes the container


Event = Changed | Exited | Probed | Stop | EngineEvent | ContainerLost | Retry | Failed | Control


class Interrupted(Exception):
    """A signal (or `devbox down`) arrived while a long step was under way."""


class Supervisor:
    def __init__(self, config: Config, client: docker.DockerClient, interrupts: Interrupts, recreate: bool = False,
                 prestart: Prestart | None = None, build: bool = False):
        self.config, self.client, self.interrupts, self.recreate = config, client, interrupts, recreate
        self.build = build  # `up --build`: build the image even if its inputs did not change
        self.network = ""  # the Compose project's network, once its services are up
        self.prestart = prestart
        self.say = output.say
        self.events = EventQueue()  # put() from any thread or a signal handler; the loop sleeps on it
        self.box = Box(client, config, self.say)
        self.container_id = ""
        self.container_ip: str | None = None
        self.started_at = ""  # the container's StartedAt: a different one means it was restarted behind us
        self.launcher: ExecLauncher | None = None
        self.launcher_for: tuple = ()  # the config values the launcher was made for
        self.recoveries: list[float] = []  # when the container was last brought back
        self.follower: EventFollower | None = None
        self.watcher: Watcher | None = None
        self.current: ServerProcess | None = None
        self.reason = ""  # why the current server was started, for the ready line
        self.seen = 0.0  # when the change behind the current start was seen
        self.started = 0.0  # when the current server was started
        self.generation = 0  # counts starts, so that a planned retry knows whether it is still due
        self.exits = ExitHistory()  # what the exit backoffs count
        self.stopped_by: StoppedBy | None = None
        self.stop_mark = 1 << 30  # the signal count of the Stop that ended the loop (none yet)
        self.waiting: list[Callable[[dict[str, Any]], None]] = []  # `devbox restart`s waiting for the ready line
        self.last_ready: tuple[float, float] | None = None  # (when, how long it took)
        # from the exec to ready, last time, for preloaded and for cold starts apart: a cold start's time
        # taken as a preloaded one's would hold the next probe back, and the ready line would say so
        self.start_took: dict[bool, float] = {}
        self.began = time.time()
        self.trace = os.environ.get("DEVBOX_TRACE") == "1"  # time each phase of a restart
        self.log = ServerLog(config.name, on_failure=self.say)  # the server's output, for `devbox logs`
        self.cold_check: ServerProcess | None = None  # a cold start telling whether preloading made one fail
        self.cold_check_code: int | None = None  # how the preloaded one exited
        self.reloader_looked = threading.Event()  # the first ready server's tree was looked at (once per `up`)
        self.said: set[str] = set()  # lines said once per `up` (a new launcher finds preloading off again)
        self.services_started = 0.0  # when this `up` started Compose services (0: it started none)

    # -- the loop ---------------------------------------------------------------------------------

    def run(self) -> int:
        began = time.monotonic()
        if isinstance(self.events, EventQueue):
            self.events.wake_on_signals()
        self.interrupts.listen(self._on_signal)
        self._watch()  # from the start: an edit made while the container starts is not missed
        try:
            self._bring_up(began)
            self._loop()
        except Interrupted:
            pass
        finally:
            self._shut_down()
            if isinstance(self.events, EventQueue):
                self.events.close()
        return 0

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            for event in batch:
                if isinstance(event, Stop):
                    self.stopped_by, self.stop_mark = StoppedBy.SIGNAL, event.count
                    return
                if isinstance(event, Failed):
                    raise DevboxError(event.message)
            if any((isinstance(e, EngineEvent) and e.container_id == self.container_id and
                    e.action is not EngineAction.OTHER) or
                   (isinstance(e, ContainerLost) and e.container_id == self.container_id) for e in batch):
                self._recover()
            changed = [e for e in batch if isinstance(e, Changed)]
            for event in batch:
                if isinstance(event, Exited) and event.proc is self.current:
                    self._on_exit(event.proc, change_follows=bool(changed))
            if changed:
                self._on_changes(set().union(*(e.paths for e in changed)), min(e.seen for e in changed))
            for event in batch:
                if isinstance(event, Probed) and event.proc is self.current:
                    self._on_probed(event)
                elif isinstance(event, Retry) and event.generation == self.generation and self.current is None:
                    self._start(event.reason, time.monotonic() if event.seen is None else event.seen)
                elif isinstance(event, Control):
                    self._on_control(event)
                    if self.stopped_by:
                        return

    def _next_batch(self) -> list[Event]:
        # no timer: a signal handed to any thread wakes the main thread through the queue's wakeup fd
        batch = [self.events.get()]
        while True:
            try:
                batch.append(self.events.get_nowait())
            except queue.Empty:
                return batch

    def _on_signal(self, name: str) -> None:
        # Only enqueue (SimpleQueue.put is safe in a handler): the loop acts. Nothing here may take a lock,
        # printing included: the handler runs in the main thread, which may hold that lock at that moment.
        # A later signal hurries the stop (SIGKILL now); it never abandons it.
        self.events.put(Stop(name, self.interrupts.count))

    def _hurried_since(self, mark: int, note_after: float | None = None) -> Callable[[], bool]:
        """A `hurry` for a stop: true once a signal came after `mark`; says so, once, for a second signal.
        With `note_after`: a stop still waiting after that many seconds says, once, how to hurry it (so the
        user, and a test, know the first signal was taken)."""
        said = noted = False
        began = time.monotonic()

        def hurry() -> bool:
            nonlocal said, noted
            if not self.interrupts.since(mark):
                if note_after is not None and not noted and time.monotonic() - began > note_after:
                    noted = True
                    self.say("still stopping the server; Ctrl-C again ends it now")
                return False
            if not said and self.interrupts.count > 1:
                said = True
                self.say(f"{self.interrupts.last} again: still stopping; ending the server now")
            return True
        return hurry

    def _say_once(self, line: str) -> None:
        if line not in self.said:
            self.said.add(line)
            self.say(line)

    def _trace(self, since: float, what: str) -> None:
        if self.trace:
            self.say(f"trace: {what} at {1000 * (time.monotonic() - since):.0f}ms")

    # -- bring up, and back ---------------------------------------------------------------------

    def _bring_up(self, began: float) -> None:
        for line in exposure_warnings(self.config):
            self.say(f"warning: {line}")
        prestarted = self.prestart is not None and self.prestart.started()
        self._check_ports(prestarted)
        if self.config.compose is not None:
            self._services_up()
        try:
            # a pull or a build may take minutes: interruptible
            image_id = self._interruptible(lambda: self.box.ensure_image(force_build=self.build))
            self._say_image_entrypoint(image_id)
            # creating and starting take a second at most: done here, so that a signal meanwhile finds
            # the container attached and the shutdown stops it
            container, outcome = self.box.ensure(self.recreate, prestarted, image_id)
        except BaseException:
            if prestarted:  # leave the container as we found it: stopped
                self._quietly(self.box.stop)
            raise
        self._attach(container)
        if self.interrupts.count:
            raise Interrupted
        self._trace(began, f"container {outcome.value}")
        # only a container that kept running can hold a server left by a `devbox up` killed with -9
        if outcome is Outcome.REUSED and self.launcher.end_leftover(self.config.stop_signal, self.config.stop_timeout):
            self.say("ended a server left running by an earlier `devbox up`")
        self._ensure_setup(container, outcome)
        self._start("start", began)
        self._trace(began, "server exec started")

    def _say_image_entrypoint(self, image_id: str) -> None:
        """The image's ENTRYPOINT is not run unless `entrypoint:` says so: say it once, with how."""
        if self.config.entrypoint is not None:
            return
        try:
            entrypoint = (self.client.api.inspect_image(image_id).get("Config") or {}).get("Entrypoint") or []
        except Exception:
            return  # a note, not a check
        if entrypoint:
            shown = json.dumps(entrypoint)
            self.say(f"the image's ENTRYPOINT {shown} is not run: devbox starts `command` itself; to run it before "
                     f"every server start, add `entrypoint: {shown}` to {self.config.file.name} (`entrypoint: []` "
                     "keeps it off without this line)")

    def _check_ports(self, prestarted: bool) -> None:
        """A port another program holds ends `up` now, not after a build or the services' start (without
        those, the container's own start finds it as soon)."""
        nothing_slow_first = self.config.build is None and self.config.compose is None
        if prestarted or not self.config.ports or nothing_slow_first:
            return  # (prestarted: the container devbox just started publishes them)
        container = self.box.find()
        if container is not None and container.status == "running":
            return
        taken = taken_ports(self.config.ports)
        if taken:
            raise port_in_use_error(self.config, taken)

    def _services_up(self) -> None:
        """Start the Compose services `compose:` names (left running by Ctrl-C, stopped by `down`)."""
        cfg = self.config.compose
        assert cfg is not None
        if not cfg.services:
            return  # nothing to start, no network to join
        services = self._interruptible(lambda: Services.resolve(cfg.file, cfg.services, self.config.file.name))
        started = self._interruptible(lambda: services.up(self.say, self._address_of))
        remember_started(self.config.name, started)
        if started:
            self.services_started = time.monotonic()
        self.network = services.network
        self.box = Box(self.client, self.config, self.say, self.network)

    def _address_of(self, container_id: str, network: str = "") -> str | None:
        """A container's address on `network` (any of its networks, for ""), where this machine can reach
        it: a Linux engine on this machine routes to its bridge networks; Docker Desktop's VM does not."""
        if sys.platform != "linux" or not self.client.api.base_url.startswith("http+docker://"):
            return None
        try:
            networks = self.client.api.inspect_container(container_id)["NetworkSettings"]["Networks"] or {}
        except Exception:
            return None
        found = [networks.get(network) or {}] if network else list(networks.values())
        return next((n["IPAddress"] for n in found if n.get("IPAddress")), None)

    def _attach(self, container) -> None:
        """Make `container` the one the loop runs the server in and follows events of."""
        if self.follower is not None:
            self.follower.close()
        self.container_id = container.id
        self.container_ip = self._address_of(container.id)  # the ready probe's way past Docker's proxy
        state = self.box.state(container.id)
        self.started_at = state.started_at if state else ""
        self._new_launcher()
        self.follower = EventFollower(self.client, container.id,
                                      lambda action, cid=container.id:
                                      self.events.put(EngineEvent(cid, EngineAction.of(action))))

    def _new_launcher(self) -> None:
        """The launcher for the current container and config: preloaded where it can be, else cold."""
        if self.launcher is not None:
            self.launcher.close()
        cfg = self.config
        command = server_command(cfg.command, cfg.entrypoint)
        preload, why = wants_preload(cfg.preload, command)
        if cfg.preload and not preload:
            self.say(f"preload off: {why}")
        if preload:
            self.launcher = PreloadLauncher(self.client.api, self.container_id, cfg.workdir,
                                            cfg.container_path(cfg.project_dir) or cfg.workdir, command,
                                            self._say_once, ColdMemory(runtime_dir() / f"{cfg.name}.preload.json"))
        else:
            self.launcher = ExecLauncher(self.client.api, self.container_id, cfg.workdir)
        self.launcher.log = self.log.write
        self.launcher_for = (cfg.preload, command, cfg.project_dir)

    def _ensure_setup(self, container, outcome: Outcome) -> None:
        """Run setup unless this container finished it; a failed first setup removes the container."""
        if not self.config.setup or self.box.setup_done(container):
            return
        if outcome is not Outcome.CREATED:
            self.say("setup did not finish in this container last time; running it again")
        if self._setup():
            self.box.mark_setup_done(container)
            return
        if outcome is Outcome.CREATED:
            self.box.remove(container)  # so that the next `up` runs setup again on a fresh container
            self.launcher = None
            raise ContainerError(f"setup failed, container removed: fix `setup` in {self.config.file.name} "
                                 "and run `devbox up` again")
        raise ContainerError(f"setup failed: fix `setup` in {self.config.file.name} and run `devbox up` again")

    def _recover(self) -> None:
        """The container stopped, was removed, or the engine went away: bring it all back, then serve."""
        waited = False
        transient = 0
        while True:
            try:
                state = self.box.state(self.container_id)
                if state is not None and state.status == "running" and state.started_at == self.started_at \
                        and self.current is not None and not self.current.exited.is_set():
                    return  # nothing happened to it after all (an event of our own making)
                self._count_recovery()
                if waited:
                    self.say("the Docker engine answers again")
                elif state is None or state.status in ("removing", "dead"):
                    self.say("the container was removed outside devbox (`docker rm`?); creating it again")
                elif state.status != "running":
                    self.say("the container was stopped outside devbox (`docker stop` or `kill`?); starting it again")
                elif state.started_at != self.started_at:
                    self.say("the container was restarted outside devbox (`docker restart`?); starting the server again")
                else:
                    self.say("lost the server's connection; starting it again")
                self.current = None  # its processes went with the container, or are ended as leftovers below
                removal_ends = time.monotonic() + 10
                while state is not None and state.status in ("removing", "dead") and time.monotonic() < removal_ends:
                    self._pause(0.05)  # `docker rm` under way: a new container of the same name must wait for it
                    state = self.box.state(self.container_id)
                image_id = self._interruptible(self.box.ensure_image)
                container, outcome = self.box.ensure(image_id=image_id)
                self._attach(container)
                if outcome is not Outcome.CREATED:
                    self.launcher.end_leftover(self.config.stop_signal, self.config.stop_timeout)
                self._ensure_setup(container, outcome)
                self._start("container back", time.monotonic())
                return
            except DockerUnavailable as e:
                if not waited:
                    self.say(f"{e}; waiting for it to come back (Ctrl-C to stop)")
                    waited = True
                self._pause(1.0)
            except ContainerGone:
                transient += 1  # removed or restarted again while we looked: look again, a few times
                if transient > 20:
                    raise
                self._pause(0.1)

    def _count_recovery(self) -> None:
        """Bringing the container back is for accidents: one that keeps stopping (its main process cannot
        run, say a mount over /lib) must end `up` with a line, not loop for ever."""
        now = time.monotonic()
        self.recoveries = [t for t in self.recoveries if now - t < RECOVERY_WINDOW] + [now]
        if len(self.recoveries) > RECOVERY_LIMIT:
            raise ContainerError(f"the container stopped {RECOVERY_LIMIT + 1} times within "
                                 f"{RECOVERY_WINDOW:g}s; devbox gave up bringing it back: see "
                                 f"`docker logs {self.box.container_name}` and the mounts in {self.config.file.name}")

    def _pause(self, seconds: float) -> None:
        """Wait, but end at once on a stop; other events wait in the queue for the loop."""
        kept: list[Event] = []
        deadline = time.monotonic() + seconds
        try:
            while (left := deadline - time.monotonic()) > 0:
                try:
                    event = self.events.get(timeout=left)
                except queue.Empty:
                    break
                if isinstance(event, Stop):
                    self.stopped_by, self.stop_mark = StoppedBy.SIGNAL, event.count
                    raise Interrupted
                kept.append(event)
        finally:
            for event in kept:
                self.events.put(event)

    def _interruptible(self, work: Callable[[], T], cancel: Callable[[], None] | None = None) -> T:
        """Run `work` in a worker thread; a signal meanwhile cancels it and raises Interrupted."""
        result: list = []
        done = threading.Event()

        def worker() -> None:
            try:
                result.append((True, work()))
            except BaseException as e:
                result.append((False, e))
            finally:
                done.set()

        threading.Thread(target=worker, name="devbox-step", daemon=True).start()
        while not done.wait(0.05):
            if self.interrupts.count or self.stopped_by:  # a signal since `up` began: stopping
                if cancel is not None:
                    self._quietly(cancel)
                done.wait(1.0)
                raise Interrupted
        ok, value = result[0]
        if not ok:
            raise value
        return value

    def _quietly(self, action: Callable[[], object]) -> None:
        try:
            action()
        except DevboxError as e:
            self.say(str(e))

    def _shut_down(self) -> None:
        # a signal after the one that stopped us hurries the stop, even one that came before the loop got here
        mark = min(self.interrupts.count, self.stop_mark)
        output.stop_waiting()
        if self.follower is not None:
            self.follower.close()
        if self.watcher is not None:
            self.watcher.stop()
        if self.launcher is None:
            return
        try:
            self._stop_server(hurry=self._hurried_since(mark, note_after=1.0))
        except DevboxError as e:
            self.say(str(e))
        self.launcher.close()
        if self.stopped_by is StoppedBy.DOWN:
            return  # `devbox down` removes the container
        self.say("stopping container")
        self._quietly(lambda: self.box.stop())

    # -- decide ---------------------------------------------------------------------------------

    def _on_changes(self, paths: set[str], seen: float) -> None:
        if paths & self.config_files and not self._reload_config():
            paths -= self.config_files  # an invalid or failing config changes nothing
        paths -= self._bad_env_files(paths)
        todo = plan(paths, self.config.watch.rules)
        forget_bytecode(self.config.project_dir, paths)
        for command in todo.exec:
            self.say(f"running `{_show(command)}` ({todo.reason})")
            self._run_in_container(command)
        if todo.exec:
            self._invalidate_preload()
        if todo.rebuild and not self._rebuild(todo.reason):
            return  # the build failed: the running container and server stay
        if todo.setup:
            self._stop_server()
            if not self._setup():
                self.say("setup failed; waiting for a change")
                return
            self.box.mark_setup_done(self.box.find())
        if todo.restart and self._held_back(paths):
            return
        if todo.restart:
            self._restart(todo.reason, seen)

    def _bad_env_files(self, paths: set[str]) -> set[str]:
        """Changed env files with a line no process could take: said, and no restart for them (every
        start would fail until they are fixed)."""
        bad = set()
        for path in self.config.env_files:
            try:
                relative = path.resolve().relative_to(self.config.project_dir).as_posix()
            except ValueError:
                continue
            problems: list[tuple[int, str]] = []
            if relative in paths:
                read_env_file(path, problems)
            for number, message in problems:
                self.say(f"{relative}:{number}: {message}")
            if problems:
                self.say(f"{relative} not applied; the server runs on with what it had")
                bad.add(relative)
        return bad

    def _held_back(self, paths: set[str]) -> bool:
        """Every changed .py file fails to parse, here and in the container: keep the old server serving."""
        errors = host_errors(self.config.project_dir, paths)
        if not errors or self.launcher is None:
            return False
        inside = [self.config.container_path(self.config.project_dir / line.split(":", 1)[0]) for line in errors]
        if None in inside or self.launcher.parses_inside([p for p in inside if p]):
            return False  # not mounted, no python3 there, or its grammar accepts one: the container decides
        for line in errors:
            self.say(line)
        self.say("kept the running server: save a fix and it restarts")
        return True

    @property
    def config_files(self) -> set[str]:
        """The files whose change reloads the config (env_file entries only restart the server)."""
        return {self.config.file.name, LOCAL_NAME, ".env"}

    def _rebuild(self, reason: str) -> bool:
        """The `rebuild` rule: build the image again and, if it changed, switch to a new container (named
        volumes kept). False if the build failed; the old container and server then keep running."""
        if self.config.build is None:
            self.say(f"rebuild ({reason}): no `build:` in {self.config.file.name}; restarting the server instead")
            return True
        try:
            self._replace_container(self.config, force_build=True)
        except DevboxError as e:
            self._say_failure(e)
            self.say("the running container and server stay; fix it and save again")
            return False
        return True

    def _say_failure(self, error: DevboxError) -> None:
        self.say(str(error))
        for line in getattr(error, "tail", [])[-CRASH_LINES:]:
            self.say(f"  | {line}")

    def _reload_config(self) -> bool:
        """Live config: True if the new file was applied. An invalid file, or one whose container cannot
        be made (image missing, port taken, setup failing), keeps the old container and server."""
        try:
            new = load(self.config.file)
        except ConfigError as e:
            for problem in e.problems:
                self.say(str(problem))
            self.say(f"{self.config.file.name} not applied; the previous config still runs")
            return False
        old = self.config
        if new.container_spec() != old.container_spec() or new.name != old.name:
            try:
                self._replace_container(new)
            except Interrupted:
                raise
            except DevboxError as e:
                self.say(f"{new.file.name} not applied: {e}")
                for line in getattr(e, "tail", [])[-CRASH_LINES:]:
                    self.say(f"  | {line}")
                self.say("the previous container and server still run")
                return False
        self.config = new
        self.box = Box(self.client, new, self.say, self.network)
        if new.watch != old.watch:
            self._watch()
        self.say(f"reloaded {new.file.name}")
        return True

    def _replace_container(self, new: Config, force_build: bool = False) -> None:
        """Make the new config's container beside the old one; switch only once it is up and set up.
        The server is started by the restart that the config change asks for."""
        old = self.config
        new_box = Box(self.client, new, self.say, self.network)
        image_id = self._interruptible(lambda: new_box.ensure_image(force_build))
        old_container = self.box.find()
        if old_container is not None and new.name == old.name and \
                old_container.labels.get(LABEL_HASH) == new_box.config_hash(image_id):
            return  # a rebuild that made the same image: the container stays
        if old_container is not None and new.name == old.name:
            self.say(f"recreating container {old_container.name}: {new_box.what_changed(old_container.labels, image_id)}")
        self._stop_server()
        self.launcher.close()  # its preloader goes with the old container: not a reason to preload no more
        self._quietly(lambda: self.box.stop(old_container))  # frees its ports for the new one
        container = None
        try:
            container = new_box.create(image_id, temporary=True)
            self._attach(container)
            self.config = new  # setup runs with the new env
            self._ensure_setup(container, Outcome.CREATED)
        except BaseException:
            self.config = self.box.config
            if container is not None:
                self._quietly(lambda: new_box.remove(container))
            if old_container is not None:  # back to the old container and server
                self.box.start(old_container)
                self._attach(old_container)
                self._start("previous config", time.monotonic())
            raise
        if old_container is not None:
            if new.name != self.box.config.name:
                self.say(f"container {old_container.name} is no longer this project's: stopped, kept for `down`")
            else:
                self.box.remove(old_container)
        new_box.take_name(container)
        new_box.drop_replaced_image()

    def _on_exit(self, proc: ServerProcess, change_follows: bool) -> None:
        code = proc.exit_code
        if self._container_went_away(code):
            self._recover()
            return
        facts = ExitFacts(code=code, ready=proc.ready, preloaded=proc.preloaded,
                          preloading=isinstance(self.launcher, PreloadLauncher), change_follows=change_follows,
                          ran_for=time.monotonic() - self.started,
                          since_services=time.monotonic() - self.services_started if self.services_started else None,
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
                self._restart("server asked to restart (exit 3)", time.monotonic())
            else:
                self._retry_after(decision.delay, Retry(self.generation))
            return
        self._stop_server()  # the leader is gone; end whatever it left running
        if action is ExitAction.RETRY_LATER:
            self._retry_after(decision.delay, Retry(self.generation, self.reason, self.seen))
        elif action is ExitAction.COLD_CHECK:
            assert isinstance(self.launcher, PreloadLauncher)
            self.launcher.start_cold_once()
            self._start(self.reason, self.seen)
            self.cold_check, self.cold_check_code = self.current, code
        else:
            self._say_crash(proc, change_follows)

    def _retry_after(self, delay: float, retry: Retry) -> None:
        timer = threading.Timer(delay, self.events.put, args=(retry,))
        timer.daemon = True  # a pending retry must not hold up devbox's exit
        timer.start()

    def _say_crash(self, proc: ServerProcess, change_follows: bool) -> None:
        code = proc.exit_code
        self.cold_check = None
        if code == 127:
            self.say(f"command not found in the container: `{_show(self.config.command)}` "
                     f"(check `command` in {self.config.file.name} and that the image has it)")
        else:
            why = " before it was ready (uvicorn does that when the app cannot be imported)" if code == 3 else ""
            self.say(f"server exited with code {code}{why}; last lines:")
            for line in list(proc.tail)[-CRASH_LINES:]:
                self.say(f"  | {line}")
        if not change_follows:
            self.say("waiting for a change to start it again")
        self._answer_waiting({"ok": False, "line": f"server exited with code {code}; see `devbox logs`"})

    def _container_went_away(self, code: int | None) -> bool:
        """An exit that is the container's doing (stopped, killed, restarted) rather than the server's own."""
        if code is not None and code < 128:
            return False
        deadline = time.monotonic() + 1.0  # the engine may not have recorded the container's death yet
        while True:
            try:
                state = self.box.state(self.container_id)
            except DockerUnavailable:
                return True
            if state is None or state.status != "running" or state.started_at != self.started_at:
                return True
            if code is None or time.monotonic() > deadline:
                return code is None  # None: the exec's connection broke; the server is ended as a leftover
            time.sleep(0.02)

    def _on_probed(self, event: Probed) -> None:
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
        if line:
            self.say(line)
            self._answer_waiting({"ok": event.proc.ready, "line": line})

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

    def _answer_waiting(self, answer: dict[str, Any]) -> None:
        waiting, self.waiting = self.waiting, []
        for reply in waiting:
            reply(answer)

    def _on_control(self, event: Control) -> None:
        if event.verb is Verb.DOWN:
            self.say("`devbox down` was run: stopping the server; `down` removes the container")
            self.stopped_by = StoppedBy.DOWN
            self._stop_server()
            event.reply({"ok": True})
        elif event.verb is Verb.RESTART:
            self.waiting.append(event.reply)  # answered by the ready line (or the crash)
            self._restart("`devbox restart`", time.monotonic())
        elif event.verb is Verb.REBUILD:
            if self.config.build is None:
                event.reply({"ok": False, "error": f"{self.config.file.name} has no `build:`: nothing to rebuild"})
                return
            self.waiting.append(event.reply)
            seen = time.monotonic()
            if self._rebuild("`devbox rebuild`"):
                self._restart("`devbox rebuild`", seen)
            else:
                self._answer_waiting({"ok": False, "line": "the build failed; the running container and server stay"})
        elif event.verb is Verb.STATUS:
            event.reply({"ok": True, "status": self._status()})
        else:
            event.reply({"ok": False, "error": f"unknown request '{event.verb}'"})

    def _status(self) -> dict[str, Any]:
        """What `devbox status` shows of the running `up` (the container's side comes from the engine)."""
        proc = self.current
        server = None
        if proc is not None and not proc.exited.is_set():
            try:
                pid = self.client.api.exec_inspect(proc.exec_id).get("Pid") or None
            except Exception:
                pid = None
            server = {"pid": pid, "uptime_s": round(time.monotonic() - self.started, 1),
                      "ready": proc.ready, "started_because": self.reason}
        return {"up_pid": os.getpid(), "up_since": self.began, "server": server, "restarts": max(0, self.generation - 1),
                "last_ready": None if self.last_ready is None else
                {"at": self.last_ready[0], "took_s": round(self.last_ready[1], 3)}}

    # -- act ------------------------------------------------------------------------------------

    def _restart(self, reason: str, seen: float) -> None:
        acted = time.monotonic()
        self._stop_server()
        stopped = time.monotonic()
        self._start(reason, seen)
        if self.trace:
            self.say(f"trace: seen->act {1000 * (acted - seen):.1f}ms, "
                     f"stop ({self.launcher.last_stop or 'none'}) {1000 * (stopped - acted):.1f}ms, "
                     f"start exec ({self.launcher.last_start}) {1000 * (time.monotonic() - stopped):.1f}ms")

    def _start(self, reason: str, seen: float) -> None:
        assert self.launcher is not None
        command = server_command(self.config.command, self.config.entrypoint)
        if self.launcher_for != (self.config.preload, command, self.config.project_dir):
            self._new_launcher()  # the config changed how the server starts
        self.reason, self.seen, self.started = reason, seen, time.monotonic()
        self.generation += 1
        self.log.marker(self.generation, reason)
        try:
            proc = self.launcher.start(command, self.config.server_env(), self.config.ready.log,
                                       on_exit=lambda p: self.events.put(Exited(p)))
        except (ContainerGone, DockerUnavailable):
            self.events.put(ContainerLost(self.container_id))  # the loop brings the container back
            return
        self.current = proc
        threading.Thread(target=self._probe, args=(proc,), daemon=True, name="devbox-ready").start()

    def _probe(self, proc: ServerProcess) -> None:
        started = time.monotonic()
        error = ""
        try:
            outcome = wait_ready(self.config, proc, cancelled=lambda: proc is not self.current,
                                 expected=self.start_took.get(proc.preloaded, 0.0), direct_ip=self.container_ip)
        except Exception as e:  # a bug in a probe must not leave the loop (or a `devbox restart`) without a word
            outcome, error = ProbeOutcome.FAILED, f"{type(e).__name__}: {e}"
        if outcome is ProbeOutcome.READY and proc.exited.is_set():
            outcome = ProbeOutcome.EXITED  # what answered is not this server, which had gone (its exit says so)
        # "started in" is the time to the start itself, not to the end of the wait that it did not fail
        self.events.put(Probed(proc, outcome, started if outcome is ProbeOutcome.NO_CHECK else time.monotonic(), error))

    def _stop_server(self, hurry: Callable[[], bool] | None = None) -> None:
        proc, self.current = self.current, None
        if proc is None or self.launcher is None:
            return
        mark = self.interrupts.count
        try:
            killed = self.launcher.stop(proc, self.config.stop_signal, self.config.stop_timeout,
                                        hurry or self._hurried_since(mark))
        except (ContainerGone, DockerUnavailable):
            return  # the container or the engine went away, and the server with it
        if killed:
            self.say(f"server ignored {self.config.stop_signal} for {self.config.stop_timeout:g}s; killed it")

    def _setup(self) -> bool:
        try:
            for command in self.config.setup:
                self.say(f"setup: {_show(command)}")
                code = self._run_in_container(command)
                if code != 0:
                    self.say(f"setup command failed with exit code {code}: `{_show(command)}`")
                    return False
            return True
        finally:
            self._invalidate_preload()

    def _invalidate_preload(self) -> None:
        """Setup or an exec rule ran: it may have installed packages the preloader imported."""
        if self.launcher is not None:
            self.launcher.invalidate()

    def _run_in_container(self, command: str | tuple[str, ...]) -> int | None:
        launcher = self.launcher
        assert launcher is not None
        try:
            return self._interruptible(lambda: launcher.run(command, self.config.server_env()), cancel=launcher.cancel)
        except ContainerError as e:
            self.say(str(e))
            return -1

    def _watch(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        cfg = self.config
        self.watcher = Watcher(cfg.watch.paths, cfg.project_dir, cfg.watch.ignore, cfg.watch.debounce_ms,
                               on_change=lambda paths, seen: self.events.put(Changed(paths, seen)),
                               poll=cfg.watch.poll, always=cfg.watched_files(), on_warning=self.say,
                               on_failure=lambda line: self.events.put(Failed(line)))
        self.watcher.start()


def _show(command: str | tuple[str, ...]) -> str:
    return command if isinstance(command, str) else " ".join(command)
