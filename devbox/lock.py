"""One `devbox up` per project at a time: a second one would end the first one's server as a leftover.

The lock and the control socket (control.py) live in a folder only this user
can enter: $XDG_RUNTIME_DIR/devbox, or /tmp/devbox-<uid>.
"""

from __future__ import annotations

__all__ = ["UpLock", "runtime_dir"]

import fcntl
import os
import stat
import tempfile
from pathlib import Path

from .errors import UsageError


def runtime_dir() -> Path:
    """This user's private folder for locks and sockets (made 0700; refused if someone else owns it)."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    folder = Path(base) / "devbox" if base else Path(tempfile.gettempdir()) / f"devbox-{os.getuid()}"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = folder.stat()
    if info.st_uid != os.getuid() or stat.S_IMODE(info.st_mode) & 0o077:
        raise UsageError(f"{folder} must belong to you and be private (mode 700): remove it and run devbox again")
    return folder


class UpLock:
    """An flock on a per-project file; the kernel drops it when the process dies, even by -9."""

    def __init__(self, project: str, folder: Path, busy_hint: str = "use that one, or stop it with Ctrl-C first"):
        self.path = runtime_dir() / f"{project}.lock"
        self.project, self.folder, self.busy_hint = project, folder, busy_hint
        self._file = None

    def __enter__(self) -> "UpLock":
        self._file = open(self.path, "a+")
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
