"""Variables: `${VAR}` interpolation (Compose's forms) and `.env`-style files."""

from __future__ import annotations

__all__ = ["read_env_file", "interpolate", "interpolate_tree"]

import re
from pathlib import Path
from typing import Any, Mapping

from .. import schema
from ..errors import ConfigProblem
from .yamlpos import Positions

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


def interpolate_tree(value: Any, path: tuple, variables: Mapping[str, str], positions: Positions,
                      problems: list[ConfigProblem], failed: set[tuple]) -> Any:
    if isinstance(value, dict):
        return {k: interpolate_tree(v, path + (k,), variables, positions, problems, failed) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate_tree(v, path + (i,), variables, positions, problems, failed) for i, v in enumerate(value)]
    if isinstance(value, str) and "$" in value:
        try:
            return interpolate(value, variables)
        except ValueError as e:
            file, line, col = positions.get(path, ("?", 0, 0))
            problems.append(ConfigProblem(file, line, col, f"{schema.dotted(path)}: {e}"))
            failed.add(path)
    return value


