"""Keeping the container: bring it up (services, image, container, setup), follow the engine's events
for it, bring it back after `docker kill`/`rm`/`restart` or an engine that went away, and replace it
when its config or image changed (beside the old one, rolling back if the new one cannot be made).
"""

from __future__ import annotations

__all__ = ["ContainerKeeper"]

import json
import sys
import time
from typing import TYPE_CHECKING, Callable

from ..compose import Services, remember_started
from ..config import Config
from ..container import LABEL_HASH, Box, ContainerState, EventFollower, Outcome
from ..debugger import CONTAINER_PORT as DEBUG_PORT
from ..engine import endpoint
from ..errors import ContainerError, ContainerGone, DevboxError, DockerUnavailable, render
from ..exposure import exposure_warnings
from ..ready import unchecked
from ..ports import free_local_port, port_in_use_error, remote_port_lines, taken_ports
from ..prestart import Prestart
from ..sync import Placement, Syncer
from ..tunnel import tunnel_for
from .events import EngineAction, EngineEvent, Interrupted

if TYPE_CHECKING:
    from .supervisor import Supervisor

RECOVERY_LIMIT, RECOVERY_WINDOW = 5, 60.0  # container losses in seconds before `up` gives up


class ContainerKeeper:
    def __init__(self, loop: "Supervisor", recreate: bool = False, prestart: Prestart | None = None,
                 build: bool = False):
        self.loop = loop
        self.recreate, self.prestart = recreate, prestart
        self.build = build  # `up --build`: build the image even if its inputs did not change
        self.network = ""  # the Compose project's network, once its services are up
        self.box = Box(loop.client, loop.config, loop.say)
        self.container_id = ""
        self.container_ip: str | None = None  # where this machine reaches it (the ready probe's way)
        self.started_at = ""  # the container's StartedAt: a different one means it was restarted behind us
        self.follower: EventFollower | None = None
        self.recoveries: list[float] = []  # when the container was last brought back
        self.services_started = 0.0  # when this `up` started Compose services (0: it started none)
        self.syncer: Syncer | None = None  # the container's copy of the files, when they are synced
        self.placement_said = ""
        self.ports_said = False  # where a remote engine's ports are reached, said once an `up`

    @property
    def config(self) -> Config:
        return self.loop.config

    def say(self, line: str) -> None:
        self.loop.say(line)

    # -- up --------------------------------------------------------------------------------------

    def bring_up(self, began: float) -> None:
        loop, slot = self.loop, self.loop.slot
        for line in [*exposure_warnings(self.config), unchecked(self.config)]:
            if line:
                self.say(f"warning: {line}")
        prestarted = self.prestart is not None and self.prestart.started()
        slot.open_debugger_port()
        self._check_ports(prestarted)
        slot.open_front()
        if self.config.compose is not None:
            self._services_up()
        try:
            # a pull or a build may take minutes: interruptible
            image_id = loop.interruptible(lambda: self.box.ensure_image(force_build=self.build))
            self._say_image_entrypoint(image_id)
            # creating and starting take a second at most: done here, so that a signal meanwhile finds
            # the container attached and the shutdown stops it
            container, outcome = self.box.ensure(self.recreate, prestarted, image_id)
        except BaseException:
            if prestarted:  # leave the container as we found it: stopped
                loop.quietly(self.box.stop)
            raise
        self.attach(container)
        if loop.interrupts.count:
            raise Interrupted
        loop.trace_at(began, f"container {outcome.value}")
        # only a container that kept running can hold a server left by a `devbox up` killed with -9
        if outcome is Outcome.REUSED and slot.launcher.end_leftover(self.config.stop_signal, self.config.stop_timeout):
            self.say("ended a server left running by an earlier `devbox up`")
        self.ensure_setup(container, outcome)
        slot.start("start", began)
        loop.trace_at(began, "server exec started")

    def _say_image_entrypoint(self, image_id: str) -> None:
        """The image's ENTRYPOINT is not run unless `entrypoint:` says so: say it once, with how."""
        if self.config.entrypoint is not None:
            return
        try:
            entrypoint = (self.loop.client.api.inspect_image(image_id).get("Config") or {}).get("Entrypoint") or []
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
        loop = self.loop
        services = loop.interruptible(lambda: Services.resolve(cfg.where, cfg.services, self.config.file.name,
                                                                cfg.completed))
        started = loop.interruptible(lambda: services.up(self.say, self.address_of))
        remember_started(self.config.name, started)
        if started:
            self.services_started = time.monotonic()
        self.network = services.network
        self.box = Box(loop.client, self.config, self.say, self.network)

    def address_of(self, container_id: str, network: str = "") -> str | None:
        """A container's address on `network` (any of its networks, for ""), where this machine can reach
        it: a Linux engine on this machine routes to its bridge networks; Docker Desktop's VM does not."""
        if not self._routes_to_bridges():
            return None
        try:
            networks = self.loop.client.api.inspect_container(container_id)["NetworkSettings"]["Networks"] or {}
        except Exception:
            return None
        found = [networks.get(network) or {}] if network else list(networks.values())
        return next((n["IPAddress"] for n in found if n.get("IPAddress")), None)

    def _routes_to_bridges(self) -> bool:
        return sys.platform == "linux" and self.loop.client.api.base_url.startswith("http+docker://") \
            and endpoint().on_this_machine

    def attach(self, container, box: Box | None = None) -> None:
        """Make `container` (made or found by `box`, this keeper's own by default) the one the server runs
        in and whose engine events the loop follows; a synced one gets the project's files first."""
        if self.follower is not None:
            self.follower.close()
        self._sync_all(container.id, (box or self.box).placement)
        self.container_id = container.id
        state = self.box.state(container.id)  # one look: its start, and the ready probe's way past the proxy
        state = self.reach(state)
        self.started_at = state.started_at if state else ""
        self.container_ip = state.ip if state and state.ip and self._routes_to_bridges() else None
        self.loop.slot.attach_container(container.id, state)
        events = self.loop.events
        self.follower = EventFollower(self.loop.client, container.id,
                                      lambda action, cid=container.id:
                                      events.put(EngineEvent(cid, EngineAction.of(action))))

    def reach(self, state: ContainerState | None) -> ContainerState | None:
        """The published ports where this machine reaches them: as published, or on an ssh:// engine
        forwarded over devbox's SSH connection to this machine's loopback (the state then names the local
        ports, so the ready probe, the browser front and the debugger need not know)."""
        where = endpoint()
        tunnel = tunnel_for(where.host) if where.is_ssh else None
        if state is None or tunnel is None:
            if state is not None and where.remote_host and not self.ports_said:
                self.ports_said = True
                for line in remote_port_lines(self.config, where.remote_host):
                    self.say(line)
            return state
        reached: dict = {}
        wanted = [(p.container_port, (p.host_ip, p.host_port)) for p in self.config.ports if p.protocol == "tcp"]
        if wanted and self.config.browser is not None:  # the front has the port; the server is on one of its own
            wanted[0] = (wanted[0][0], ("127.0.0.1", free_local_port()))
        if self.config.debugger is not None:
            wanted.append((DEBUG_PORT, ("127.0.0.1", free_local_port())))
        for container_port, local in wanted:
            remote = state.host_port(container_port)
            if remote is not None:
                tunnel.forward(local, remote)
                reached[f"{container_port}/tcp"] = [{"HostIp": local[0], "HostPort": str(local[1])}]
        if not self.ports_said:
            self.ports_said = True
            for p in self.config.ports:
                self.say(f"url: http://127.0.0.1:{p.host_port}/ (forwarded over SSH from {tunnel.destination})"
                         if p.protocol == "tcp" else f"ports: {p} is UDP, which SSH cannot forward")
        return state._replace(ports=reached)

    def _sync_all(self, container_id: str, placement: Placement | None) -> None:
        if self.syncer is not None:
            self.syncer.close()
            self.syncer = None
        if placement is None:
            return
        line = placement.line(self.config)
        if line != self.placement_said:
            self.say(line)
            self.placement_said = line
        if placement.synced:
            self.syncer = Syncer(self.loop.client.api, self.config, container_id, self.say)
            sent = self.loop.interruptible(self.syncer.send_all)
            self.say(f"synced {sent} through {self.syncer.way}")

    def sync(self, paths: set[str]) -> Callable[[], bool]:
        """Start sending a batch's changes to a synced container; returns `files_in`, which waits until
        they are there (True) or could not be sent (False, said once). The old server's stop does not
        need them, so the caller waits only before what reads them: a start, a setup, an exec rule."""
        syncer = self.syncer
        if syncer is None:
            return lambda: True
        sending = syncer.send_soon(paths)
        answer: list[bool] = []

        def files_in() -> bool:
            if answer:
                return answer[0]
            try:
                sent = sending.result()
            except DevboxError as e:
                self.say_failure(e)
                answer.append(False)
                return False
            except Exception as e:  # a bug in the syncer: one line, and the loop goes on
                self.say(f"the files could not be synced ({type(e).__name__}: {e}); the server starts on "
                         "what the container has")
                answer.append(False)
                return False
            if sent is not None and self.loop.trace:
                self.say(f"trace: synced {sent}")
            answer.append(True)
            return True

        return files_in

    def ensure_setup(self, container, outcome: Outcome) -> None:
        """Run setup unless this container finished it; a failed first setup removes the container."""
        if not self.config.setup or self.box.setup_done(container):
            return
        if outcome is not Outcome.CREATED:
            self.say("setup did not finish in this container last time; running it again")
        if self.loop.slot.setup():
            self.box.mark_setup_done(container)
            return
        if outcome is Outcome.CREATED:
            self.box.remove(container)  # so that the next `up` runs setup again on a fresh container
            self.loop.slot.launcher = None
            raise ContainerError(f"setup failed, container removed: fix `setup` in {self.config.file.name} "
                                 "and run `devbox up` again")
        raise ContainerError(f"setup failed: fix `setup` in {self.config.file.name} and run `devbox up` again")

    def mark_setup_done(self) -> None:
        self.box.mark_setup_done(self.box.find())

    def stop(self) -> None:
        self.loop.quietly(lambda: self.box.stop())

    def close(self) -> None:
        if self.follower is not None:
            self.follower.close()
        if self.syncer is not None:
            self.syncer.close()

    # -- back ------------------------------------------------------------------------------------

    def recover(self) -> None:
        """The container stopped, was removed, or the engine went away: bring it all back, then serve."""
        loop, slot = self.loop, self.loop.slot
        waited = False
        transient = 0
        while True:
            try:
                state = self.box.state(self.container_id)
                if state is not None and state.status == "running" and state.started_at == self.started_at \
                        and slot.current is not None and not slot.current.exited.is_set():
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
                slot.forget()  # its processes went with the container, or are ended as leftovers below
                removal_ends = time.monotonic() + 10
                while state is not None and state.status in ("removing", "dead") and time.monotonic() < removal_ends:
                    loop.pause(0.05)  # `docker rm` under way: a new container of the same name must wait for it
                    state = self.box.state(self.container_id)
                image_id = loop.interruptible(self.box.ensure_image)
                container, outcome = self.box.ensure(image_id=image_id)
                self.attach(container)
                if outcome is not Outcome.CREATED:
                    slot.launcher.end_leftover(self.config.stop_signal, self.config.stop_timeout)
                self.ensure_setup(container, outcome)
                slot.start("container back", time.monotonic())
                return
            except DockerUnavailable as e:
                if not waited:
                    self.say(f"{e}; waiting for it to come back (Ctrl-C to stop)")
                    waited = True
                loop.pause(1.0)
            except ContainerGone:
                transient += 1  # removed or restarted again while we looked: look again, a few times
                if transient > 20:
                    raise
                loop.pause(0.1)

    def _count_recovery(self) -> None:
        """Bringing the container back is for accidents: one that keeps stopping (its main process cannot
        run, say a mount over /lib) must end `up` with a line, not loop for ever."""
        now = time.monotonic()
        self.recoveries = [t for t in self.recoveries if now - t < RECOVERY_WINDOW] + [now]
        if len(self.recoveries) > RECOVERY_LIMIT:
            raise ContainerError(f"the container stopped {RECOVERY_LIMIT + 1} times within "
                                 f"{RECOVERY_WINDOW:g}s; devbox gave up bringing it back: see "
                                 f"`docker logs {self.box.container_name}` and the mounts in {self.config.file.name}")

    def went_away(self, code: int | None) -> bool:
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

    # -- replace ---------------------------------------------------------------------------------

    def rebuild(self, reason: str) -> bool:
        """The `rebuild` rule: build the image again and, if it changed, switch to a new container (named
        volumes kept). False if the build failed; the old container and server then keep running."""
        if self.config.build is None:
            self.say(f"rebuild ({reason}): no `build:` in {self.config.file.name}; restarting the server instead")
            return True
        try:
            self.replace(self.config, force_build=True)
        except DevboxError as e:
            self.say_failure(e)
            self.say("the running container and server stay; fix it and save again")
            return False
        return True

    def say_failure(self, error: DevboxError) -> None:
        for line in render(error):
            self.say(line)

    def replace(self, new: Config, force_build: bool = False) -> None:
        """Make the new config's container beside the old one; switch only once it is up and set up.
        The server is started by the restart that the config change asks for."""
        loop, slot = self.loop, self.loop.slot
        old = self.config
        new_box = Box(loop.client, new, self.say, self.network)
        image_id = loop.interruptible(lambda: new_box.ensure_image(force_build))
        old_container = self.box.find()
        if old_container is not None and new.name == old.name and \
                old_container.labels.get(LABEL_HASH) == new_box.config_hash(image_id):
            return  # a rebuild that made the same image: the container stays
        if old_container is not None and new.name == old.name:
            self.say(f"recreating container {old_container.name}: {new_box.what_changed(old_container.labels, image_id)}")
        slot.stop()
        slot.let_go()  # its preloader goes with the old container: not a reason to preload no more
        loop.quietly(lambda: self.box.stop(old_container))  # frees its ports for the new one
        container = None
        try:
            container = new_box.create(image_id, temporary=True)
            loop.config = new  # setup runs with the new env
            self.attach(container, new_box)
            self.ensure_setup(container, Outcome.CREATED)
        except BaseException:
            loop.config = self.box.config
            if container is not None:
                loop.quietly(lambda: new_box.remove(container))
            if old_container is not None:  # back to the old container and server
                self.box.start(old_container)
                self.attach(old_container)
                slot.start("previous config", time.monotonic())
            raise
        if old_container is not None:
            if new.name != self.box.config.name:
                self.say(f"container {old_container.name} is no longer this project's: stopped, kept for `down`")
            else:
                self.box.remove(old_container)
        new_box.take_name(container)
        new_box.drop_replaced_image()
        self.box = new_box
