"""Everything that talks to Docker about the container: connect, image, create/reuse/recreate, stop, remove.

The container's own main process only keeps it alive (`sleep infinity` under
Docker's init, which also reaps orphans); the server runs beside it through
the exec API (see server.py). Docker SDK errors are translated here, where they
are raised, into DevboxError subclasses with one line for a person.
"""

from __future__ import annotations

__all__ = ["connect", "Box", "docker_reason", "LABEL_PROJECT", "LABEL_HASH", "STATE_DIR"]

import json
import os
from typing import Callable

import docker
import docker.errors
from docker.models.containers import Container
from docker.types import Mount as DockerMount

from .config import Config
from .errors import ContainerError, DockerUnavailable, ImageError, PortInUse

LABEL_PROJECT = "devbox.project"
LABEL_HASH = "devbox.config-hash"
LABEL_SPEC = "devbox.spec"  # the container-level config, kept so a recreate can say what changed
STATE_DIR = "/.devbox"  # a tmpfs in the container: the server's pid record lives here and dies with the container

Say = Callable[[str], None]


def docker_host() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def connect() -> docker.DockerClient:
    """A client that has answered a ping, or DockerUnavailable naming the socket."""
    try:
        client = docker.from_env(timeout=120)
        client.ping()
        return client
    except Exception as e:  # DockerException, and requests' connection errors under it
        raise DockerUnavailable(
            f"cannot reach the Docker engine at {docker_host()} ({docker_reason(e)}): is it running? try `docker info`"
        ) from e


def docker_reason(error: Exception) -> str:
    """A short reason from a Docker SDK or connection error, for the end of a one-line message."""
    text = getattr(error, "explanation", None) or str(error)
    for known in ("No such file or directory", "Connection refused", "Permission denied", "timed out"):
        if known in text:
            return known.lower()
    text = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return text[:160]


