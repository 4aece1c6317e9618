"""Load devbox.yaml: find it, parse it with positions, interpolate, layer the local file, take a Compose
service's keys, validate, freeze. Every problem is collected (not only the first) and reported with
file, line and column, as `ConfigError`."""

from __future__ import annotations

__all__ = ["find_config", "load", "sanitise_name", "deep_merge"]

import os
import re
import shlex
from pathlib import Path
from typing import Any, Mapping

from .. import schema
from ..errors import ConfigError, ConfigProblem
from .envfiles import interpolate_tree, read_env_file
from .model import COMPOSE_FILES, CONFIG_NAME, SYNC_MAX_MB, LOCAL_NAME, Browser, Build, Compose, ComposeFiles, Config, Debugger, Mount, Port, Ready, Rule, Volume, Watch
from .yamlpos import Positions, parse

# -- finding the file --------------------------------------------------------------------------

def find_config(explicit: str | os.PathLike | None = None, start: Path | None = None) -> Path:
    """The -f file, or devbox.yaml in the current folder or the nearest parent, like git."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError([ConfigProblem(str(explicit), 0, 0, "no such file (check the -f argument)")])
        return path.resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / CONFIG_NAME).is_file():
            return folder / CONFIG_NAME
    raise ConfigError([ConfigProblem(CONFIG_NAME, 0, 0,
                                     f"not found in {here} or any parent folder; run `devbox init` to write one")])


def sanitise_name(text: str) -> str:
    name = re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-_")[:63].strip("-_")  # a socket path has a limit
    return name or "devbox"



# -- layering ----------------------------------------------------------------------------------

def deep_merge(base: Any, over: Any) -> Any:
    """Maps merge by key; lists and scalars in `over` replace."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = deep_merge(base[k], v) if k in base else v
        return out
    return over


def _drop_replaced_source(base: dict, over: dict) -> dict:
    """`image` and `build` are one choice: a layer that names one replaces the other below it
    (a personal `image:` over the team's `build:`, and the reverse). Layering decides, then validation."""
    for mine, other in (("image", "build"), ("build", "image")):
        if mine in over and other not in over and other in base:
            return {k: v for k, v in base.items() if k != other}
    return base


def _merge_positions(base: Positions, over: Positions, merged: Any) -> Positions:
    """Positions from `over` win; base positions stay only where the merged value still comes from base."""
    out = dict(over)
    for path, where in base.items():
        if path in out:
            continue
        # a path survives from base unless some prefix of it was replaced wholesale by the local file
        replaced = any(path[:i] in over and not _is_map_at(merged, path[:i]) for i in range(1, len(path) + 1))
        if not replaced:
            out[path] = where
    return out


def _is_map_at(data: Any, path: tuple) -> bool:
    for part in path:
        if part == "<key>":
            return True
        if isinstance(data, dict) and part in data:
            data = data[part]
        else:
            return False
    return isinstance(data, dict)


# -- the whole load --------------------------------------------------------------------------

