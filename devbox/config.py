"""Load devbox.yaml: find it, parse it with positions, interpolate, layer the local file, validate, freeze.

Config is data, validated once here; everything downstream trusts it. Every
problem is collected (not only the first) and reported with file, line and
column, as `ConfigError`.
"""

from __future__ import annotations

__all__ = ["Config", "Port", "Mount", "Volume", "Ready", "Watch", "Rule", "find_config", "load", "CONFIG_NAME",
           "LOCAL_NAME", "sanitise_name"]

import hashlib
import json
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from . import schema
from .errors import ConfigError, ConfigProblem

CONFIG_NAME = "devbox.yaml"
LOCAL_NAME = "devbox.local.yaml"



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


@dataclass(frozen=True)
class Rule:
    match: tuple[str, ...]
    action: str  # restart | setup | rebuild | none | exec
    exec: str | tuple[str, ...] | None = None


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
class Compose:
    file: Path
    services: tuple[str, ...] = ()  # started beside devbox's container, reached by name
    service: str | None = None  # the Compose service devbox runs as its own (its keys under devbox.yaml's)


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

    def server_env(self) -> dict[str, str]:
        """env_file entries, then `env` over them, as Compose orders them."""
        out: dict[str, str] = {}
        for path in self.env_files:
            out.update(read_env_file(path))
        out.update(self.env)
        return out

    def container_spec(self) -> dict[str, Any]:
        """What defines the container: a change here recreates it; anything else restarts only the server."""
        return {
            "image": self.image,
            # build args may be secrets (NPM_TOKEN): the spec is a label anyone can `docker inspect`, so
            # it holds their hashes, never their values
            "build": None if self.build is None else [str(self.build.context), self.build.dockerfile,
                                                      {k: _digest(v) for k, v in self.build.args.items()},
                                                      self.build.target],
            "workdir": self.workdir,
            "mounts": [f"{m.source}:{m.target}:{'ro' if m.read_only else 'rw'}" for m in self.mounts],
            "volumes": [f"{v.name}:{v.target}" for v in self.volumes],
            "ports": [str(p) for p in self.ports],
        }

    def container_path(self, host_path: Path) -> str | None:
        """Where a host file is seen in the container, through the bind mounts (None if it is not mounted)."""
        for mount in sorted(self.mounts, key=lambda m: len(str(m.source)), reverse=True):
            try:
                relative = host_path.resolve().relative_to(mount.source)
            except ValueError:
                continue
            return f"{mount.target.rstrip('/')}/{relative.as_posix()}" if str(relative) != "." else mount.target
        return None

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

    def container_hash(self, image_id: str = "", network: str = "") -> str:
        data = json.dumps([self.container_spec(), image_id] + ([network] if network else []), sort_keys=True).encode()
        return hashlib.sha256(data).hexdigest()[:16]

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
            "ready": {k: v for k, v in (("http", self.ready.http), ("tcp", self.ready.tcp), ("log", self.ready.log))
                      if v is not None} | {"timeout": self.ready.timeout},
            "watch": {
                "paths": [str(p) for p in self.watch.paths],
                "ignore": list(self.watch.ignore),
                "debounce_ms": self.watch.debounce_ms,
                "poll": "auto" if self.watch.poll is None else self.watch.poll,
                "rules": [{"match": list(r.match), "action": {"exec": command(r.exec)} if r.action == "exec" else r.action}
                          for r in self.watch.rules],
            },
        }
        if self.compose is not None:
            out["compose"] = {"file": str(self.compose.file), "services": list(self.compose.services)} | \
                ({"service": self.compose.service} if self.compose.service else {})
        return out


def _digest(value: object) -> str:
    return "sha256:" + hashlib.sha256(str(value).encode()).hexdigest()[:16]


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


# -- YAML with positions -------------------------------------------------------------------------

Positions = dict[tuple, tuple[str, int, int]]  # key path -> (file, line, column); (path + ("<key>",)) for keys


class _Loader(yaml.SafeLoader):
    pass


