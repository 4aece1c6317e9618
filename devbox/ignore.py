"""Which paths devbox ignores: .gitignore syntax, read the way git reads it.

Patterns are relative to the folder of the file they come from: `*.log`
matches at any depth, `media/` matches a folder and all below it, `/build` and
`a/b` are anchored, `**` spans folders, `!` re-includes. The same `Pattern`
serves `watch.ignore` and `watch.rules[].match`.

Sources, lowest precedence first (the last match wins): the usual junk a dev
server writes, `.git/info/exclude`, the project's `.gitignore`, deeper
`.gitignore` files (a deeper file overrides a shallower one, as in git), and
`watch.ignore`.
"""

from __future__ import annotations

__all__ = ["Pattern", "IgnoreRules", "USUAL_JUNK", "unreadable_folders"]

import os
import re
from pathlib import Path
from typing import Iterable

import watchfiles

# On top of watchfiles' DefaultFilter (.git, __pycache__, node_modules, *.pyc, .swp/.swx, ~ and .# files,
# .DS_Store, ...): files a dev server writes into its own source tree, and the few editor files it lacks.
USUAL_JUNK = ("*.sqlite3", "*.sqlite3-journal", "*.db-journal", "*.log", ".coverage", "*.tmp", "\\#*#", "4913")
MAX_SCAN = 200_000  # folders looked at for nested .gitignore files


class Pattern:
    """One .gitignore-style pattern."""

    def __init__(self, text: str):
        self.text = text
        self.negated = text.startswith("!")
        body = text[1:] if self.negated else text
        self.dir_only = body.endswith("/")
        body = body.rstrip("/")
        self.anchored = "/" in body
        self.regex = re.compile(_glob_to_regex(body.lstrip("/")))

    def __repr__(self) -> str:
        return f"Pattern({self.text!r})"

    def matches(self, relative: str, is_dir: bool = False) -> bool:
        """True if `relative` (a / path) or one of its parent folders matches."""
        parts = relative.split("/")
        for i in range(1, len(parts) + 1):
            candidate_is_dir = i < len(parts) or is_dir
            if self.dir_only and not candidate_is_dir:
                continue
            candidate = "/".join(parts[:i]) if self.anchored else parts[i - 1]
            if self.regex.fullmatch(candidate):
                return True
        return False


def _glob_to_regex(glob: str) -> str:
    out, i = "", 0
    while i < len(glob):
        c = glob[i]
        if glob.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
            continue
        if glob.startswith("**", i):
            out += ".*"
            i += 2
            continue
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            end = glob.find("]", i + 1)
            if end == -1:
                out += re.escape(c)
            else:
                inner = glob[i + 1:end].replace("\\", "\\\\")
                out += "[" + ("^" + inner[1:] if inner.startswith("!") else inner) + "]"
                i = end
        elif c == "\\" and i + 1 < len(glob):
            out += re.escape(glob[i + 1])
            i += 1
        else:
            out += re.escape(c)
        i += 1
    return out


class IgnoreRules:
    """An ordered list of patterns, each relative to a base folder; the last match wins, as in git."""

    def __init__(self, patterns: Iterable[str], base: str = ""):
        self.rules: list[tuple[str, Pattern]] = []
        self.add(patterns, base)

    def add(self, patterns: Iterable[str], base: str = "") -> None:
        prefix = base.strip("/") + "/" if base.strip("/") else ""
        for p in patterns:
            if p.strip() and not p.lstrip().startswith("#"):
                self.rules.append((prefix, Pattern(p.rstrip())))

    @property
    def patterns(self) -> list[Pattern]:
        return [pattern for _, pattern in self.rules]

    @classmethod
    def for_project(cls, project_dir: Path, extra: Iterable[str] = ()) -> "IgnoreRules":
        rules = cls(USUAL_JUNK)
        rules.add(_lines(project_dir / ".git" / "info" / "exclude"))
        for folder in _gitignore_folders(project_dir, rules):
            rules.add(_lines(project_dir / folder / ".gitignore"), folder)
        rules.add(extra)
        return rules

    def __repr__(self) -> str:
        return f"IgnoreRules({[base + p.text for base, p in self.rules]!r})"

    def ignored(self, relative: str, is_dir: bool = False) -> bool:
        result = False
        for base, pattern in self.rules:
            if pattern.negated != result or (base and not relative.startswith(base)):
                continue
            if pattern.matches(relative[len(base):], is_dir):
                result = not pattern.negated
        return result


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()
    except OSError:
        return []


def _gitignore_folders(project_dir: Path, rules: IgnoreRules) -> list[str]:
    """Relative folders holding a .gitignore, shallowest first; folders ignored on the way are not entered."""
    pruning = IgnoreRules([])
    pruning.rules = list(rules.rules)
    found: list[str] = []
    for seen, (root, dirs, files) in enumerate(os.walk(project_dir)):
        relative = _relative(Path(root), project_dir) or ""
        if ".gitignore" in files:
            found.append(relative)
            pruning.add(_lines(Path(root) / ".gitignore"), relative)
        dirs[:] = [d for d in dirs if d not in watchfiles.DefaultFilter.ignore_dirs
                   and not pruning.ignored(_join(relative, d), True)]
        if seen > MAX_SCAN:
            break
    return sorted(found, key=lambda f: (f.count("/") + bool(f), f))


def _relative(path: Path, project_dir: Path) -> str | None:
    try:
        text = path.relative_to(project_dir).as_posix()
    except ValueError:
        return None
    return "" if text == "." else text


def _join(relative: str, name: str) -> str:
    return f"{relative}/{name}" if relative else name


def unreadable_folders(paths: Iterable[Path], rules: IgnoreRules, project_dir: Path,
                       limit: int = 20) -> tuple[list[str], int]:
    """Folders under `paths` that cannot be listed (ignored ones aside), and how many folders there are."""
    bad: list[str] = []
    count = 0

    def failed(error: OSError) -> None:
        if isinstance(error, PermissionError) and len(bad) < limit and error.filename:
            bad.append(str(error.filename))

    for top in paths:
        for root, dirs, _ in os.walk(top, onerror=failed):
            count += 1
            relative = _relative(Path(root), project_dir)
            dirs[:] = [d for d in dirs if d not in watchfiles.DefaultFilter.ignore_dirs
                       and (relative is None or not rules.ignored(_join(relative, d), True))]
    return bad, count
