"""Watch the project on the host: which changes count (ignore rules), and what each change asks for (rules).

Patterns use .gitignore syntax, relative to the project folder: `*.log` matches
at any depth, `media/` matches a folder and all below it, `/build` and `a/b`
are anchored, `**` spans folders, `!` re-includes. The same patterns serve
`watch.ignore` and `watch.rules[].match`.
"""

from __future__ import annotations

__all__ = ["Pattern", "IgnoreRules", "ChangeFilter", "Watcher", "plan", "Plan", "USUAL_JUNK", "forget_bytecode"]

import os
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import watchfiles
from watchfiles._rust_notify import RustNotify  # the documented low-level watcher under watchfiles.watch

from .config import Rule

FAST_QUIET_MS = 10  # quiet time before a small batch (an editor save) is handed over; 5 ms costs 1.2 % idle CPU
SMALL_BATCH = 4  # paths: a save may touch the file, a backup and a temp file; more than that is a burst
TRACE = os.environ.get("DEVBOX_TRACE") == "1"

# On top of watchfiles' DefaultFilter (.git, __pycache__, node_modules, *.pyc, .swp/.swx, ~ and .# files,
# .DS_Store, ...): files a dev server writes into its own source tree, and the few editor files it lacks.
USUAL_JUNK = ("*.sqlite3", "*.sqlite3-journal", "*.db-journal", "*.log", ".coverage", "*.tmp", "\\#*#", "4913")


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
    """An ordered list of patterns where the last match wins, as in .gitignore."""

    def __init__(self, patterns: Iterable[str]):
        self.patterns = [Pattern(p) for p in patterns if p.strip() and not p.lstrip().startswith("#")]

    @classmethod
    def for_project(cls, project_dir: Path, extra: Iterable[str] = ()) -> "IgnoreRules":
        lines: list[str] = list(USUAL_JUNK)
        gitignore = project_dir / ".gitignore"
        if gitignore.is_file():
            lines += [line.rstrip("\n").rstrip() for line in gitignore.read_text(errors="replace").splitlines()]
        lines += list(extra)
        return cls(lines)

    def __repr__(self) -> str:
        return f"IgnoreRules({[p.text for p in self.patterns]!r})"

    def ignored(self, relative: str, is_dir: bool = False) -> bool:
        result = False
        for pattern in self.patterns:
            if pattern.negated == result and pattern.matches(relative, is_dir):
                result = not pattern.negated
        return result


class ChangeFilter(watchfiles.DefaultFilter):
    """watchfiles' defaults plus the project's ignore rules."""

    def __init__(self, project_dir: Path, rules: IgnoreRules):
        super().__init__()
        self.project_dir, self.rules = project_dir, rules

    def folder_ignored(self, path: str) -> bool:
        if not super().__call__(watchfiles.Change.added, path):
            return True
        try:
            return self.rules.ignored(Path(path).relative_to(self.project_dir).as_posix(), True)
        except ValueError:
            return False

    def __call__(self, change: watchfiles.Change, path: str) -> bool:
        if not super().__call__(change, path):
            return False
        is_dir = Path(path).is_dir()
        if change == watchfiles.Change.added and is_dir:
            return False  # a new folder changes nothing by itself; the files put in it are reported
        try:
            relative = Path(path).relative_to(self.project_dir).as_posix()
        except ValueError:
            return True  # a watch path outside the project: only the defaults apply
        return not self.rules.ignored(relative, is_dir)


@dataclass
class Plan:
    """What one batch of changes asks for."""

    restart: bool = False
    setup: bool = False
    rebuild: bool = False
    exec: list = field(default_factory=list)
    reason: str = ""


def plan(changed: Iterable[str], rules: Iterable[Rule]) -> Plan:
    """Decide per file (first matching rule wins; unmatched restarts), then take the strongest action."""
    compiled = [([Pattern(m) for m in rule.match], rule) for rule in rules]
    result = Plan()
    triggers: list[str] = []
    for path in sorted(changed):
        action, command = "restart", None
        for patterns, rule in compiled:
            if any(p.matches(path) for p in patterns):
                action, command = rule.action, rule.exec
                break
        if action == "none":
            continue
        triggers.append(path)
        if action == "exec":
            if command not in result.exec:
                result.exec.append(command)
        else:
            setattr(result, action, True)
    if result.rebuild or result.setup:
        result.restart = True
    if triggers:
        more = f" and {len(triggers) - 1} more" if len(triggers) > 1 else ""
        result.reason = f"{triggers[0]}{more} changed"
    return result


