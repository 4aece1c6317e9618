"""The reload loop: wait for something to happen; decide; act; report. A dispatcher over one queue.

Other threads (the watcher, the output pumps, the ready probes, the engine's event stream, the
control socket, signal handlers, timers) only put events on the queue (events.py). The loop drains
everything queued at once, so the changes that arrived while a restart was under way fold into one
more restart, and an exit that came with a change is seen together with it. It hands each event to
the part that owns what it is about:

- the server slot (slot.py): starts, stops, ready lines, what an exit means;
- the container keeper (keeper.py): bring-up, recovery, setup, services, replacement;
- live config (live.py): a config saved during `up`.

Steps that can take long (an image pull, setup, an exec rule) run in a worker thread while the loop's
thread waits for them or for a signal, so Ctrl-C is honoured within a fraction of a second wherever
devbox is.
"""

from __future__ import annotations

__all__ = ["Supervisor"]

import os
import queue
import threading
import time
from typing import Callable, TypeVar

import docker

from .. import output
from ..config import Config
from ..errors import DevboxError
from ..interrupts import Interrupts
from ..prestart import Prestart
from ..watch import Watcher, forget_bytecode, plan
from .eventqueue import EventQueue
from .events import (Changed, ContainerLost, Control, EngineAction, EngineEvent, Event, Exited, Failed,
                     Interrupted, Probed, Retry, Settled, Stop, StoppedBy, Verb)
from .buildhold import SETTLE, BuildHold
from .keeper import ContainerKeeper
from .live import LiveConfig
from .slot import ServerSlot, show

T = TypeVar("T")


