"""Watch the project on the host: which changes count, what each asks for (rules), and the watcher thread.

The watcher drives watchfiles' `RustNotify` directly (the documented
low-level watcher under `watchfiles.watch`) so that an editor's save is acted
on after 10 ms of quiet while a burst is still held for `debounce_ms`. It takes
its settings the way `watchfiles.watch` does: `WATCHFILES_FORCE_POLLING`,
`WATCHFILES_POLL_DELAY_MS`, polling on WSL, plus `watch.poll` and polling on
network file systems where native events do not arrive.

Nothing here dies silently: an unreadable folder is skipped with a warning,
the inotify limit is named with its sysctl (and polling takes over), a watched
folder that disappears is watched again when it comes back, and anything else
ends `up` with one line.
"""

from __future__ import annotations

__all__ = ["ChangeFilter", "Watcher", "plan", "Plan", "forget_bytecode", "WatchSettings", "watch_settings"]

import os
import platform
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import watchfiles
from watchfiles._rust_notify import RustNotify  # the documented low-level watcher under watchfiles.watch

from .config import Rule, RuleAction
from .ignore import IgnoreRules, Pattern, unreadable_folders
from .output import quoted

FAST_QUIET_MS = 10  # quiet time before a small batch (an editor save) is handed over; 5 ms costs 1.2 % idle CPU
SMALL_BATCH = 4  # paths: a save may touch the file, a backup and a temp file; more than that is a burst
NOISE_WINDOW_MS = 30  # longest one wait lasts while ignored files keep changing (a log, a SQLite journal)
TRACE = os.environ.get("DEVBOX_TRACE") == "1"
NETWORK_FILE_SYSTEMS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "drvfs", "fuse.sshfs", "afs", "glusterfs",
                        "ceph", "fuse.rclone", "vboxsf", "prl_fs"}


class ChangeFilter(watchfiles.DefaultFilter):
    """watchfiles' defaults plus the project's ignore rules; the config files devbox reads always count."""

    def __init__(self, project_dir: Path, rules: IgnoreRules, always: Iterable[str] = ()):
        super().__init__()
        self.project_dir, self.rules, self.always = project_dir, rules, set(always)

    def folder_ignored(self, path: str) -> bool:
        if not super().__call__(watchfiles.Change.added, path):
            return True
        try:
            return self.rules.ignored(Path(path).relative_to(self.project_dir).as_posix(), True)
        except ValueError:
            return False

    def __call__(self, change: watchfiles.Change, path: str) -> bool:
        try:
            relative: str | None = Path(path).relative_to(self.project_dir).as_posix()
        except ValueError:
            relative = None  # a watch path outside the project: only the defaults apply
        if relative in self.always:
            return True
        if not super().__call__(change, path):
            return False
        is_dir = Path(path).is_dir()
        if change == watchfiles.Change.added and is_dir:
            return False  # a new folder changes nothing by itself; the files put in it are reported
        return relative is None or not self.rules.ignored(relative, is_dir)


@dataclass
class Plan:
    """What one batch of changes asks for."""

    restart: bool = False
    setup: bool = False
    rebuild: bool = False
    exec: list = field(default_factory=list)
    reason: str = ""
    untouched: list = field(default_factory=list)  # matched by `action: none`: the server picks them up


def plan(changed: Iterable[str], rules: Iterable[Rule]) -> Plan:
    """Decide per file (first matching rule wins; unmatched restarts), then take the strongest action."""
    compiled = [([Pattern(m) for m in rule.match], rule) for rule in rules]
    result = Plan()
    triggers: list[str] = []
    for path in sorted(changed):
        action, command = RuleAction.RESTART, None
        for patterns, rule in compiled:
            if any(p.matches(path) for p in patterns):
                action, command = rule.action, rule.exec
                break
        if action is RuleAction.NONE:
            result.untouched.append(path)
            continue
        triggers.append(path)
        if action is RuleAction.EXEC:
            if command not in result.exec:
                result.exec.append(command)
        elif action is RuleAction.SETUP:
            result.setup = True
        elif action is RuleAction.REBUILD:
            result.rebuild = True
        else:
            result.restart = True
    if result.rebuild or result.setup:
        result.restart = True
    if triggers:
        more = f" and {len(triggers) - 1} more" if len(triggers) > 1 else ""
        result.reason = f"{quoted(triggers[0])}{more} changed"
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


@dataclass(frozen=True)
class WatchSettings:
    force_polling: bool
    poll_delay_ms: int
    why: str = ""  # why polling, for the line that says so