def load(path: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read, interpolate, layer and validate; raise ConfigError with every problem found."""
    path = Path(path).resolve()
    project_dir = path.parent
    environ = os.environ if environ is None else environ
    problems: list[ConfigProblem] = []
    variables = {**read_env_file(project_dir / ".env"), **environ}

    layers = [(path, path.name)]
    local = project_dir / LOCAL_NAME
    if path.name == CONFIG_NAME and local.is_file():
        layers.append((local, LOCAL_NAME))

    merged: Any = None
    positions: Positions = {}
    failed: set[tuple] = set()  # paths whose interpolation failed: reported once, not validated again
    unreadable = False  # a layer that could not be read as a mapping: validating the rest would only add noise
    misreads: list[tuple[tuple, ConfigProblem]] = []
    for index, (file, shown) in enumerate(layers):
        before = len(problems)
        data, where = parse(file, shown, problems, misreads)
        if len(problems) > before:
            unreadable = True
            continue
        if data is None:
            if index == 0:
                problems.append(ConfigProblem(shown, 0, 0, "is empty; run `devbox init` for a starter file"))
                unreadable = True
            continue  # an empty local file changes nothing
        if not isinstance(data, dict):
            line, col = where.get((), (shown, 1, 1))[1:]
            problems.append(ConfigProblem(shown, line, col,
                                          f"expected a mapping of keys at the top, got {schema.describe(data)}"))
            unreadable = True
            continue
        data = interpolate_tree(data, (), variables, where, problems, failed)
        if merged is not None:
            merged = _drop_replaced_source(merged, data)
        positions = where if merged is None else _merge_positions(positions, where, deep_merge(merged, data))
        merged = data if merged is None else deep_merge(merged, data)
    if merged is None or unreadable:
        raise ConfigError(problems)
    merged = _with_compose_service(merged, project_dir, positions, problems, path.name)

    report = schema.Report()
    checked = schema.SCHEMA.check(merged, (), report)
    for p in report.problems:
        if p.path in failed:
            continue
        key = p.path + ("<key>",) if p.at_key else p.path
        where = positions.get(key) or _nearest(positions, p.path) or (path.name, 0, 0)
        problems.append(ConfigProblem(where[0], where[1], where[2], p.message))
    flagged = {p.path for p in report.problems}
    problems += [problem for path, problem in misreads
                 if not any(path[:len(f)] == f or f[:len(path)] == path for f in flagged)]
    if not problems:
        problems.extend(_check_paths(checked, project_dir, positions, path.name, variables))
    if problems:
        problems.sort(key=lambda p: (p.file != path.name, p.file, p.line, p.column))
        raise ConfigError(problems)
    return _freeze(checked, path, project_dir)


def _nearest(positions: Positions, path: tuple) -> tuple[str, int, int] | None:
    while path:
        if path in positions:
            return positions[path]
        path = path[:-1]
    return positions.get(())


def _check_paths(data: dict, project_dir: Path, positions: Positions, shown: str,
                 variables: Mapping[str, str]) -> list[ConfigProblem]:
    """Files that must exist on the host: env_file entries and watch paths."""
    out = []
    env_files = data.get("env_file") or []
    for i, name in enumerate(env_files if isinstance(env_files, list) else [env_files]):
        if not (project_dir / name).is_file():
            file, line, col = positions.get(("env_file", i)) or positions.get(("env_file",)) or (shown, 0, 0)
            out.append(ConfigProblem(file, line, col, f"env_file: '{name}' does not exist (create it or remove the entry)"))
        else:
            bad: list[tuple[int, str]] = []
            read_env_file(project_dir / name, bad)
            out += [ConfigProblem(str(name), number, 1, message) for number, message in bad]
    compose = data.get("compose")
    if isinstance(compose, dict):
        files = compose.get("file") or []
        for i, file in enumerate(files if isinstance(files, list) else [files]):
            if not (project_dir / file).is_file():
                f, line, col = positions.get(("compose", "file", i)) or positions.get(("compose", "file")) or \
                    (shown, 0, 0)
                out.append(ConfigProblem(f, line, col, f"compose.file: '{file}' does not exist"))
        if not files and not variables.get("COMPOSE_FILE") and \
                not any((folder / n).is_file() for folder in (project_dir, *project_dir.parents) for n in COMPOSE_FILES):
            f, line, col = positions.get(("compose",)) or (shown, 0, 0)
            out.append(ConfigProblem(f, line, col, f"compose: no Compose file here ({', '.join(COMPOSE_FILES)}): "
                                                   "set compose.file"))
    for i, name in enumerate((data.get("watch") or {}).get("paths") or []):
        if not (project_dir / name).exists():
            file, line, col = positions.get(("watch", "paths", i)) or (shown, 0, 0)
            out.append(ConfigProblem(file, line, col, f"watch.paths: '{name}' does not exist"))
    return out


def _compose_files(compose: dict, project_dir: Path) -> ComposeFiles:
    """`compose.file` (a file or a list, each a `-f` in order), or none: Compose's own lookup decides."""
    files = compose.get("file") or []
    return ComposeFiles(project_dir, tuple((project_dir / f).resolve() for f in (files if isinstance(files, list)
                                                                                   else [files])))


def _with_compose_service(merged: Any, project_dir: Path, positions: Positions, problems: list[ConfigProblem],
                          shown: str) -> Any:
    """`compose: {service: web}`: that service's build or image, env, ports, volumes, workdir and depends_on,
    as Compose resolves them, under devbox.yaml's own keys (devbox.yaml wins, key by key)."""
    compose = merged.get("compose") if isinstance(merged, dict) else None
    if not isinstance(compose, dict) or not isinstance(compose.get("service"), str):
        return merged
    from ..compose import resolve_service
    from ..errors import DevboxError

    files = _compose_files(compose, project_dir)
    where = positions.get(("compose", "service")) or (shown, 0, 0)
    if not all(f.is_file() for f in files.files):
        return merged  # reported by _check_paths
    try:
        defaults = resolve_service(files, compose["service"])
    except DevboxError as e:
        problems.append(ConfigProblem(where[0], where[1], where[2], f"compose.service: {e}"))
        return merged
    if "services" in compose:
        defaults.pop("compose")
    return deep_merge(_drop_replaced_source(defaults, merged), merged)


def _command(value: Any) -> str | tuple[str, ...]:
    return value if isinstance(value, str) else tuple(value)


def _freeze(data: dict, path: Path, project_dir: Path) -> Config:
    workdir = data.get("workdir", "/app")
    mounts = []
    for text in data.get("mounts", [f".:{workdir}"]):
        host, target, ro = schema.parse_mount(text)
        mounts.append(Mount((project_dir / os.path.expanduser(host)).resolve(), target, ro))
    ports = []
    for item in data.get("ports", []):
        addr, host, container, proto = schema.parse_port(str(item))
        ports.append(Port(addr, host, container, proto))
    ready = data.get("ready", {})
    watch = data.get("watch", {})
    rules = []
    for rule in watch.get("rules", []):
        action = rule["action"]
        if isinstance(action, dict):
            rules.append(Rule(tuple(rule["match"]), "exec", _command(action["exec"])))
        else:
            rules.append(Rule(tuple(rule["match"]), action))
    build = data.get("build")
    if isinstance(build, str):
        build = {"context": build}
    compose = data.get("compose")
    env_files = data.get("env_file", [])
    return Config(
        file=path,
        project_dir=project_dir,
        name=data.get("name") or sanitise_name(project_dir.name),
        image=data.get("image"),
        build=None if build is None else Build((project_dir / build.get("context", ".")).resolve(),
                                               build.get("dockerfile", "Dockerfile"), build.get("args", {}),
                                               build.get("target")),
        workdir=workdir,
        mounts=tuple(mounts),
        volumes=tuple(Volume(*schema.parse_volume(v)) for v in data.get("volumes", [])),
        env=data.get("env", {}),
        env_files=tuple(project_dir / f for f in env_files),
        ports=tuple(ports),
        setup=tuple(_command(c) for c in data.get("setup", [])),
        command=_command(data["command"]),
        stop_signal=schema.parse_signal(data.get("stop_signal", "SIGTERM")),
        stop_timeout=float(data.get("stop_timeout", 5)),
        ready=Ready(ready.get("http"), ready.get("tcp"), ready.get("log"), float(ready.get("timeout", 30))),
        watch=Watch(tuple((project_dir / p).resolve() for p in watch.get("paths", ["."])),
                    tuple(watch.get("ignore", [])), int(watch.get("debounce_ms", 50)), tuple(rules),
                    None if watch.get("poll", "auto") == "auto" else bool(watch["poll"])),
        compose=None if compose is None else Compose(_compose_files(compose, project_dir),
                                                     tuple(compose.get("services", [])), compose.get("service"),
                                                     tuple(compose.get("completed", []))),
        preload=None if data.get("preload", "auto") == "auto" else bool(data["preload"]),
        sync=_sync_when(data.get("sync", "auto")),
        sync_max_mb=int(data["sync"].get("max_file_mb", SYNC_MAX_MB)) if isinstance(data.get("sync"), dict)
        else SYNC_MAX_MB,
        entrypoint=None if "entrypoint" not in data else tuple(_argv(data["entrypoint"])),
        debugger=_debugger(data.get("debugger", False)),
        browser=_browser(data.get("browser", False)),
    )


def _sync_when(value: str | bool | dict) -> bool | None:
    when = value.get("when", "auto") if isinstance(value, dict) else value
    return None if when == "auto" else bool(when)


def _browser(value: bool | dict) -> Browser | None:
    if value is False:
        return None
    if value is True:
        return Browser()
    return Browser(bool(value.get("reload", True)), bool(value.get("hold", True)))


def _debugger(value: bool | dict) -> Debugger | None:
    if value is False:
        return None
    if value is True:
        return Debugger()
    return Debugger(int(value.get("port", 5678)), bool(value.get("wait", False)))


def _argv(value: str | list[str]) -> list[str]:
    """An entrypoint as Compose reads it: a list as is, a string split as a shell would (no shell runs)."""
    return list(value) if isinstance(value, list) else shlex.split(value)

