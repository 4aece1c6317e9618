"""`devbox doctor`: check what `devbox up` needs, one line a check: ok, warn or fail, and the fix."""

from __future__ import annotations

__all__ = ["Check", "run_checks"]

import os
from typing import Iterator, NamedTuple

from .config import Config
from .ports import taken_ports


class Check(NamedTuple):
    level: str  # ok | warn | fail
    text: str

    def __str__(self) -> str:
        return f"{self.level:<5} {self.text}"


def run_checks(config: Config) -> list[Check]:
    return list(_checks(config))


def _checks(config: Config) -> Iterator[Check]:
    from .errors import DevboxError

    client = None
    try:
        from .engine import connect, endpoint

        where = endpoint()
        client = connect(timeout=10)
        version = client.version()
        yield Check("ok", f"engine: {where} answers: Docker {version.get('Version')}, API {version.get('ApiVersion')}")
    except DevboxError as e:
        yield Check("fail", f"engine: {e}")
    if client is not None:
        yield from _round_trip(client, where)
        yield from _files(client, config, where)
        yield from _signalling(client, config)
    yield from _watching(config)
    yield from _compose(config)
    yield from _ports(config, client)
    yield from _debugger(config)
    from .exposure import exposure_warnings

    from .ready import unchecked

    for line in [*exposure_warnings(config), unchecked(config)]:
        if line:
            yield Check("warn", line)
    if client is not None:
        yield from _image(config, client)
    yield from _code(config, client)


def _round_trip(client, where) -> Iterator[Check]:
    """What each call to the engine costs: a save on a synced container makes about three."""
    import time

    times = []
    for _ in range(5):
        began = time.perf_counter()
        client.ping()
        times.append(time.perf_counter() - began)
    median = sorted(times)[2] * 1000
    level = "ok" if median < 50 else "warn"
    yield Check(level, f"engine: round trip {median:.1f} ms (median of 5 pings to {where.host})"
                + ("" if level == "ok" else ": each save waits for a few of these"))


def _files(client, config: Config, where) -> Iterator[Check]:
    """Mounted or synced: as the container was made, or what `sync:` will do."""
    from .container import LABEL_SYNC, Box
    from .output import say

    container = Box(client, config, say).find()
    target = config.container_path(config.project_dir) or config.workdir
    if container is not None:
        synced = container.labels.get(LABEL_SYNC) == "synced"
        yield Check("ok", f"files: {'synced into' if synced else 'mounted at'} {target} in container {container.name}"
                          + (" (one way: what the server writes stays there; `devbox exec` reads it)" if synced else ""))
    elif config.sync is None:
        hint = f"on {where.remote_host}, so likely synced" if where.remote_host or where.is_ssh \
            else "on this machine, so likely mounted"
        yield Check("ok", f"files: sync: auto asks the engine at `up` whether it sees this folder (the engine is {hint})")
    else:
        yield Check("ok", f"files: {'synced into' if config.sync else 'mounted at'} {target} (sync: "
                          f"{str(config.sync).lower()} in {config.file.name})")


def _signalling(client, config: Config) -> Iterator[Check]:
    """Whether the server can be signalled from the host (fast) or through a second exec (portable)."""
    from .container import Box
    from .output import say
    from .server import TOKEN_VAR, _environ_tokens

    container = Box(client, config, say).find()
    if container is None or container.status != "running":
        yield Check("ok", "stop: checked while the container runs (`devbox up`, then `devbox doctor` again)")
        return
    exec_id = client.api.exec_create(container.id, ["sleep", "2"], environment={TOKEN_VAR: "doctor"})["Id"]
    client.api.exec_start(exec_id, detach=True)
    pid = 0
    for _ in range(100):
        pid = client.api.exec_inspect(exec_id).get("Pid") or 0
        if pid:
            break
    if pid and "doctor" in _environ_tokens(pid):
        yield Check("ok", "stop: devbox signals the server from the host (it shares the engine's pid namespace)")
    else:
        yield Check("ok", "stop: devbox signals the server through a second exec (Docker Desktop, rootless, "
                          "or another user: portable, about 40 ms slower)")


def _watching(config: Config) -> Iterator[Check]:
    from .ignore import IgnoreRules, unreadable_folders
    from .watch import inotify_limit, watch_settings

    settings = watch_settings(config.watch.paths, config.watch.poll)
    if settings.force_polling:
        yield Check("warn", f"watch: polling every {settings.poll_delay_ms} ms ({settings.why}): saves are seen "
                            "later; keep the project on a local file system for native events")
    else:
        yield Check("ok", "watch: native file events")
    bad, folders = unreadable_folders(config.watch.paths, IgnoreRules.for_project(config.project_dir,
                                                                                 config.watch.ignore),
                                      config.project_dir)
    limit = inotify_limit()
    if limit is not None and not settings.force_polling:
        if folders > limit:
            yield Check("fail", f"watch: {folders} folders to watch, inotify allows {limit}: raise it with "
                                f"`sudo sysctl fs.inotify.max_user_watches={max(524288, folders * 2)}`")
        else:
            yield Check("ok", f"watch: {folders} folders to watch, inotify allows {limit}")
    for folder in bad:
        yield Check("warn", f"watch: cannot read {folder}: add it to watch.ignore")


