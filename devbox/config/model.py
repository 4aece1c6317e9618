"""The config as data: what a devbox.yaml says once loaded, validated and frozen. Everything downstream
trusts it."""

from __future__ import annotations

__all__ = ["Config", "Port", "Mount", "Volume", "Ready", "Watch", "Rule", "Build", "Compose", "ComposeFiles", "Debugger", "Browser",
           "CONFIG_NAME", "LOCAL_NAME", "SYNC_MAX_MB", "RuleAction", "COMPOSE_FILES", "OVERRIDE_FILES"]

import enum
import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from .envfiles import read_env_file

CONFIG_NAME = "devbox.yaml"
LOCAL_NAME = "devbox.local.yaml"
SYNC_MAX_MB = 50  # `sync.max_file_mb`'s default: a bigger file is data, not source



@dataclass(frozen=True)
class Port:
    host_ip: str
    host_port: int
    container_port: int
    protocol: str = "tcp"

    def __str__(self) -> str:
        host = f"[{self.host_ip}]" if ":" in self.host_ip else self.host_ip
        return f"{host}:{self.host_port}:{self.container_port}" + ("/udp" if self.protocol == "udp" else "")


@dataclass(frozen=True)
class Mount:
    source: Path
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class Volume:
    name: str
    target: str


@dataclass(frozen=True)
class Ready:
    http: str | None = None
    tcp: int | None = None
    log: str | None = None
    timeout: float = 30.0


class RuleAction(str, enum.Enum):
    """What a watch rule asks for a matching change (a str, as the file writes it)."""

    RESTART = "restart"
    SETUP = "setup"  # run setup again, then restart
    REBUILD = "rebuild"  # build the image again, recreate the container
    NONE = "none"  # the server picks it up itself
    EXEC = "exec"  # run a command in the container


@dataclass(frozen=True)
class Rule:
    match: tuple[str, ...]
    action: "RuleAction"
    exec: str | tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "action", RuleAction(self.action))  # as written in the file, checked there


@dataclass(frozen=True)
class Watch:
    paths: tuple[Path, ...]
    ignore: tuple[str, ...] = ()
    debounce_ms: int = 50
    rules: tuple[Rule, ...] = ()
    poll: bool | None = None  # None: auto (polling where native events do not arrive)


@dataclass(frozen=True)
class Build:
    context: Path
    dockerfile: str = "Dockerfile"
    args: Mapping[str, str] = field(default_factory=dict)
    target: str | None = None


@dataclass(frozen=True)
class ComposeFiles:
    """Which Compose files make the project: `files` as `compose.file` lists them (each `-f`), or none,
    and then Compose's own lookup in `folder` decides (compose.yaml and its override, COMPOSE_FILE, .env)."""

    folder: Path
    files: tuple[Path, ...] = ()

    def args(self) -> list[str]:
        return [arg for file in self.files for arg in ("-f", str(file))]

    def __str__(self) -> str:
        if self.files:
            return " + ".join(_shown(f, self.folder) for f in self.files)
        present = [n for n in (*COMPOSE_FILES, *OVERRIDE_FILES) if (self.folder / n).is_file()]
        return " + ".join(present) if present and not os.environ.get("COMPOSE_FILE") else "the Compose files"


def _shown(path: Path, folder: Path) -> str:
    try:
        return path.relative_to(folder).as_posix()
    except ValueError:
        return str(path)


# Compose's own lookup, for messages and `init` (Compose decides which apply: devbox never passes these)
COMPOSE_FILES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
OVERRIDE_FILES = ("compose.override.yaml", "compose.override.yml", "docker-compose.override.yaml",
                  "docker-compose.override.yml")


@dataclass(frozen=True)
class Compose:
    where: ComposeFiles  # the Compose files of the project
    services: tuple[str, ...] = ()  # started beside devbox's container, reached by name
    service: str | None = None  # the Compose service devbox runs as its own (its keys under devbox.yaml's)
    # of `services`, the one-shots (`condition: service_completed_successfully`: a migrations `prestart`):
    # run to completion, exit 0, before the server starts
    completed: tuple[str, ...] = ()


@dataclass(frozen=True)
class Debugger:
    port: int = 5678  # where a debug client attaches on this machine (127.0.0.1)
    wait: bool = False  # each start waits for a client before it runs


@dataclass(frozen=True)
class Browser:
    reload: bool = True  # HTML pages reload themselves when a new server is ready
    hold: bool = True  # a request during a restart waits for the new server