class Box:
    """One project's long-lived container, found by the label devbox.project=<name>."""

    def __init__(self, client: docker.DockerClient, config: Config, say: Say):
        self.client, self.config, self.say = client, config, say
        self.container_name = f"devbox-{config.name}"

    # -- finding ---------------------------------------------------------------------------

    def find(self) -> Container | None:
        try:
            found = self.client.containers.list(all=True, filters={"label": f"{LABEL_PROJECT}={self.config.name}"})
        except docker.errors.APIError as e:
            raise ContainerError(f"cannot list containers: {docker_reason(e)}") from e
        return found[0] if found else None

    # -- up ----------------------------------------------------------------------------------

    def ensure(self, recreate: bool = False, prestarted: bool = False) -> tuple[Container, str]:
        """Reuse, start, recreate or create the container; returns it and "reused", "started" or "created".

        `prestarted`: it was stopped and has just been started by prestart.py.
        """
        image_id = self.ensure_image()
        wanted = self.config.container_hash(image_id)
        current = self.find()
        if current is not None:
            labels = current.labels
            if labels.get(LABEL_HASH) == wanted and not recreate:
                if current.status == "running" and prestarted:
                    self.say(f"started container {current.name}")
                    return current, "started"
                if current.status == "running":
                    self.say(f"reusing container {current.name}")
                    return current, "reused"
                self.say(f"starting container {current.name}")
                self._start(current)
                return current, "started"
            why = "--recreate given" if recreate else self._what_changed(labels, image_id)
            self.say(f"recreating container {current.name}: {why}")
            self._remove(current)
        container = self._create(image_id, wanted)
        self._start(container)
        return container, "created"

    def _what_changed(self, labels: dict, image_id: str) -> str:
        try:
            old = json.loads(labels.get(LABEL_SPEC, "{}"))
        except ValueError:
            old = {}
        new = self._spec(image_id)
        changed = [k for k in new if old.get(k) != new[k]]
        return (", ".join(changed) + " changed") if changed else "its config hash differs"

    def _spec(self, image_id: str) -> dict:
        return {**self.config.container_spec(), "image id": image_id}

    def ensure_image(self) -> str:
        """The image's id, pulling it (with progress) if it is not local."""
        name = self.config.image
        if name is None:
            raise ImageError(f"{self.config.file.name}: `build:` is not supported yet; build with `docker build -t NAME .` and set `image: NAME`")
        try:
            return self.client.images.get(name).id
        except docker.errors.ImageNotFound:
            pass
        except docker.errors.APIError as e:
            raise ImageError(f"image '{name}': {docker_reason(e)}") from e
        self.say(f"image '{name}' is not here; pulling it")
        repo, _, tag = name.rpartition(":") if ":" in name.rsplit("/", 1)[-1] else (name, "", "latest")
        try:
            for event in self.client.api.pull(repo, tag=tag or "latest", stream=True, decode=True):
                if "error" in event:
                    raise ImageError(f"image '{name}' is not local and cannot be pulled ({event['error'].strip()}): "
                                     f"build it or fix `image` in {self.config.file.name}")
                status = event.get("status", "")
                if status and ("Download complete" in status or "Pull complete" in status or status.startswith("Status")):
                    self.say(f"  {event.get('id', '')} {status}".rstrip())
            return self.client.images.get(name).id
        except docker.errors.DockerException as e:
            raise ImageError(f"image '{name}' is not local and cannot be pulled ({docker_reason(e)}): "
                             f"build it or fix `image` in {self.config.file.name}") from e

    def _create(self, image_id: str, config_hash: str) -> Container:
        cfg = self.config
        self.say(f"creating container {self.container_name} from {cfg.image}")
        mounts = [DockerMount(m.target, str(m.source), type="bind", read_only=m.read_only) for m in cfg.mounts]
        for volume in cfg.volumes:
            name = self.volume_name(volume.name)
            try:
                self.client.volumes.get(name)
            except docker.errors.NotFound:
                self.client.volumes.create(name, labels={LABEL_PROJECT: cfg.name})
            mounts.append(DockerMount(volume.target, name, type="volume"))
        ports: dict[str, list[tuple[str, int]]] = {}
        for p in cfg.ports:
            ports.setdefault(f"{p.container_port}/{p.protocol}", []).append((p.host_ip, p.host_port))
        for m in cfg.mounts:
            if not m.source.exists():
                raise ContainerError(f"{cfg.file.name}: mounts: host path '{m.source}' does not exist (create it or fix the mount)")
        self._remove_name_clash()
        try:
            return self.client.containers.create(
                image_id,
                entrypoint=["sleep", "infinity"],  # only keeps the container alive; the server runs beside it
                command=[],
                init=True,  # docker-init reaps the orphans of server trees we kill
                name=self.container_name,
                working_dir=cfg.workdir,
                mounts=mounts,
                ports=ports,
                tmpfs={STATE_DIR: "mode=1777"},
                labels={LABEL_PROJECT: cfg.name, LABEL_HASH: config_hash,
                        LABEL_SPEC: json.dumps(self._spec(image_id), sort_keys=True),
                        "devbox.config-file": str(cfg.file)},
                stop_signal="SIGTERM",
            )
        except docker.errors.APIError as e:
            raise ContainerError(f"cannot create container {self.container_name}: {docker_reason(e)}") from e

    def _remove_name_clash(self) -> None:
        try:
            other = self.client.containers.get(self.container_name)
        except docker.errors.NotFound:
            return
        if other.labels.get(LABEL_PROJECT) is None:
            raise ContainerError(f"a container named {self.container_name} exists and is not devbox's: "
                                 f"remove it (`docker rm -f {self.container_name}`) or set another `name`")
        self._remove(other)

    def _start(self, container: Container) -> None:
        try:
            container.start()
        except docker.errors.APIError as e:
            text = str(getattr(e, "explanation", "") or e)
            if "already allocated" in text or "address already in use" in text:
                ports = ", ".join(str(p.host_port) for p in self.config.ports if str(p.host_port) in text) or \
                    ", ".join(str(p.host_port) for p in self.config.ports)
                raise PortInUse(f"port {ports} is already in use on this machine: stop what uses it "
                                f"or change `ports` in {self.config.file.name}") from e
            if "executable file not found" in text and "sleep" in text:
                raise ContainerError(f"image '{self.config.image}' has no `sleep` to keep the container alive: "
                                     "devbox needs a shell and sleep in the image") from e
            raise ContainerError(f"cannot start container {container.name}: {docker_reason(e)}") from e

    # -- down -----------------------------------------------------------------------------------

    def stop(self) -> None:
        container = self.find()
        if container is not None and container.status == "running":
            try:
                container.stop(timeout=3)
            except docker.errors.APIError as e:
                raise ContainerError(f"cannot stop container {container.name}: {docker_reason(e)}") from e

    def _remove(self, container: Container) -> None:
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as e:
            raise ContainerError(f"cannot remove container {container.name}: {docker_reason(e)}") from e

    def remove(self, container: Container | None, volumes: bool = False) -> None:
        """Remove the container found by `find` (and with `volumes` the project's named volumes)."""
        if container is not None:
            self._remove(container)
        if volumes:
            for volume in self.client.volumes.list(filters={"label": f"{LABEL_PROJECT}={self.config.name}"}):
                try:
                    volume.remove(force=True)
                except docker.errors.APIError as e:
                    raise ContainerError(f"cannot remove volume {volume.name}: {docker_reason(e)}") from e

    def volume_name(self, name: str) -> str:
        return f"{self.config.name}_{name}"