def _parse(path: Path, shown: str, problems: list[ConfigProblem],
           misreads: list[tuple[tuple, ConfigProblem]] | None = None) -> tuple[Any, Positions]:
    """The document as plain data plus where each value (and key) sits in the file; YAML 1.1
    misreadings go to `misreads` (reported where validation finds nothing else wrong)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as e:
        problems.append(ConfigProblem(shown, 0, 0, f"cannot read: {e.strerror}"))
        return None, {}
    if len(data) > MAX_BYTES:
        problems.append(ConfigProblem(shown, 0, 0, f"is larger than {MAX_BYTES // 1024} KB; a devbox.yaml is a few "
                                                   "KB: is it the right file?"))
        return None, {}
    if b"\0" in data:
        problems.append(ConfigProblem(shown, 0, 0, "is a binary file, not YAML"))
        return None, {}
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        problems.append(ConfigProblem(shown, 0, 0, f"is not UTF-8 text (byte {e.start})"))
        return None, {}
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as e:
        line = text.count("\n", 0, e.position) + 1
        column = e.position - (text.rfind("\n", 0, e.position) + 1) + 1
        problems.append(ConfigProblem(shown, line, column, f"YAML syntax: character {e.character!r} is not allowed"))
        return None, {}
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        sizes: dict[int, int] = {}
        if _expanded_size(node, sizes, set()) > MAX_VALUES:
            why = ("nested too deeply (an alias that contains itself?)" if CYCLE in sizes else
                   f"its aliases expand to more than {MAX_VALUES:,} values (an alias bomb?): write the values out")
            problems.append(ConfigProblem(shown, node.start_mark.line + 1, node.start_mark.column + 1, f"YAML: {why}"))
            return None, {}
        duplicate = _duplicate_key(node)
        if duplicate is not None:
            key, first, again = duplicate
            problems.append(ConfigProblem(shown, again.line + 1, again.column + 1,
                                          f"duplicate key '{key}' (first at line {first.line + 1}): keep one"))
            return None, {}
        value = loader.construct_document(node)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        what = e.problem or e.context or "invalid YAML"
        problems.append(ConfigProblem(shown, mark.line + 1 if mark else 0, mark.column + 1 if mark else 0,
                                      f"YAML syntax: {what}"))
        return None, {}
    except (yaml.YAMLError, RecursionError, ValueError, TypeError) as e:
        problems.append(ConfigProblem(shown, 0, 0, f"YAML: {str(e).splitlines()[0] if str(e) else type(e).__name__}"))
        return None, {}
    finally:
        loader.dispose()
    if _too_deep(value):
        line, column = node.start_mark.line + 1, node.start_mark.column + 1
        problems.append(ConfigProblem(shown, line, column, "YAML: nested too deeply (an alias that contains itself?)"))
        return None, {}
    positions = _walk(loader, node, shown)
    if misreads is not None:
        misreads.extend(_misread(loader, node, shown))
    return value, positions


MAX_BYTES = 1024 * 1024  # a config larger than this is not one (a 28 MB file took minutes and GBs)
MAX_VALUES = 10_000  # values after alias expansion: a devbox.yaml has a few hundred
CYCLE = -1  # the key `_expanded_size` marks an alias that contains itself with


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """How many values the document has once aliases are expanded, counted on the node graph (each
    node once, so a 436-byte alias bomb is counted, not built); a cycle counts as too many."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_nodes:
        sizes[CYCLE] = 1
        return MAX_VALUES + 1
    open_nodes.add(key)
    if isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, sizes, open_nodes) + _expanded_size(v, sizes, open_nodes)
                       for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(item, sizes, open_nodes) for item in node.value)
    else:
        size = 1
    open_nodes.discard(key)
    sizes[key] = min(size, MAX_VALUES + 1)
    return sizes[key]


def _duplicate_key(node: yaml.Node, seen: set[int] | None = None) -> tuple[str, yaml.Mark, yaml.Mark] | None:
    """The first key written twice in one mapping (YAML 1.2 and Compose refuse those; PyYAML keeps the last)."""
    seen = set() if seen is None else seen
    if id(node) in seen:
        return None
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        keys: dict[str, yaml.Mark] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value != "<<":
                if key_node.value in keys:
                    return key_node.value, keys[key_node.value], key_node.start_mark
                keys[key_node.value] = key_node.start_mark
            found = _duplicate_key(value_node, seen)
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            found = _duplicate_key(item, seen)
            if found:
                return found
    return None


