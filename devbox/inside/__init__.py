"""What runs, and lives, inside the container: the preloader (preloader.py, stdlib only, run by the
container's Python), the stop script (stop.sh, run by its sh), and every path devbox uses in there.
The host side reads these files and sends them in; it never imports preloader.py to run it here."""

from __future__ import annotations

__all__ = ["STATE_DIR", "SETUP_MARK", "SERVER_RECORD", "TASK_RECORD", "PRELOADER_FILE", "PRELOAD_SOCKET",
           "PRELOADER_RECORD", "exec_record", "read"]

import importlib.resources
import uuid

STATE_DIR = "/.devbox"  # a tmpfs in the container: records live here and die with the container
SETUP_MARK = "/.devbox-setup-done"  # in the container's own layer: survives a stop, gone with the container
SERVER_RECORD = f"{STATE_DIR}/server.pid"  # "PGID TOKEN" of the server started last
TASK_RECORD = f"{STATE_DIR}/task.pid"  # the same for a setup command or an exec rule under way
PRELOADER_FILE = f"{STATE_DIR}/preloader.py"
PRELOAD_SOCKET = f"{STATE_DIR}/preload.sock"
PRELOADER_RECORD = f"{STATE_DIR}/preloader.pid"


def exec_record() -> str:
    """Where a `devbox exec` command's pid is kept, for a signal to be passed on."""
    return f"{STATE_DIR}/exec-{uuid.uuid4().hex[:12]}.pid"


def read(name: str) -> str:
    """The text of one of this package's files (stop.sh, preloader.py)."""
    return importlib.resources.files(__name__).joinpath(name).read_text()