def _compose(config: Config) -> Iterator[Check]:
    from .compose import ToolMissing, find_compose

    needed = config.build is not None or config.compose is not None
    try:
        compose = find_compose()
        yield Check("ok", f"compose: {compose}")
    except ToolMissing as e:
        yield Check("fail" if needed else "warn", f"compose: {e}")


def _ports(config: Config, client) -> Iterator[Check]:
    ours: set[int] = set()
    if client is not None:
        from .container import Box
        from .output import say

        container = Box(client, config, say).find()
        if container is not None and container.status == "running":
            ours = {p.host_port for p in config.ports}  # published by devbox's own container
    taken = taken_ports([p for p in config.ports if p.host_port not in ours])
    for port in config.ports:
        if port.host_port in ours:
            yield Check("ok", f"port {port.host_port}: published by devbox-{config.name}")
        elif port in taken:
            yield Check("fail", f"port {port.host_port}: in use by another program: stop it, or change "
                                f"`ports` in {config.file.name}")
        else:
            yield Check("ok", f"port {port.host_port}: free")


def _debugger(config: Config) -> Iterator[Check]:
    if config.debugger is None:
        return
    from .config import Port
    from .control import request

    port = config.debugger.port
    if not taken_ports([Port("127.0.0.1", port, port)]):
        yield Check("ok", f"debugger: port {port} is free: a client attaches at 127.0.0.1:{port} once `devbox up` runs")
    elif request(config.name, "status", timeout=10) is not None:
        yield Check("ok", f"debugger: `devbox up` listens at 127.0.0.1:{port}")
    else:
        yield Check("fail", f"debugger: port {port} is in use by another program: stop it, or set "
                            f"`debugger: {{port: N}}` in {config.file.name}")


def _image(config: Config, client) -> Iterator[Check]:
    import docker.errors

    if config.build is not None:
        dockerfile = config.build.context / config.build.dockerfile
        if dockerfile.is_file():
            yield Check("ok", f"image: built from {os.path.relpath(dockerfile, config.project_dir)}")
        else:
            yield Check("fail", f"image: {dockerfile} does not exist: fix `build` in {config.file.name}")
        return
    try:
        client.images.get(config.image)
        yield Check("ok", f"image: {config.image} is here")
    except docker.errors.ImageNotFound:
        yield Check("warn", f"image: {config.image} is not here: `devbox up` pulls it (needs its registry)")
    except Exception as e:
        yield Check("warn", f"image: cannot look up {config.image} ({type(e).__name__})")


def _shown(path, config: Config) -> str:
    """A host path as the user wrote it: relative inside the project, absolute outside."""
    relative = os.path.relpath(path, config.project_dir)
    return str(path) if relative.startswith("..") else relative


def _command_target(config: Config) -> tuple[str, str] | None:
    """What the command runs, as Python finds it: ("script", container path) for `python manage.py`, or
    ("module", dotted name) for `python -m pkg`, `uvicorn pkg.main:app`, gunicorn and the like, FLASK_APP
    for `flask run`; None if the command names neither."""
    import posixpath
    import re

    from .server import command_argv, server_command

    argv = command_argv(server_command(config.command, config.entrypoint)) or []
    words = argv[1:]
    if argv and re.fullmatch(r"python[\d.]*", posixpath.basename(argv[0])):
        for i, word in enumerate(words):
            if word == "-m" and i + 1 < len(words):
                return "module", words[i + 1]
            if word == "-c":
                return None
            if not word.startswith("-"):
                return "script", posixpath.join(config.workdir, word)
        return None
    if argv and posixpath.basename(argv[0]) == "flask":
        app = (config.server_env().get("FLASK_APP") or "").split(":")[0]
        return ("module", app.removesuffix(".py").replace("/", ".")) if app else None
    for word in words:  # uvicorn, gunicorn, hypercorn, daphne, granian: MODULE:APP
        if re.fullmatch(r"[A-Za-z_][\w.]*:[\w.()]+", word):
            return "module", word.split(":")[0]
    return None