def watch_settings(paths: Iterable[Path], poll: bool | None) -> WatchSettings:
    """Polling or native events, resolved as `watchfiles.watch` resolves them, plus network file systems."""
    delay_text = os.environ.get("WATCHFILES_POLL_DELAY_MS", "")
    delay = int(delay_text) if delay_text.isdecimal() else 300
    if poll is not None:
        return WatchSettings(poll, delay, "watch.poll is true" if poll else "")
    forced = os.environ.get("WATCHFILES_FORCE_POLLING")
    if forced:
        on = forced.lower() not in {"false", "disable", "disabled"}
        return WatchSettings(on, delay, "WATCHFILES_FORCE_POLLING is set" if on else "")
    uname = platform.uname()
    if "microsoft-standard" in uname.release.lower() and uname.system.lower() == "linux":
        return WatchSettings(True, delay, "WSL, where file events often do not arrive")
    for path in paths:
        kind = _file_system(path)
        if kind in NETWORK_FILE_SYSTEMS:
            return WatchSettings(True, delay, f"{path} is on {kind}, where file events do not arrive")
    return WatchSettings(False, delay)


def _file_system(path: Path) -> str:
    """The type of the file system that holds `path` (from /proc/mounts; '' if unknown)."""
    best, kind = "", ""
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3:
                    mount = parts[1].replace("\\040", " ")
                    if str(path).startswith(mount.rstrip("/") + "/") or str(path) == mount:
                        if len(mount) >= len(best):
                            best, kind = mount, parts[2]
    except OSError:
        pass
    return kind