def forget_bytecode(project_dir: Path, changed: Iterable[str]) -> None:
    """Delete the cached bytecode of changed .py files.

    Python trusts a .pyc whose recorded source mtime (whole seconds) and size match, so two
    same-size saves within one second would serve the old code. Cheaper to delete a file than
    to turn bytecode caching off for the whole project.
    """
    for relative in changed:
        if not relative.endswith(".py"):
            continue
        source = project_dir / relative
        for cached in (source.parent / "__pycache__").glob(f"{source.stem}.*.pyc"):
            try:
                cached.unlink()
            except OSError:
                pass  # written by another user in the container: Python will still check mtime and size


def _files_in(folder: str, limit: int = 10_000) -> set[tuple[watchfiles.Change, str]]:
    """The files in a new folder, as additions: inotify only watches a new folder once it is seen,
    so files written into it right after `mkdir` (a checkout, an unpacked archive) send no event."""
    found: set[tuple[watchfiles.Change, str]] = set()
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d not in watchfiles.DefaultFilter.ignore_dirs]
        found.update((watchfiles.Change.added, os.path.join(root, f)) for f in files)
        if len(found) >= limit:
            break
    return found


class Watcher:
    """A thread that hands each settled batch of changes (relative paths, when seen) to `on_change`."""

    def __init__(self, paths: Iterable[Path], project_dir: Path, ignore: IgnoreRules, debounce_ms: int,
                 on_change: Callable[[set[str], float], None]):
        self.paths = [str(p) for p in paths]
        self.project_dir = project_dir
        self.filter = ChangeFilter(project_dir, ignore)
        self.debounce_ms = debounce_ms
        self.on_change = on_change
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="devbox-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def _relative(self, path: str) -> str:
        try:
            return Path(path).relative_to(self.project_dir).as_posix()
        except ValueError:
            return path

    def _run(self) -> None:
        """Hand over a save at once, a burst only once it has settled.

        An editor's save is one to a few paths, written within a millisecond: waiting the whole
        quiet period for it would only add latency to every reload. So a batch is first handed
        over after FAST_QUIET_MS of quiet if it is small; a bigger one (a `git checkout`, a
        formatter run over the tree) is held until `debounce_ms` pass with no new change, so it
        gives one restart, not several.
        """
        fast = min(FAST_QUIET_MS, max(1, self.debounce_ms))
        cap = max(1600, self.debounce_ms * 4)  # the longest a never-quiet stream of changes is held
        with RustNotify(self.paths, False, False, 300, True, False) as notify:
            while not self._stop.is_set():
                batch = self._wait(notify, cap, fast, 0)
                if batch is None:
                    return
                while len(batch) > SMALL_BATCH and self.debounce_ms > fast:
                    more = self._wait(notify, cap, self.debounce_ms, self.debounce_ms)
                    if more is None:
                        return
                    if not more:
                        break  # debounce_ms of quiet: the burst is over
                    batch |= more
                if batch:
                    self._hand_over(batch)

    def _wait(self, notify: RustNotify, cap: int, quiet: int, timeout: int) -> set[str] | None:
        """The next settled set of changes that pass the filter (empty on timeout); None when stopping."""
        raw = notify.watch(cap, quiet, timeout, self._stop)
        if raw == "stop" or self._stop.is_set():
            return None
        if raw in ("timeout", "signal"):
            return set()
        changes = {(watchfiles.Change(change), path) for change, path in raw}
        added = {path for change, path in changes if change == watchfiles.Change.added}
        deleted = {path for change, path in changes if change == watchfiles.Change.deleted}
        # made and gone within one batch: an editor's or sed's temp file, renamed over the real one
        transient = {path for path in added & deleted if not os.path.lexists(path)}
        changes = {(change, path) for change, path in changes if path not in transient}
        for change, path in list(changes):
            if change == watchfiles.Change.added and os.path.isdir(path) and not self.filter.folder_ignored(path):
                changes |= _files_in(path)
        return {path for change, path in changes if self.filter(change, path)}

    def _hand_over(self, batch: set[str]) -> None:
        seen = time.monotonic()
        if TRACE:
            newest = max((os.stat(p).st_mtime for p in batch if os.path.exists(p)), default=time.time())
            print(f"devbox: trace: batch of {len(batch)} handed over {1000 * (time.time() - newest):.1f}ms "
                  f"after the newest mtime: {sorted(self._relative(p) for p in batch)[:5]}", file=sys.stderr, flush=True)
        self.on_change({self._relative(path) for path in batch}, seen)
