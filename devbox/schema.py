"""The shape of devbox.yaml, written once: the loader validates with it and `devbox schema` prints it.

Each node type checks a plain value (already parsed from YAML and interpolated)
and reports problems by key path, and describes itself as JSON Schema, so the
schema editors see and the checks the loader makes cannot drift apart.
"""

from __future__ import annotations

__all__ = ["Problem", "Report", "SCHEMA", "json_schema", "SIGNALS", "parse_port", "parse_mount"]

import difflib
import ipaddress
import math
import re
import shlex
import signal
from re import _constants as re_constants, _parser as re_parser  # (sre_parse, without its warning)
from dataclasses import dataclass, field
from typing import Any, Callable

Path = tuple[str | int, ...]
SIGNALS = sorted(s.name for s in signal.Signals if not s.name.startswith("SIG_") and s.name.startswith("SIG"))


@dataclass
class Problem:
    path: Path
    message: str
    at_key: bool = False  # point at the key rather than its value (unknown keys)


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)

    def add(self, path: Path, message: str, at_key: bool = False) -> None:
        self.problems.append(Problem(path, message, at_key))


def dotted(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "(top level)"


def describe(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "...'"


class Node:
    """One value's expected shape. `check` returns the value to keep (possibly normalised)."""

    expected = "a value"

    def check(self, value: Any, path: Path, report: Report) -> Any:
        raise NotImplementedError

    def schema(self) -> dict[str, Any]:
        raise NotImplementedError

    def fail(self, value: Any, path: Path, report: Report, expected: str | None = None) -> None:
        report.add(path, f"{dotted(path)}: expected {expected or self.expected}, got {describe(value)}")


class Str(Node):
    def __init__(self, expected: str = "a string", pattern: str | None = None, parse: Callable[[str], Any] | None = None,
                 description: str = ""):
        self.expected, self.pattern, self.parse, self.description = expected, pattern, parse, description

    def check(self, value, path, report):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and self.parse is None:
            value = str(value)  # `tag: 3.12` means the string "3.12", as Compose reads it
        if not isinstance(value, str) or (self.pattern and not re.fullmatch(self.pattern, value)):
            return self.fail(value, path, report)
        if self.parse:
            try:
                self.parse(value)
            except ValueError as e:
                return self.fail(value, path, report, f"{self.expected} ({e})")
        return value

    def schema(self):
        out: dict[str, Any] = {"type": "string"}
        if self.pattern:
            out["pattern"] = f"^(?:{self.pattern})$"
        return out


class Int(Node):
    def __init__(self, minimum: int = 0, maximum: int | None = None, number: bool = False):
        self.minimum, self.maximum, self.number = minimum, maximum, number
        kind = "a number" if number else "an integer"
        self.expected = f"{kind} >= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")

    def check(self, value, path, report):
        ok_types = (int, float) if self.number else (int,)
        if isinstance(value, str) and re.fullmatch(r"\d+(\.\d+)?", value.strip()):
            value = float(value) if "." in value else int(value)  # "${PORT:-8000}" interpolates to a string
        if isinstance(value, bool) or not isinstance(value, ok_types) or not math.isfinite(value):
            return self.fail(value, path, report)
        if value < self.minimum or (self.maximum is not None and value > self.maximum):
            return self.fail(value, path, report)
        return value

    def schema(self):
        out: dict[str, Any] = {"type": "number" if self.number else "integer", "minimum": self.minimum}
        if self.maximum is not None:
            out["maximum"] = self.maximum
        return out


class Enum(Node):
    def __init__(self, *values: str):
        self.values = values
        self.expected = "one of " + ", ".join(values)

    def check(self, value, path, report):
        if value not in self.values:
            hint = difflib.get_close_matches(str(value), self.values, 1)
            suffix = f" (did you mean '{hint[0]}'?)" if hint else ""
            report.add(path, f"{dotted(path)}: expected {self.expected}, got {describe(value)}{suffix}")
            return None
        return value

    def schema(self):
        return {"enum": list(self.values)}


class Bool(Node):
    expected = "true or false"

    def check(self, value, path, report):
        if not isinstance(value, bool):
            return self.fail(value, path, report)
        return value

    def schema(self):
        return {"type": "boolean"}


class List(Node):
    def __init__(self, item: Node, allow_single: bool = False, non_empty: bool = False, expected: str = ""):
        self.item, self.allow_single, self.non_empty = item, allow_single, non_empty
        self.expected = expected or (f"a list of {item.expected}" if not allow_single else
                                     f"{item.expected} or a list of them")

    def check(self, value, path, report):
        if self.allow_single and not isinstance(value, list):
            value = [value]
        if not isinstance(value, list) or (self.non_empty and not value):
            return self.fail(value, path, report)
        return [self.item.check(v, path + (i,), report) for i, v in enumerate(value)]

    def schema(self):
        out = {"type": "array", "items": self.item.schema()} | ({"minItems": 1} if self.non_empty else {})
        return {"anyOf": [self.item.schema(), out]} if self.allow_single else out


class Either(Node):
    """The first alternative whose outer type matches decides (a string or a list, say)."""

    def __init__(self, expected: str, *options: tuple[type, Node]):
        self.expected, self.options = expected, options

    def check(self, value, path, report):
        for kind, node in self.options:
            if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
                return node.check(value, path, report)
        return self.fail(value, path, report)

    def schema(self):
        return {"anyOf": [node.schema() for _, node in self.options]}


ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Env(Node):
    """NAME: value pairs; numbers and booleans become strings, as Compose does."""

    expected = "a mapping of NAME: value"

    def check(self, value, path, report):
        if isinstance(value, list):  # Compose also allows ["NAME=value", ...]
            pairs = {}
            for i, item in enumerate(value):
                if not isinstance(item, str) or "=" not in item or not ENV_NAME.fullmatch(item.split("=", 1)[0]) \
                        or "\0" in item:
                    self.fail(item, path + (i,), report, "NAME=value (a NAME of letters, digits and _, not "
                                                         "starting with a digit; no NUL)")
                else:
                    k, v = item.split("=", 1)
                    pairs[k] = v
            return pairs
        if not isinstance(value, dict):
            return self.fail(value, path, report)
        out = {}
        for k, v in value.items():
            if not ENV_NAME.fullmatch(str(k)):
                report.add(path + (k,), f"{dotted(path + (k,))}: expected an environment variable name, got {describe(k)}", at_key=True)
            elif isinstance(v, (dict, list)) or (isinstance(v, str) and "\0" in v):
                self.fail(v, path + (k,), report, "a string, number or boolean (no NUL)")
            else:
                out[str(k)] = "" if v is None else (("true" if v else "false") if isinstance(v, bool) else str(v))
        return out

    def schema(self):
        scalar = {"type": ["string", "number", "boolean", "null"]}
        return {"anyOf": [{"type": "object", "additionalProperties": scalar},
                          {"type": "array", "items": {"type": "string", "pattern": "^[^=]+=.*$"}}]}


class Map(Node):
    """A mapping with known keys; unknown keys are errors with a suggestion."""

    expected = "a mapping"

    def __init__(self, fields: dict[str, Node], required: tuple[str, ...] = (), one_of: tuple[str, ...] = (),
                 description: str = ""):
        self.fields, self.required, self.one_of, self.description = fields, required, one_of, description

    def check(self, value, path, report):
        if not isinstance(value, dict):
            return self.fail(value, path, report)
        out = {}
        for key, item in value.items():
            node = self.fields.get(key) if isinstance(key, str) else None
            if node is None:
                hint = difflib.get_close_matches(str(key), list(self.fields), 1, 0.6)
                where = f" in {dotted(path)}" if path else ""
                suffix = f" (did you mean '{hint[0]}'?)" if hint else f" (expected one of: {', '.join(self.fields)})"
                report.add(path + (key,), f"unknown key '{key}'{where}{suffix}", at_key=True)
                continue
            out[key] = node.check(item, path + (key,), report)
        prefix = f"{dotted(path)}: " if path else ""
        for key in self.required:
            if key not in value:
                report.add(path, f"{prefix}missing required key '{key}'")
        if self.one_of and sum(k in value for k in self.one_of) != 1:
            names = " or ".join(f"'{k}'" for k in self.one_of)
            found = [k for k in self.one_of if k in value]
            report.add(path + ((found[-1],) if len(found) > 1 else ()),
                       f"{prefix}expected exactly one of {names}, got {'both' if found else 'neither'}",
                       at_key=bool(found))
        return out

    def schema(self):
        out: dict[str, Any] = {
            "type": "object",
            "properties": {k: v.schema() for k, v in self.fields.items()},
            "additionalProperties": False,
        }
        if self.required:
            out["required"] = list(self.required)
        if self.one_of:
            out["oneOf"] = [{"required": [k]} for k in self.one_of]
        if self.description:
            out["description"] = self.description
        return out


# -- value parsers shared with config.py ---------------------------------------------------------

def parse_port(text: str) -> tuple[str, int, int, str]:
    """'[ADDR:]HOST:CONTAINER[/proto]' or 'CONTAINER' -> (addr, host, container, proto); addr defaults to 127.0.0.1."""
    proto = "tcp"
    if "/" in text:
        text, proto = text.rsplit("/", 1)
        if proto not in ("tcp", "udp"):
            raise ValueError(f"protocol must be tcp or udp, not '{proto}'")
    parts = text.rsplit(":", 2)
    if len(parts) == 1:
        parts = [parts[0], parts[0]]
    if len(parts) == 2:
        parts = ["127.0.0.1", *parts]
    addr, host, container = parts
    addr = addr.strip("[]")
    numbers = []
    for p in (host, container):
        if not p.isdigit() or not 1 <= int(p) <= 65535:
            raise ValueError(f"port '{p}' is not a number from 1 to 65535")
        numbers.append(int(p))
    if addr == "localhost":
        addr = "127.0.0.1"  # Docker binds IP addresses only
    try:
        ipaddress.ip_address(addr)
    except ValueError:
        raise ValueError(f"address '{addr}' is not an IP address") from None
    return addr, numbers[0], numbers[1], proto


def parse_mount(text: str) -> tuple[str, str, bool]:
    """'HOST:CONTAINER[:ro|:rw]' -> (host, container, read_only)."""
    parts = text.split(":")
    mode = "rw"
    if len(parts) == 3:
        mode = parts.pop()
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise ValueError("a host path and a container path, separated by ':'")
    if mode not in ("ro", "rw"):
        raise ValueError(f"mode must be ro or rw, not '{mode}'")
    if not parts[1].startswith("/"):
        raise ValueError(f"container path '{parts[1]}' must be absolute")
    return parts[0], parts[1], mode == "ro"


def parse_volume(text: str) -> tuple[str, str]:
    parts = text.split(":")
    if len(parts) not in (2, 3) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", parts[0]) or not parts[1].startswith("/"):
        raise ValueError("form is NAME:/container/path")
    return parts[0], parts[1]


def parse_signal(text: str) -> str:
    name = text.upper()
    name = name if name.startswith("SIG") else "SIG" + name
    if name not in SIGNALS:
        raise ValueError("not a signal name; try SIGTERM, SIGINT or SIGQUIT")
    return name


def parse_regex(text: str) -> None:
    """A pattern devbox can match on every line without hanging: no repetition inside a repetition
    (`(a+)+`, `(a|aa)*`), which can backtrack for ever on a line that almost matches."""
    try:
        re.compile(text)
        parsed = re_parser.parse(text)
    except re.error as e:
        raise ValueError(f"not a regular expression: {e}") from None
    if _nested_repeat(parsed, False):
        raise ValueError("a repetition inside a repetition, like (a+)+, can take for ever on some lines: "
                         "write it without the inner repeat") from None


def _nested_repeat(items, inside: bool) -> bool:
    """Whether an unbounded repeat (or overlapping alternatives) sits inside an unbounded repeat."""
    for op, arg in items:
        if op in (re_constants.MAX_REPEAT, re_constants.MIN_REPEAT):
            low, high, sub = arg
            unbounded = high == re_constants.MAXREPEAT or high > 100
            if unbounded and inside:
                return True
            if _nested_repeat(sub, inside or unbounded):
                return True
        elif op == re_constants.SUBPATTERN:
            if _nested_repeat(arg[-1], inside):
                return True
        elif op == re_constants.BRANCH:
            if inside and len(arg[1]) > 1:
                return True  # (a|aa)*: alternatives that may overlap, under a repeat
            if any(_nested_repeat(b, inside) for b in arg[1]):
                return True
        elif op in (re_constants.ASSERT, re_constants.ASSERT_NOT):
            if _nested_repeat(arg[1], inside):
                return True
    return False


STRINGS = List(Str(), allow_single=True)
COMMAND = Either("a command string or a list of strings", (str, Str("a command that is not empty", r"(?s).*\S.*")),
                 (list, List(Str(), non_empty=True, expected="a non-empty list of strings")))
ACTION = Either(
    "one of restart, setup, rebuild, none, or {exec: COMMAND}",
    (str, Enum("restart", "setup", "rebuild", "none")),
    (dict, Map({"exec": COMMAND}, required=("exec",))),
)

SCHEMA = Map(
    {
        "name": Str("a project name of up to 63 letters, digits, '-', '_', '.'", r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}"),
        "image": Str("an image name"),
        "build": Either(
            "a build context path or a mapping",
            (str, Str()),
            (dict, Map({"context": Str(), "dockerfile": Str(), "args": Env(), "target": Str()})),
        ),
        "workdir": Str("an absolute container path", r"/.*"),
        "mounts": List(Str("HOST:CONTAINER[:ro]", parse=parse_mount)),
        "volumes": List(Str("NAME:/container/path", parse=parse_volume)),
        "env": Env(),
        "env_file": STRINGS,
        "ports": List(Either("[ADDR:]HOST:CONTAINER", (str, Str("[ADDR:]HOST:CONTAINER", parse=parse_port)),
                             (int, Int(1, 65535)))),
        "setup": List(COMMAND, allow_single=True),
        "command": COMMAND,
        "entrypoint": Either("a command string or a list of strings (`[]`: none)",
                             (str, Str("words a shell could split", parse=shlex.split)), (list, List(Str()))),
        "stop_signal": Str("a signal name like SIGTERM", parse=parse_signal),
        "stop_timeout": Int(0, 3600, number=True),
        "preload": Either("auto, true or false", (str, Enum("auto")), (bool, Bool())),
        "sync": Either("auto, true, false, or {when: auto/true/false, max_file_mb: N}", (str, Enum("auto")),
                       (bool, Bool()),
                       (dict, Map({"when": Either("auto, true or false", (str, Enum("auto")), (bool, Bool())),
                                   "max_file_mb": Int(0, 1_000_000)}))),
        "debugger": Either("true, false or {port: 5678, wait: false}", (bool, Bool()),
                           (dict, Map({"port": Int(1, 65535), "wait": Bool()}))),
        "browser": Either("true, false or {reload: true, hold: true}", (bool, Bool()),
                          (dict, Map({"reload": Bool(), "hold": Bool()}))),
        "ready": Map(
            {
                "http": Str("a URL path starting with /", r"/.*"),
                "tcp": Int(1, 65535),
                "log": Str("a regular expression", parse=parse_regex),
                "timeout": Int(0, 86400, number=True),
            }
        ),
        "watch": Map(
            {
                "paths": STRINGS,
                "ignore": STRINGS,
                "debounce_ms": Int(0, 60_000),
                "poll": Either("auto, true or false", (str, Enum("auto")), (bool, Bool())),
                "rules": List(Map({"match": STRINGS, "action": ACTION}, required=("match", "action"))),
            }
        ),
        "compose": Map({"file": List(Str("a Compose file"), allow_single=True), "services": List(Str()),
                        "service": Str("a Compose service name"), "completed": List(Str())}),
    },
    required=("command",),
    one_of=("image", "build"),
    description="devbox.yaml: how to run a project's dev server in a container and reload it on save",
)


def json_schema() -> dict[str, Any]:
    out = {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "devbox.yaml"}
    out.update(SCHEMA.schema())
    return out