BOOLEAN_KEYS = {"poll", "preload"}  # where yes/no/on/off may mean what YAML 1.1 reads


def _misread(loader: yaml.SafeLoader, node: yaml.Node, shown: str) -> list[tuple[tuple, ConfigProblem]]:
    """Plain scalars that YAML 1.1 reads as something other than what was written: `22:22` is the
    number 1342 (base 60), `0755` is 493 (octal), `on` and `yes` are true. Compose reads all of
    them as the strings they look like; devbox asks to quote them rather than guess."""
    out = []
    for path, item, _ in _nodes(loader, node):
        if not isinstance(item, yaml.ScalarNode) or item.style is not None:
            continue
        text, tag = item.value, item.tag.rsplit(":", 1)[-1]
        misread = (tag in ("int", "float") and ":" in text) or \
                  (tag == "int" and re.fullmatch(r"[-+]?0[0-9_]+", text) is not None) or \
                  (tag == "bool" and text.lower() not in ("true", "false") and not (path and path[-1] in BOOLEAN_KEYS))
        if misread:
            value = loader.construct_object(item)
            out.append((path, ConfigProblem(shown, item.start_mark.line + 1, item.start_mark.column + 1,
                                            f"{schema.dotted(path)}: {text} is read by YAML as {value!r}, "
                                            f"not as written: quote it (\"{text}\")")))
    return out


def _too_deep(value: Any, depth: int = 0) -> bool:
    """devbox.yaml is a few levels deep; far deeper means a recursive alias (`a: &x [*x]`)."""
    if depth > 20:
        return True
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return any(_too_deep(child, depth + 1) for child in children)


def _nodes(loader: yaml.SafeLoader, node: yaml.Node, path: tuple = (), key_node: yaml.Node | None = None,
           seen: frozenset = frozenset()):
    """Every node of the document with its key path (and the node of its key, in a mapping)."""
    yield path, node, key_node
    if id(node) in seen or len(path) > 50:  # aliases can make cycles
        return
    seen = seen | {id(node)}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            try:
                key = loader.construct_object(key_node, deep=True)
                hash(key)
            except Exception:
                continue
            yield from _nodes(loader, value_node, path + (key,), key_node, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _nodes(loader, item, path + (i,), None, seen)


def _walk(loader: yaml.SafeLoader, node: yaml.Node, shown: str) -> Positions:
    """Where each value (and each key, at path + ("<key>",)) sits in the file."""
    out: Positions = {}
    for path, item, key_node in _nodes(loader, node):
        out.setdefault(path, (shown, item.start_mark.line + 1, item.start_mark.column + 1))
        if key_node is not None:
            out.setdefault(path + ("<key>",), (shown, key_node.start_mark.line + 1, key_node.start_mark.column + 1))
    return out


# -- interpolation -------------------------------------------------------------------------------

_VAR = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-|:?\?)([^}]*))?\}|(\{[^}]*\}?))")


def read_env_file(path: Path, problems: list[tuple[int, str]] | None = None) -> dict[str, str]:
    """KEY=VALUE lines, `export` allowed, quotes stripped, # comments skipped (the Compose .env format).
    A line no process could take (no NAME, a NUL) is left out, and with `problems`, named there."""
    out: dict[str, str] = {}
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return out
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        key = key.removeprefix("export ").strip()
        if not schema.ENV_NAME.fullmatch(key) or "\0" in value:
            if problems is not None:
                problems.append((number, f"expected NAME=value with a NAME of letters, digits and _ (not starting "
                                         f"with a digit) and no NUL, got {line[:40]!r}: fix or remove the line"))
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        out[key] = value
    return out


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    """Expand ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?message}, ${VAR?message}; $$ is a literal $.

    Raises ValueError with the message to show when a required variable is missing or the syntax is bad.
    """

    def expand(m: re.Match) -> str:
        dollar, name, op, arg, bad = m.groups()
        if dollar:
            return "$"
        if bad is not None:
            raise ValueError(f"bad substitution '${bad}' (use ${{VAR}}, ${{VAR:-default}} or $$ for a literal $)")
        value = variables.get(name)
        empty = value is None or (op is not None and op.startswith(":") and value == "")
        if op in (":-", "-"):
            return arg if empty else value
        if op in (":?", "?"):
            if empty:
                raise ValueError(f"${{{name}}} is required: {arg or 'set it in the environment or .env'}")
            return value
        return value or ""

    return _VAR.sub(expand, text)