# Python's own answer, in the container, from the workdir as the server starts there (uvicorn, gunicorn,
# flask and `python -m` put it first on sys.path): a spec's origin, or why there is none.
_FIND = r"""
import os, sys
kind, name = sys.argv[1], sys.argv[2]
if kind == "script":
    print("found " + name if os.path.isfile(name) else "missing no such file")
    raise SystemExit(0)
import importlib.util
sys.path.insert(0, os.getcwd())
try:
    spec = importlib.util.find_spec(name)
except Exception as e:
    print("missing %s: %s" % (type(e).__name__, e))
else:
    print("found %s" % (spec.origin or name) if spec else "missing No module named %r" % name)
"""
_PYTHON = 'py=$(command -v python3 || command -v python) || { echo "missing no python in the image"; exit 0; }; ' \
          'exec "$py" -c "$0" "$@"'


def _code(config: Config, client) -> Iterator[Check]:
    """What `up` will run is where it runs: the code is mounted at or around the workdir, and Python in
    the container finds the command's script or module from there."""
    roots = [target for _, target in config.code_roots() if any(
        m.target == target for m in config.mounts)]
    near = [t for t in roots if _within(config.workdir, t) or _within(t, config.workdir)]
    if near:
        yield Check("ok", f"workdir {config.workdir}: the code mounted at {', '.join(near)}")
    else:
        shown = ", ".join(f"{_shown(m.source, config)}:{m.target}" for m in config.mounts)
        yield Check("warn", f"workdir {config.workdir} is not where the code is mounted ({shown or 'no mounts'}): "
                            f"edits will not reach the server; set `workdir` (or `mounts`) in {config.file.name}")
    target = _command_target(config)
    if target is None:
        return
    kind, name = target
    answer = _ask_python(config, client, kind, name)
    if answer is None and kind == "script":  # no image yet: where its mount or the Dockerfile's COPY has it
        answer = _script_before_build(config, name)
    if answer is None:
        yield Check("ok", f"command: {name} is checked once the image is built (`devbox up`)")
    elif answer.startswith("found "):
        where = answer.removeprefix("found ")
        yield Check("ok", f"command: {name} is there" + ("" if where == name else f" ({where})"))
    else:
        why = answer.removeprefix("missing ")
        what = f"{name} is not in the container" if kind == "script" else \
            f"Python finds no module {name} from the workdir {config.workdir} in the container"
        yield Check("fail", f"command: {what} ({why}): fix `command`, `workdir` or `mounts` in {config.file.name}")


def _script_before_build(config: Config, name: str) -> str | None:
    """Before the first build, whether the container will have the script: through a mount, or through the
    Dockerfile's COPY of a context file that is there; None if devbox cannot tell."""
    mounted = config.host_path(name)
    if mounted is not None:
        return f"found {name}" if mounted.is_file() else "missing no such file"
    if config.build is None:
        return None
    from .dockerfile import read_dockerfile

    parsed = read_dockerfile(config.build.context / config.build.dockerfile, config.build.target)
    if parsed is None:
        return None
    sources = parsed.sources_of(name)
    if any((config.build.context / source).is_file() for source in sources):
        return f"found {name}"
    return "missing neither mounted nor copied there by the Dockerfile"


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _ask_python(config: Config, client, kind: str, name: str) -> str | None:
    """Python's import system in the container (the running one, or a throwaway one from the image with
    the mounts, env and workdir `up` gives the server): "found ORIGIN" or "missing WHY"; None if there is
    no image yet or the engine cannot tell."""
    if client is None:
        return None
    from .build import image_tag
    from .container import Box
    from .output import say

    command = ["sh", "-c", _PYTHON, _FIND, kind, name]
    env = config.server_env()
    try:
        container = Box(client, config, say).find()
        if container is not None and container.status == "running":
            result = container.exec_run(command, environment=env, workdir=config.workdir)
            return _answer(result.output.decode(errors="replace"))
        image = client.images.get(config.image or image_tag(config))
    except Exception:
        return None
    from docker.types import Mount as DockerMount

    mounts = [DockerMount(m.target, str(m.source), type="bind", read_only=True) for m in config.mounts
              if m.source.exists()]
    try:
        made = client.containers.create(image.id, command[2:], entrypoint=command[:2], environment=env,
                                        working_dir=config.workdir, mounts=mounts,
                                        labels={"devbox.project": config.name, "devbox.doctor": "1"})
    except Exception:
        return None
    try:
        made.start()
        made.wait(timeout=30)
        return _answer(made.logs().decode(errors="replace"))
    except Exception:
        return None
    finally:
        try:
            made.remove(force=True, v=True)
        except Exception:
            pass


def _answer(output: str) -> str | None:
    line = next((line for line in reversed(output.splitlines()) if line.startswith(("found ", "missing "))), "")
    return line or None