@dataclass(frozen=True)
class Config:
    file: Path
    project_dir: Path
    name: str
    image: str | None
    build: Build | None
    workdir: str
    mounts: tuple[Mount, ...]
    volumes: tuple[Volume, ...]
    env: Mapping[str, str]
    env_files: tuple[Path, ...]
    ports: tuple[Port, ...]
    setup: tuple[str | tuple[str, ...], ...]
    command: str | tuple[str, ...]
    stop_signal: str
    stop_timeout: float
    ready: Ready
    watch: Watch
    compose: Compose | None
    preload: bool | None = None  # None: auto (Python commands start by a fork from a preloaded process)
    # run before the command, as Docker runs ENTRYPOINT + CMD; None: not set (the image's is not run)
    entrypoint: tuple[str, ...] | None = None
    debugger: Debugger | None = None  # None: off
    browser: Browser | None = None  # None: off (devbox answers on the first published port when on)
    sync: bool | None = None  # None: auto (copy the files in when the engine cannot see this folder)
    sync_max_mb: int = SYNC_MAX_MB  # a synced file bigger than this is not sent (said, with the file's name)

    def with_debugger(self) -> "Config":
        """This config with the debugger on (`devbox up --debugger`), as configured if it is."""
        return self if self.debugger is not None else replace(self, debugger=Debugger())

    def server_env(self) -> dict[str, str]:
        """env_file entries, then `env` over them, as Compose orders them."""
        out: dict[str, str] = {}
        for path in self.env_files:
            out.update(read_env_file(path))
        out.update(self.env)
        return out

    def container_path(self, host_path: Path) -> str | None:
        """Where a host file is seen in the container, through the bind mounts (None if it is not mounted)."""
        for mount in sorted(self.mounts, key=lambda m: len(str(m.source)), reverse=True):
            try:
                relative = host_path.resolve().relative_to(mount.source)
            except ValueError:
                continue
            return f"{mount.target.rstrip('/')}/{relative.as_posix()}" if str(relative) != "." else mount.target
        return None

    def code_roots(self) -> list[tuple[Path, str]]:
        """Where the project's code is in the container: each bind mount of the project folder or a folder
        in it (host folder, container path), the most specific first; the folder at the workdir if none is."""
        inside = [(m.source, m.target) for m in self.mounts
                  if m.source == self.project_dir or self.project_dir in m.source.parents]
        return sorted(inside, key=lambda m: len(m[1]), reverse=True) or [(self.project_dir, self.workdir)]

    def host_path(self, container_path: str) -> Path | None:
        """Where a container path is on this machine, through the bind mounts (None if no mount has it)."""
        for mount in sorted(self.mounts, key=lambda m: len(m.target), reverse=True):
            target = mount.target.rstrip("/") or "/"
            if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
                return mount.source / container_path[len(target):].lstrip("/")
        return None

    def watched_files(self) -> set[str]:
        """The files devbox reads, relative to the project folder: always watched, whatever is ignored."""
        names = {self.file.name, LOCAL_NAME, ".env"}
        for path in self.env_files:
            try:
                names.add(path.resolve().relative_to(self.project_dir).as_posix())
            except ValueError:
                pass
        return names

    def setup_hash(self) -> str:
        """What a container's finished setup is recorded as: a changed `setup` runs again."""
        return hashlib.sha256(json.dumps([list(c) if isinstance(c, tuple) else c for c in self.setup]).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        """The resolved config in the input's key shape (what `devbox config` prints)."""
        def command(c: str | tuple[str, ...]) -> str | list[str]:
            return c if isinstance(c, str) else list(c)

        out: dict[str, Any] = {"name": self.name}
        if self.image is not None:
            out["image"] = self.image
        if self.build is not None:
            out["build"] = {"context": str(self.build.context), "dockerfile": self.build.dockerfile,
                            "args": dict(self.build.args)} | ({"target": self.build.target} if self.build.target else {})
        out |= {
            "workdir": self.workdir,
            "mounts": [f"{m.source}:{m.target}" + (":ro" if m.read_only else "") for m in self.mounts],
            "volumes": [f"{v.name}:{v.target}" for v in self.volumes],
            "env": dict(self.env),
            "env_file": [str(p) for p in self.env_files],
            "ports": [str(p) for p in self.ports],
            "setup": [command(c) for c in self.setup],
            "command": command(self.command),
            **({} if self.entrypoint is None else {"entrypoint": list(self.entrypoint)}),
            "stop_signal": self.stop_signal,
            "stop_timeout": self.stop_timeout,
            "preload": "auto" if self.preload is None else self.preload,
            "sync": {"when": "auto" if self.sync is None else self.sync, "max_file_mb": self.sync_max_mb},
            "debugger": False if self.debugger is None else {"port": self.debugger.port, "wait": self.debugger.wait},
            "browser": False if self.browser is None else {"reload": self.browser.reload, "hold": self.browser.hold},
            "ready": {k: v for k, v in (("http", self.ready.http), ("tcp", self.ready.tcp), ("log", self.ready.log))
                      if v is not None} | {"timeout": self.ready.timeout},
            "watch": {
                "paths": [str(p) for p in self.watch.paths],
                "ignore": list(self.watch.ignore),
                "debounce_ms": self.watch.debounce_ms,
                "poll": "auto" if self.watch.poll is None else self.watch.poll,
                "rules": [{"match": list(r.match), "action": {"exec": command(r.exec)} if r.action is RuleAction.EXEC else r.action.value}
                          for r in self.watch.rules],
            },
        }
        if self.compose is not None:
            files = [str(f) for f in self.compose.where.files]
            out["compose"] = ({"file": files} if files else {}) | {"services": list(self.compose.services)} | \
                ({"service": self.compose.service} if self.compose.service else {}) | \
                ({"completed": list(self.compose.completed)} if self.compose.completed else {})
        return out
