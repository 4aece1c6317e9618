"""Everything that talks to Docker about the container: connect, image, create/reuse/recreate, stop, remove.

The container's own main process only keeps it alive (`sleep infinity` under
Docker's init, which also reaps orphans); the server runs beside it through
the exec API (see server.py). Docker SDK errors are translated here, where they
are raised, into DevboxError subclasses with one line for a person.
"""

from __future__ import annotations

__all__ = ["Box", "Outcome", "ContainerState", "LABEL_PROJECT", "LABEL_HASH", "LABEL_DIR",
           "EventFollower", "owner_folder"]

import enum
import io
import json
import tarfile
import threading
from pathlib import Path
from typing import Callable, NamedTuple

import docker
import docker.errors
import docker.utils
from docker.models.containers import Container
from docker.types import Mount as DockerMount

from .build import Builder, image_tag
from .config import Config
from .errors import (ContainerError, DevboxError, EngineSays, ImageError, UsageError, docker_error, docker_reason,
                     engine_says)
from .identity import container_hash, container_spec
from .debugger import CONTAINER_PORT as DEBUG_PORT
from .inside import SETUP_MARK, STATE_DIR
from .engine import endpoint
from .ports import port_in_use_error
from .sync import Placement, sees_folder
from .sync.placement import MOUNT_SOURCE_MISSING

LABEL_PROJECT = "devbox.project"
LABEL_HASH = "devbox.config-hash"
LABEL_SPEC = "devbox.spec"  # the container-level config, kept so a recreate can say what changed
LABEL_DIR = "devbox.project-dir"  # the project's folder: two folders never share a container
LABEL_FILE = "devbox.config-file"
LABEL_SYNC = "devbox.sync"  # "synced": the project's files are copied in, not mounted (sync.py)

Say = Callable[[str], None]


class Outcome(enum.Enum):
    """What `Box.ensure` did to have a running container."""

    REUSED = "reused"  # it was running: a server left by an `up` killed with -9 may be in it
    STARTED = "started"
    CREATED = "created"


class ContainerState(NamedTuple):
    status: str  # running, exited, created, ...
    started_at: str  # changes when the container is restarted behind devbox's back
    ip: str = ""  # its address on its (first) network; "" when stopped
    ports: dict = {}  # what the engine published: {"8000/tcp": [{"HostIp": ..., "HostPort": ...}], ...}

    def host_port(self, container_port: int) -> int | None:
        """Where this machine reaches a published container port (the engine picked it, for `browser:`
        and `debugger:`)."""
        for binding in self.ports.get(f"{container_port}/tcp") or []:
            if binding.get("HostPort"):
                return int(binding["HostPort"])
        return None