def _interpolate_tree(value: Any, path: tuple, variables: Mapping[str, str], positions: Positions,
                      problems: list[ConfigProblem], failed: set[tuple]) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate_tree(v, path + (k,), variables, positions, problems, failed) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate_tree(v, path + (i,), variables, positions, problems, failed) for i, v in enumerate(value)]
    if isinstance(value, str) and "$" in value:
        try:
            return interpolate(value, variables)
        except ValueError as e:
            file, line, col = positions.get(path, ("?", 0, 0))
            problems.append(ConfigProblem(file, line, col, f"{schema.dotted(path)}: {e}"))
            failed.add(path)
    return value


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
        data, where = _parse(file, shown, problems, misreads)
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
        data = _interpolate_tree(data, (), variables, where, problems, failed)
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
        problems.extend(_check_paths(checked, project_dir, positions, path.name))
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


def _check_paths(data: dict, project_dir: Path, positions: Positions, shown: str) -> list[ConfigProblem]:
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
        file = compose.get("file")
        if file and not (project_dir / file).is_file():
            f, line, col = positions.get(("compose", "file")) or (shown, 0, 0)
            out.append(ConfigProblem(f, line, col, f"compose.file: '{file}' does not exist"))
        elif not file and not any((project_dir / n).is_file() for n in COMPOSE_FILES):
            f, line, col = positions.get(("compose",)) or (shown, 0, 0)
            out.append(ConfigProblem(f, line, col, f"compose: no Compose file here ({', '.join(COMPOSE_FILES)}): "
                                                   "set compose.file"))
    for i, name in enumerate((data.get("watch") or {}).get("paths") or []):
        if not (project_dir / name).exists():
            file, line, col = positions.get(("watch", "paths", i)) or (shown, 0, 0)
            out.append(ConfigProblem(file, line, col, f"watch.paths: '{name}' does not exist"))
    return out


COMPOSE_FILES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")  # Compose's lookup


def _compose_file(compose: dict, project_dir: Path) -> Path:
    if compose.get("file"):
        return (project_dir / compose["file"]).resolve()
    found = next((project_dir / n for n in COMPOSE_FILES if (project_dir / n).is_file()), None)
    return found or project_dir / COMPOSE_FILES[0]  # checked in _check_paths


def _with_compose_service(merged: Any, project_dir: Path, positions: Positions, problems: list[ConfigProblem],
                          shown: str) -> Any:
    """`compose: {service: web}`: that service's build or image, env, ports, volumes, workdir and depends_on,
    as Compose resolves them, under devbox.yaml's own keys (devbox.yaml wins, key by key)."""
    compose = merged.get("compose") if isinstance(merged, dict) else None
    if not isinstance(compose, dict) or not isinstance(compose.get("service"), str):
        return merged
    from .compose import resolve_service
    from .errors import DevboxError

    file = _compose_file(compose, project_dir)
    where = positions.get(("compose", "service")) or (shown, 0, 0)
    if not file.is_file():
        return merged  # reported by _check_paths
    try:
        defaults = resolve_service(file, compose["service"])
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
        compose=None if compose is None else Compose(_compose_file(compose, project_dir),
                                                     tuple(compose.get("services", [])), compose.get("service")),
        preload=None if data.get("preload", "auto") == "auto" else bool(data["preload"]),
        entrypoint=None if "entrypoint" not in data else tuple(_argv(data["entrypoint"])),
    )


def _argv(value: str | list[str]) -> list[str]:
    """An entrypoint as Compose reads it: a list as is, a string split as a shell would (no shell runs)."""
    return list(value) if isinstance(value, list) else shlex.split(value)