class Supervisor:
    def __init__(self, config: Config, client: docker.DockerClient, interrupts: Interrupts, recreate: bool = False,
                 prestart: Prestart | None = None, build: bool = False, debugger: bool = False):
        self.config, self.client, self.interrupts = config, client, interrupts
        self.debugger_flag = debugger  # `up --debugger`: on whatever a reloaded devbox.yaml says
        self.say = output.say
        self.events = EventQueue()  # put() from any thread or a signal handler; the loop sleeps on it
        self.trace = os.environ.get("DEVBOX_TRACE") == "1"  # time each phase of a restart
        self.began = time.time()
        self.watcher: Watcher | None = None
        self.stopped_by: StoppedBy | None = None
        self.stop_mark = 1 << 30  # the signal count of the Stop that ended the loop (none yet)
        self.slot = ServerSlot(self)
        self.keeper = ContainerKeeper(self, recreate, prestart, build)
        self.live = LiveConfig(self)
        self.build_hold = BuildHold()  # changes that rebuild, held until their burst is over

    # -- the loop ---------------------------------------------------------------------------------

    def run(self) -> int:
        began = time.monotonic()
        self.events.wake_on_signals()
        self.interrupts.listen(self._on_signal)
        self.watch()  # from the start: an edit made while the container starts is not missed
        try:
            self.keeper.bring_up(began)
            self._loop()
        except Interrupted:
            pass
        finally:
            self._shut_down()
            self.events.close()
        return 0

    def _loop(self) -> None:
        slot, keeper = self.slot, self.keeper
        while True:
            batch = self._next_batch()
            for event in batch:
                if isinstance(event, Stop):
                    self.stopped_by, self.stop_mark = StoppedBy.SIGNAL, event.count
                    return
                if isinstance(event, Failed):
                    raise DevboxError(event.message)
            if any((isinstance(e, EngineEvent) and e.container_id == keeper.container_id and
                    e.action is not EngineAction.OTHER) or
                   (isinstance(e, ContainerLost) and e.container_id == keeper.container_id) for e in batch):
                keeper.recover()
            changed = [e for e in batch if isinstance(e, Changed)]
            for event in batch:
                if isinstance(event, Exited) and event.proc is slot.current:
                    slot.on_exit(event.proc, change_follows=bool(changed))
            if changed:
                self.on_changes(set().union(*(e.paths for e in changed)), min(e.seen for e in changed))
            for event in batch:
                if isinstance(event, Probed) and event.proc is slot.current:
                    slot.on_probed(event)
                elif isinstance(event, Retry):
                    slot.on_retry(event)
                elif isinstance(event, Settled):
                    released = self.build_hold.release(event.token)
                    if released is not None:
                        self.on_changes(*released, settled=True)
                elif isinstance(event, Control):
                    self.on_control(event)
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

    # -- decide ---------------------------------------------------------------------------------

    def on_changes(self, paths: set[str], seen: float, settled: bool = False) -> None:
        slot, keeper = self.slot, self.keeper
        if not settled and (self.build_hold.active or plan(paths, self.config.watch.rules).rebuild):
            # a rebuild waits for its burst to end (buildhold.py); what changes meanwhile comes with it
            if not self.build_hold.active:
                self.say(f"rebuild: waiting for {SETTLE:g}s without changes first (a package manager writes "
                         "its files seconds apart)")
            timer = threading.Timer(SETTLE, self.events.put, args=(Settled(self.build_hold.add(paths, seen)),))
            timer.daemon = True
            timer.start()
            return
        # a synced container gets the files while the old server stops: what reads them waits for them
        files_in = keeper.sync(paths)
        paths = self.live.take(paths)
        todo = plan(paths, self.config.watch.rules)
        forget_bytecode(self.config.project_dir, paths)
        stylesheets = [p for p in todo.untouched if p.endswith(".css")]
        if stylesheets and files_in():
            slot.stylesheets_changed(stylesheets)
        if (todo.exec or todo.setup or todo.rebuild) and not files_in():
            return
        for command in todo.exec:
            self.say(f"running `{show(command)}` ({todo.reason})")
            slot.run_in_container(command)
        if todo.exec:
            slot.invalidate_preload()
        if todo.rebuild and not keeper.rebuild(todo.reason):
            return  # the build failed: the running container and server stay
        if todo.setup:
            slot.stop()
            if not slot.setup():
                self.say("setup failed; waiting for a change")
                return
            keeper.mark_setup_done()
        if todo.restart and slot.held_back(paths, files_in):
            return
        if todo.restart:
            slot.restart(todo.reason, seen, files_in)

    def on_control(self, event: Control) -> None:
        slot = self.slot
        if event.verb is Verb.DOWN:
            self.say("`devbox down` was run: stopping the server; `down` removes the container")
            self.stopped_by = StoppedBy.DOWN
            slot.stop()
            event.reply({"ok": True})
        elif event.verb is Verb.RESTART:
            slot.waiting.append(event.reply)  # answered by the ready line (or the crash)
            slot.restart("`devbox restart`", time.monotonic())
        elif event.verb is Verb.REBUILD:
            if self.config.build is None:
                event.reply({"ok": False, "error": f"{self.config.file.name} has no `build:`: nothing to rebuild"})
                return
            slot.waiting.append(event.reply)
            seen = time.monotonic()
            if self.keeper.rebuild("`devbox rebuild`"):
                slot.restart("`devbox rebuild`", seen)
            else:
                slot.answer_waiting({"ok": False, "line": "the build failed; the running container and server stay"})
        elif event.verb is Verb.STATUS:
            sync = {"sync": self.keeper.syncer.status()} if self.keeper.syncer is not None else {}
            event.reply({"ok": True, "status": {"up_pid": os.getpid(), "up_since": self.began, **slot.status(), **sync}})
        else:
            event.reply({"ok": False, "error": f"unknown request '{event.verb}'"})

    # -- the loop's own tools, for the parts -----------------------------------------------------

    def watch(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        cfg = self.config
        self.watcher = Watcher(cfg.watch.paths, cfg.project_dir, cfg.watch.ignore, cfg.watch.debounce_ms,
                               on_change=lambda paths, seen: self.events.put(Changed(paths, seen)),
                               poll=cfg.watch.poll, always=cfg.watched_files(), on_warning=self.say,
                               on_failure=lambda line: self.events.put(Failed(line)))
        self.watcher.start()

    def hurried_since(self, mark: int, note_after: float | None = None) -> Callable[[], bool]:
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

    def trace_at(self, since: float, what: str) -> None:
        if self.trace:
            self.say(f"trace: {what} at {1000 * (time.monotonic() - since):.0f}ms")

    def pause(self, seconds: float) -> None:
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

    def interruptible(self, work: Callable[[], T], cancel: Callable[[], None] | None = None) -> T:
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
                    self.quietly(cancel)
                done.wait(1.0)
                raise Interrupted
        ok, value = result[0]
        if not ok:
            raise value
        return value

    def quietly(self, action: Callable[[], object]) -> None:
        try:
            action()
        except DevboxError as e:
            self.say(str(e))

    def _shut_down(self) -> None:
        # a signal after the one that stopped us hurries the stop, even one that came before the loop got here
        mark = min(self.interrupts.count, self.stop_mark)
        output.stop_waiting()
        self.keeper.close()
        if self.watcher is not None:
            self.watcher.stop()
        if self.slot.launcher is None:
            self.slot.close()
            return
        try:
            self.slot.stop(hurry=self.hurried_since(mark, note_after=1.0))
        except DevboxError as e:
            self.say(str(e))
        self.slot.let_go()
        self.slot.close()
        if self.stopped_by is StoppedBy.DOWN:
            return  # `devbox down` removes the container
        self.say("stopping container")
        self.keeper.stop()


