"""One `devbox up` per project at a time: a second one would end the first one's server as a leftover."""

from __future__ import annotations

__all__ = ["UpLock"]

import fcntl
import os
import tempfile
from pathlib import Path

from .errors import UsageError


class UpLock:
    """An flock on a per-user, per-project file; the kernel drops it when the process dies, even by -9."""

    def __init__(self, project: str):
        folder = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())
        self.path = folder / f"devbox-{os.getuid()}-{project}.lock"
        self.project = project
        self._file = None

    def __enter__(self) -> "UpLock":
        self._file = open(self.path, "a+")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            pid = self._file.read().strip() or "?"
            self._file.close()
            raise UsageError(f"`devbox up` already runs for project '{self.project}' (pid {pid}): "
                             "use that one, or stop it with Ctrl-C first") from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(str(os.getpid()))
        self._file.flush()
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            self._file.close()