def inotify_limit() -> int | None:
    """The number of inotify watches this user may have (the lower of the host's and the user namespace's)."""
    limits = []
    for path in ("/proc/sys/fs/inotify/max_user_watches", "/proc/sys/user/max_inotify_watches"):
        try:
            limits.append(int(Path(path).read_text()))
        except (OSError, ValueError):
            pass
    return min(limits) if limits else None


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
    """A thread that hands each settled batch of changes (relative paths, when seen) to `on_change`.

    `on_warning` gets lines worth saying that change nothing (a folder skipped, polling); `on_failure`
    gets the one line that ends `up` (the thread then ends)."""

    def __init__(self, paths: Iterable[Path], project_dir: Path, ignore: Iterable[str], debounce_ms: int,
                 on_change: Callable[[set[str], float], None], poll: bool | None = None,
                 always: Iterable[str] = (), on_warning: Callable[[str], None] = lambda line: None,
                 on_failure: Callable[[str], None] = lambda line: None):
        self.roots = [Path(p) for p in paths]
        self.project_dir = project_dir
        self.extra_ignore = list(ignore)
        self.always = set(always)
        self.debounce_ms = debounce_ms
        self.poll = poll
        self.on_change, self.on_warning, self.on_failure = on_change, on_warning, on_failure
        self.filter = ChangeFilter(project_dir, IgnoreRules([]), self.always)
        self.ready = threading.Event()  # set once the watch is in place (tests wait for it)
        self._undecodable_said = False  # a file name that is not UTF-8 was reported
        self._say_when_watching = ""
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

    def _paths(self) -> list[str]:
        """The folders to watch, plus the config files when the project folder itself is not watched."""
        paths = [str(p) for p in self.roots]
        if not any(self.project_dir == r or self.project_dir.is_relative_to(r) for r in self.roots):
            paths += [str(self.project_dir / f) for f in sorted(self.always) if (self.project_dir / f).exists()]
        return paths

    def _run(self) -> None:
        try:
            self._watch()
        except Exception as e:  # never a thread traceback, never a silent stop
            self.on_failure(f"the file watcher stopped ({type(e).__name__}: {e}); "
                            "no more reloads, so `up` ends: run it again, or with --debug")

    def _watch(self) -> None:
        settings = watch_settings(self.roots, self.poll)
        if settings.force_polling:
            self.on_warning(f"watching by polling every {settings.poll_delay_ms} ms ({settings.why})")
        while not self._stop.is_set():
            missing = [r for r in self.roots if not r.exists()]
            if missing:
                self.on_warning(f"watched folder {self._relative(str(missing[0]))} does not exist; "
                                "watching it again when it is back")
                while any(not r.exists() for r in self.roots):
                    if self._stop.wait(0.2):
                        return
                self._hand_over({str(missing[0])})
            notify = self._open(settings)
            # the rules are read after the watch is in place, so nothing changed meanwhile is missed
            self.filter = ChangeFilter(self.project_dir, IgnoreRules.for_project(self.project_dir, self.extra_ignore),
                                       self.always)
            self.ready.set()
            if self._say_when_watching:  # said once the new watch is in place: an edit after it is seen
                self.on_warning(self._say_when_watching)
                self._say_when_watching = ""
            with notify:
                if self._serve(notify) == "stop":
                    return

    def _open(self, settings: WatchSettings) -> RustNotify:
        def make(force_polling: bool, ignore_permission_denied: bool) -> RustNotify:
            return RustNotify(self._paths(), False, force_polling, settings.poll_delay_ms, True,
                              ignore_permission_denied)

        try:
            return make(settings.force_polling, False)
        except PermissionError:
            rules = IgnoreRules.for_project(self.project_dir, self.extra_ignore)
            bad, _ = unreadable_folders(self.roots, rules, self.project_dir)
            for folder in bad:
                self.on_warning(f"cannot read {self._relative(folder)}: not watched (owned by another user?); "
                                "add it to watch.ignore to silence this")
            return make(settings.force_polling, True)
        except OSError as e:
            if "limit" not in str(e).lower():
                raise
            _, folders = unreadable_folders(self.roots, IgnoreRules([]), self.project_dir)
            limit = inotify_limit()
            self.on_warning(f"the inotify watch limit ({limit}) is below the {folders} folders to watch: "
                            f"raise it with `sudo sysctl fs.inotify.max_user_watches={max(524288, folders * 2)}` "
                            "(and in /etc/sysctl.conf); polling meanwhile")
            return make(True, True)

    def _serve(self, notify: RustNotify) -> str:
        """Hand over settled batches until stopped ("stop") or a watched folder disappears ("reopen").

        An editor's save is one to a few paths, written within a millisecond: waiting the whole
        quiet period for it would only add latency to every reload. So a batch is handed over after
        FAST_QUIET_MS of quiet if it is small; a bigger one (a `git checkout`, a formatter run over the
        tree) is held until `debounce_ms` pass with no new change, so it gives one restart, not several.
        Quiet means no change that counts: ignored files that keep changing (a log, a SQLite journal)
        end each wait after NOISE_WINDOW_MS at the latest, and do not hold a save back.
        """
        fast = min(FAST_QUIET_MS, max(1, self.debounce_ms))
        cap = max(1600, self.debounce_ms * 4)  # the longest a never-quiet stream of changes is held
        pending: set[str] = set()
        first = 0.0
        while True:
            quiet = fast if len(pending) <= SMALL_BATCH else max(fast, self.debounce_ms)
            window = max(NOISE_WINDOW_MS, 3 * quiet)
            try:
                raw = notify.watch(window, quiet, quiet if pending else 0, self._stop)
            except Exception as e:
                if "decode path" not in str(e):
                    raise
                # a name that is not UTF-8 (watchfiles cannot hand it over): say so once, and watch
                # afresh, since the watcher keeps failing on it; what else was pending still counts
                if not self._undecodable_said:
                    self._undecodable_said = True
                    name = str(e).split('"')[1] if '"' in str(e) else "a file"
                    self._say_when_watching = (f"{self._relative(name)}: its name is not UTF-8, so changes to it "
                                               "are not seen; rename it, or add it to watch.ignore")
                if pending:
                    self._hand_over(pending)
                return "reopen"
            if raw == "stop" or self._stop.is_set():
                return "stop"
            if raw in ("timeout", "signal"):
                raw = set()
            new, gone = self._settle(raw)
            # with no ignored changes in it, the wait can only have ended on quiet (not on the window)
            quiet_return = {path for _, path in raw} <= new
            if gone:
                if pending | new:
                    self._hand_over(pending | new)
                return "reopen"
            new -= pending
            if new:
                if not pending:
                    first = time.monotonic()
                pending |= new
                too_long = (time.monotonic() - first) * 1000 > cap
                if not (too_long or (quiet_return and len(pending) <= SMALL_BATCH)):
                    continue  # wait for the quiet that ends it
            elif not pending:
                continue  # only ignored files changed
            self._hand_over(pending)
            pending = set()

    def _settle(self, raw: set) -> tuple[set[str], bool]:
        """The changed paths that count, and whether a watched folder itself went away."""
        changes = {(watchfiles.Change(change), path) for change, path in raw}
        if any(change == watchfiles.Change.deleted and Path(path) in self.roots for change, path in changes):
            return set(), True
        if any(Path(path).name == ".gitignore" or path.endswith("/.git/info/exclude") for _, path in changes):
            self.filter = ChangeFilter(self.project_dir, IgnoreRules.for_project(self.project_dir, self.extra_ignore),
                                       self.always)
        added = {path for change, path in changes if change == watchfiles.Change.added}
        deleted = {path for change, path in changes if change == watchfiles.Change.deleted}
        # made and gone within one batch: an editor's or sed's temp file, renamed over the real one
        transient = {path for path in added & deleted if not os.path.lexists(path)}
        changes = {(change, path) for change, path in changes if path not in transient}
        for change, path in list(changes):
            if change == watchfiles.Change.added and os.path.isdir(path) and not self.filter.folder_ignored(path):
                changes |= _files_in(path)
        return {path for change, path in changes if self.filter(change, path)}, False

    def _hand_over(self, batch: set[str]) -> None:
        seen = time.monotonic()
        if TRACE:
            newest = max((os.stat(p).st_mtime for p in batch if os.path.exists(p)), default=time.time())
            print(f"devbox: trace: batch of {len(batch)} handed over {1000 * (time.time() - newest):.1f}ms "
                  f"after the newest mtime: {sorted(self._relative(p) for p in batch)[:5]}", file=sys.stderr, flush=True)
        self.on_change({self._relative(path) for path in batch}, seen)
