"""One `devbox up` per project at a time: a second one would end the first one's server as a leftover.

The lock and the control socket (control.py) live in a folder only this user
can enter: $XDG_RUNTIME_DIR/devbox, or /tmp/devbox-<uid> (~/.cache/devbox/run
when another user holds that name).
"""

from __future__ import annotations

__all__ = ["UpLock", "runtime_dir", "private_open", "write_private"]

import fcntl
import os
import stat
import tempfile
from pathlib import Path

from .errors import UsageError


_runtime: Path | None = None


def runtime_dir() -> Path:
    """This user's private folder for locks, sockets and logs: $XDG_RUNTIME_DIR/devbox, or
    /tmp/devbox-<uid>. It must be a real folder (not a link), ours, mode 700: checked without following
    links, so a link planted in /tmp by another user is never followed. If another user holds the /tmp
    name, devbox says so once and uses ~/.cache/devbox/run instead."""
    global _runtime
    if _runtime is not None:
        return _runtime
    base = os.environ.get("XDG_RUNTIME_DIR")
    folder = Path(base) / "devbox" if base else Path(tempfile.gettempdir()) / f"devbox-{os.getuid()}"
    why = _private_folder(folder)
    if why:
        fallback = Path.home() / ".cache" / "devbox" / "run"
        if _private_folder(fallback):
            raise UsageError(f"{folder} {why}, and {fallback} cannot be used either: remove {folder} "
                             "(or ask its owner to), or set XDG_RUNTIME_DIR to a folder of yours")
        from .output import say

        say(f"{folder} {why}: using {fallback} for devbox's locks, sockets and logs")
        folder = fallback
    _runtime = folder
    return folder


def _private_folder(folder: Path) -> str:
    """Make `folder` (mode 700) if missing; "" if it is a real folder of ours that only we can enter,
    else why not."""
    try:
        folder.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            pass
        info = os.lstat(folder)
    except OSError as e:
        return f"cannot be made ({e.strerror})"
    if stat.S_ISLNK(info.st_mode):
        return "is a link, not a folder (someone else may have planted it)"
    if not stat.S_ISDIR(info.st_mode):
        return "is not a folder"
    if info.st_uid != os.getuid():
        return "belongs to another user"
    if stat.S_IMODE(info.st_mode) & 0o077:
        try:
            os.chmod(folder, 0o700, follow_symlinks=False)
        except OSError as e:
            return f"is open to other users and cannot be made private ({e.strerror})"
    return ""


def private_open(path: Path, flags: int) -> int:
    """Open a file of the runtime folder: never through a link, created mode 600."""
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


def write_private(path: Path, text: str) -> bool:
    """Replace a small file of the runtime folder; False if it cannot be written (full, read-only)."""
    try:
        with os.fdopen(private_open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "w") as f:
            f.write(text)
        return True
    except OSError:
        return False


class UpLock:
    """An flock on a per-project file; the kernel drops it when the process dies, even by -9."""

    def __init__(self, project: str, folder: Path, busy_hint: str = "use that one, or stop it with Ctrl-C first"):
        self.path = runtime_dir() / f"{project}.lock"
        self.project, self.folder, self.busy_hint = project, folder, busy_hint
        self._file = None

    def __enter__(self) -> "UpLock":
        try:
            self._file = os.fdopen(private_open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND), "a+")
        except OSError as e:
            raise UsageError(f"cannot write {self.path} ({e.strerror}): devbox needs its runtime folder "
                             f"{self.path.parent}; free space there or fix its permissions") from None
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            pid, _, other = self._file.read().partition("\n")
            self._file.close()
            other = other.strip()
            if other and other != str(self.folder):
                raise UsageError(f"project name '{self.project}' is taken by {other} (its `devbox up` runs, "
                                 f"pid {pid or '?'}); this is {self.folder}: give one of them another `name:` "
                                 "in its devbox.yaml") from None
            raise UsageError(f"`devbox up` already runs for project '{self.project}' (pid {pid.strip() or '?'}): "
                             f"{self.busy_hint}") from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"{os.getpid()}\n{self.folder}\n")
        self._file.flush()
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            self._file.close()