class Box:
    """One project's long-lived container, found by the label devbox.project=<name>."""

    def __init__(self, client: docker.DockerClient, config: Config, say: Say, network: str = ""):
        self.client, self.config, self.say = client, config, say
        self.network = network  # the Compose project's network to join (`compose:`), or none
        self.container_name = f"devbox-{config.name}"
        self.image_name = config.image or image_tag(config)  # `build:` images are tagged devbox-<name>:dev
        self.replaced_image: str | None = None  # the image the last build replaced (removed once unused)
        self.placement: Placement | None = None  # mounted or synced, once a container is made or found

    # -- finding ---------------------------------------------------------------------------

    def find(self) -> Container | None:
        """The project's container, or None; refuses one made for another folder under the same name."""
        try:
            # ignore_removed: a container being removed is listed, then gone by the time it is inspected
            found = self.client.containers.list(all=True, filters={"label": f"{LABEL_PROJECT}={self.config.name}"},
                                                ignore_removed=True)
        except Exception as e:
            raise docker_error(e, "cannot list containers") from e
        if not found:
            return None
        # the project's container, not one left under a temporary name by a live config change
        container = next((c for c in found if c.name == self.container_name), found[0])
        other = owner_folder(container.labels)
        if other is not None and other != self.config.project_dir:
            raise UsageError(f"project name '{self.config.name}' is taken by {other} (container {container.name}); "
                             f"this is {self.config.project_dir}: give one of them another `name:` in its "
                             "devbox.yaml")
        return container

    def state(self, container_id: str) -> ContainerState | None:
        """The container's state now; None if it is gone."""
        try:
            info = self.client.api.inspect_container(container_id)
        except docker.errors.NotFound:
            return None
        except Exception as e:
            raise docker_error(e, "cannot inspect the container") from e
        settings = info.get("NetworkSettings") or {}
        ip = next((n["IPAddress"] for n in (settings.get("Networks") or {}).values() if n.get("IPAddress")), "")
        return ContainerState(info["State"]["Status"], info["State"].get("StartedAt", ""), ip, settings.get("Ports") or {})

    # -- up ----------------------------------------------------------------------------------

    def ensure(self, recreate: bool = False, prestarted: bool = False,
               image_id: str | None = None) -> tuple[Container, Outcome]:
        """Reuse, start, recreate or create the container; returns it and what was done.
        `image_id`: the image, if the caller already made sure of it (`ensure_image`).

        `prestarted`: it was stopped and has just been started by prestart.py.
        """
        image_id = image_id or self.ensure_image()
        wanted = self.config_hash(image_id)
        current = self.find()
        if current is not None:
            labels = current.labels
            if labels.get(LABEL_HASH) == wanted and not recreate:
                self.placement = self._placement_of(labels)
                if current.status == "running" and prestarted:
                    self.say(f"started container {current.name}")
                    return current, Outcome.STARTED
                if current.status == "running":
                    self.say(f"reusing container {current.name}")
                    return current, Outcome.REUSED
                self.say(f"starting container {current.name}")
                self.start(current)
                return current, Outcome.STARTED
            why = "--recreate given" if recreate else self.what_changed(labels, image_id)
            self.say(f"recreating container {current.name}: {why}")
            self._remove(current)
        container = self.create(image_id)
        self.drop_replaced_image()
        return container, Outcome.CREATED

    def drop_replaced_image(self) -> None:
        """Remove the image a rebuild replaced, once it has no name and no container uses it: each
        rebuild would otherwise leave a few hundred MB behind (Compose prunes these too)."""
        replaced, self.replaced_image = self.replaced_image, None
        if replaced is None:
            return
        try:
            if not self.client.images.get(replaced).tags:
                self.client.images.remove(replaced, noprune=False)
        except Exception:
            pass  # still used (another container, a tag of the user's) or gone already: leave it
    def what_changed(self, labels: dict, image_id: str) -> str:
        try:
            old = json.loads(labels.get(LABEL_SPEC, "{}"))
        except ValueError:
            old = {}
        new = self._spec(image_id)
        changed = [k for k in [*new, *(k for k in old if k not in new)] if old.get(k) != new.get(k)]
        if changed == ["image id"] and self.config.build is not None:
            return "image rebuilt"
        return (", ".join(changed) + " changed") if changed else "its config hash differs"

    def _spec(self, image_id: str) -> dict:
        return {**container_spec(self.config), "image id": image_id} | ({"network": self.network} if self.network else {})

    def config_hash(self, image_id: str) -> str:
        return container_hash(self.config, image_id, self.network)

    def ensure_image(self, force_build: bool = False) -> str:
        """The image's id: built from `build:` (when missing, stale or forced), or pulled (with progress)
        if it is not local."""
        if self.config.build is not None:
            builder = Builder(self.client, self.config, self.say)
            image_id = builder.ensure(force_build)
            self.replaced_image = builder.replaced or self.replaced_image
            return image_id
        name = self.config.image
        assert name is not None
        try:
            return self.client.images.get(name).id
        except docker.errors.ImageNotFound:
            pass
        except Exception as e:
            raise docker_error(e, f"image '{name}'") from e
        self.say(f"image '{name}' is not here; pulling it")
        repo, tag = docker.utils.parse_repository_tag(name)  # name:tag, name@sha256:..., host:port/name
        try:
            if tag and tag.startswith("sha256:"):
                events = self.client.api.pull(f"{repo}@{tag}", stream=True, decode=True)
            else:
                events = self.client.api.pull(repo, tag=tag or "latest", stream=True, decode=True)
            for event in events:
                if "error" in event:
                    raise ImageError(f"image '{name}' is not local and cannot be pulled ({event['error'].strip()}): "
                                     f"build it or fix `image` in {self.config.file.name}")
                status = event.get("status", "")
                if status and ("Download complete" in status or "Pull complete" in status or status.startswith("Status")):
                    self.say(f"  {event.get('id', '')} {status}".rstrip())
            return self.client.images.get(name).id
        except DevboxError:
            raise
        except Exception as e:
            raise ImageError(f"image '{name}' is not local and cannot be pulled ({docker_reason(e)}): "
                             f"build it or fix `image` in {self.config.file.name}") from e

    def _placement_of(self, labels: dict) -> Placement:
        synced = labels.get(LABEL_SYNC) == "synced"
        if self.config.sync is not None:
            return Placement(synced, f"sync: {str(self.config.sync).lower()} in {self.config.file.name}")
        return Placement(synced, "sync: auto, as when this container was made")

    def create(self, image_id: str, temporary: bool = False) -> Container:
        """Create and start the container, with the project mounted or, where the engine cannot see this
        folder (or `sync: true`), without it: then the caller syncs the files in. `temporary`: under a
        second name, beside the current one, until `take_name` (a live config change switches only once
        the new one is up)."""
        cfg = self.config
        if cfg.sync is not None:
            self.placement = Placement(cfg.sync, f"sync: {str(cfg.sync).lower()} in {cfg.file.name}")
            try:
                return self._create(image_id, temporary, cfg.sync)
            except ContainerError as e:
                if cfg.sync or not any(text in str(e) for text in MOUNT_SOURCE_MISSING):
                    raise
                raise ContainerError(f"the engine at {endpoint()} cannot see {cfg.project_dir} (it is on another "
                                     f"machine?): set `sync: auto` in {cfg.file.name} to copy the files in") from e
        try:
            container = self._create(image_id, temporary, synced=False)
        except ContainerError as e:
            if not any(text in str(e) for text in MOUNT_SOURCE_MISSING):
                raise
            self.placement = Placement(True, f"sync: auto; the engine at {endpoint()} has no {cfg.project_dir}")
            return self._create(image_id, temporary, synced=True, again=True)
        if sees_folder(self.client.api, container.id, cfg):
            self.placement = Placement(False, "sync: auto; the engine sees this folder")
            return container
        self._remove(container)
        self.placement = Placement(True, f"sync: auto; the engine at {endpoint()} sees another {cfg.project_dir}")
        return self._create(image_id, temporary, synced=True, again=True)

    def _create(self, image_id: str, temporary: bool, synced: bool, again: bool = False) -> Container:
        cfg = self.config
        name = self.container_name + ("-next" if temporary else "")
        if not again:  # (again: the same container, now without the bind mounts the engine cannot serve)
            self.say(f"creating container {name} from {self.image_name}")
        mounts = [] if synced else [DockerMount(m.target, str(m.source), type="bind", read_only=m.read_only)
                                    for m in cfg.mounts]
        for volume in cfg.volumes:
            volume_name = self.volume_name(volume.name)
            try:
                try:
                    self.client.volumes.get(volume_name)
                except docker.errors.NotFound:
                    self.client.volumes.create(volume_name, labels={LABEL_PROJECT: cfg.name,
                                                                    LABEL_DIR: str(cfg.project_dir)})
            except Exception as e:
                raise docker_error(e, f"cannot create volume {volume_name}") from e
            mounts.append(DockerMount(volume.target, volume_name, type="volume"))
        ports: dict[str, list[tuple[str, int]]] = {}
        forwarded = endpoint().is_ssh  # over SSH every port is forwarded to this machine: the engine picks its own
        for i, p in enumerate(cfg.ports):
            # with `browser:` devbox's front has the first port; the server is on a loopback port of its own
            own = forwarded or (i == 0 and cfg.browser is not None)
            host = ("127.0.0.1", None) if own else (p.host_ip, p.host_port)
            ports.setdefault(f"{p.container_port}/{p.protocol}", []).append(host)
        if cfg.debugger is not None:  # the adapter, on a loopback port the engine picks (DebugRelay forwards)
            ports.setdefault(f"{DEBUG_PORT}/tcp", []).append(("127.0.0.1", None))
        for m in cfg.mounts:
            if not m.source.exists() and not synced:
                raise ContainerError(f"{cfg.file.name}: mounts: host path '{m.source}' does not exist (create it or fix the mount)")
        self._remove_name_clash(name)
        try:
            container = self.client.containers.create(
                image_id,
                entrypoint=["sleep", "infinity"],  # only keeps the container alive; the server runs beside it
                command=[],
                init=True,  # docker-init reaps the orphans of server trees we kill
                name=name,
                working_dir=cfg.workdir,
                mounts=mounts,
                ports=ports,
                tmpfs={STATE_DIR: "mode=1777"},
                labels={LABEL_PROJECT: cfg.name, LABEL_HASH: self.config_hash(image_id),
                        LABEL_SPEC: json.dumps(self._spec(image_id), sort_keys=True),
                        LABEL_DIR: str(cfg.project_dir), LABEL_FILE: str(cfg.file),
                        LABEL_SYNC: "synced" if synced else "mounted"},
                stop_signal="SIGTERM",
                network=self.network or None,
            )
        except Exception as e:
            raise docker_error(e, f"cannot create container {name}") from e
        try:
            self.start(container)
        except BaseException:
            self._remove(container)
            raise
        return container

    def take_name(self, container: Container) -> None:
        """Give a temporary container the project's container name."""
        try:
            container.rename(self.container_name)
        except Exception as e:
            raise docker_error(e, f"cannot rename container {container.name}") from e

    def _remove_name_clash(self, name: str) -> None:
        try:
            other = self.client.containers.get(name)
        except docker.errors.NotFound:
            return
        except Exception as e:
            raise docker_error(e, f"cannot look up container {name}") from e
        if other.labels.get(LABEL_PROJECT) is None:
            raise ContainerError(f"a container named {name} exists and is not devbox's: "
                                 f"remove it (`docker rm -f {name}`) or set another `name`")
        if owner_folder(other.labels) not in (None, self.config.project_dir):
            raise UsageError(f"container {name} belongs to {owner_folder(other.labels)}; this is "
                             f"{self.config.project_dir}: give one of them another `name:` in its devbox.yaml")
        self._remove(other)

    def start(self, container: Container) -> None:
        try:
            container.start()
        except docker.errors.APIError as e:
            says = engine_says(e)
            if says is EngineSays.PORT_TAKEN:
                text = str(getattr(e, "explanation", "") or e)
                named = [p for p in self.config.ports if str(p.host_port) in text] or list(self.config.ports)
                raise port_in_use_error(self.config, named) from e
            if says is EngineSays.NO_SLEEP:
                raise ContainerError(f"image '{self.image_name}' has no `sleep` to keep the container alive: "
                                     "devbox needs a shell and sleep in the image") from e
            raise docker_error(e, f"cannot start container {container.name}") from e
        except Exception as e:
            raise docker_error(e, f"cannot start container {container.name}") from e

    # -- setup, done once per container -----------------------------------------------------------

    def setup_done(self, container: Container) -> bool:
        """True if this container finished the current `setup` (a mark written in it when setup ends)."""
        try:
            stream, _ = container.get_archive(SETUP_MARK)
            data = b"".join(stream)
        except docker.errors.NotFound:
            return False
        except Exception as e:
            raise docker_error(e, "cannot read the setup mark in the container") from e
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            member = tar.extractfile(tar.getmembers()[0])
            return member is not None and member.read().decode().strip() == self.config.setup_hash()

    def mark_setup_done(self, container: Container) -> None:
        data = (self.config.setup_hash() + "\n").encode()
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            info = tarfile.TarInfo(SETUP_MARK.lstrip("/"))
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        try:
            container.put_archive("/", buffer.getvalue())
        except Exception as e:
            raise docker_error(e, "cannot write the setup mark in the container") from e

    # -- down -----------------------------------------------------------------------------------

    def stop(self, container: Container | None = None) -> None:
        container = container or self.find()
        if container is None:
            return
        try:
            container.reload()
            if container.status in ("running", "restarting", "paused"):
                container.stop(timeout=3)
        except docker.errors.NotFound:
            pass
        except Exception as e:
            raise docker_error(e, f"cannot stop container {container.name}") from e

    def _remove(self, container: Container) -> None:
        """Remove it with its anonymous volumes (an image's VOLUME gives it one), as `compose down` and
        `docker rm -v` do: a recreate must not leave one behind each time."""
        try:
            container.remove(force=True, v=True)
        except docker.errors.NotFound:
            pass
        except Exception as e:
            raise docker_error(e, f"cannot remove container {container.name}") from e

    def remove(self, container: Container | None, volumes: bool = False) -> list[str]:
        """Remove the container found by `find` (and with `volumes` the project's named volumes);
        the names of the volumes removed."""
        if container is not None:
            self._remove(container)
        removed = []
        if volumes:
            try:
                found = self.client.volumes.list(filters={"label": f"{LABEL_PROJECT}={self.config.name}"})
            except Exception as e:
                raise docker_error(e, "cannot list volumes") from e
            for volume in found:
                if Path(volume.attrs.get("Labels", {}).get(LABEL_DIR) or self.config.project_dir) != self.config.project_dir:
                    continue  # another folder's project of the same name
                try:
                    volume.remove(force=True)
                except Exception as e:
                    raise docker_error(e, f"cannot remove volume {volume.name}") from e
                removed.append(volume.name)
        return removed

    def volume_name(self, name: str) -> str:
        return f"{self.config.name}_{name}"


def owner_folder(labels: dict) -> Path | None:
    """The project folder a container was made for (older containers only name their config file)."""
    if labels.get(LABEL_DIR):
        return Path(labels[LABEL_DIR])
    if labels.get(LABEL_FILE):
        return Path(labels[LABEL_FILE]).parent
    return None


class EventFollower:
    """A thread that calls `on_event(action)` for each engine event of one container ("die", "start",
    "destroy", ...), and `on_event("engine-lost")` once if the engine's event stream breaks."""

    def __init__(self, client: docker.DockerClient, container_id: str, on_event: Callable[[str], None]):
        self.client, self.container_id, self.on_event = client, container_id, on_event
        self._closed = threading.Event()
        self._stream = None
        self._thread = threading.Thread(target=self._run, name="devbox-events", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._stream = self.client.api.events(filters={"container": self.container_id, "type": "container"},
                                                  decode=True)
            for event in self._stream:
                if self._closed.is_set():
                    return
                self.on_event(str(event.get("Action") or event.get("status") or ""))
        except Exception:
            pass  # the connection broke: said below
        if not self._closed.is_set():
            self.on_event("engine-lost")

    def close(self) -> None:
        self._closed.set()
        stream = self._stream
        if stream is not None:
            try:
                stream.close()
            except Exception:
                pass
