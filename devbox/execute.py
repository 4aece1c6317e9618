"""`devbox exec` and `devbox shell`: a command in the project's container, as if typed there.

The command gets the server's environment (`env`, `env_file`; not RUN_MAIN)
and runs in `workdir`. The terminal side is the docker CLI's, a tool users
already have (as `docker compose exec` does): with a terminal on both ends it
is `docker exec -it` (raw mode, window size and resizes, Ctrl-C to the
foreground job inside); with pipes, stdin and stdout stay plain streams and
devbox stays the parent, forwarding Ctrl-C (and SIGTERM) to the command in the
container, which plain `docker exec` does not do.
"""

from __future__ import annotations

__all__ = ["run_inside", "SHELL"]

import os
import shutil
import signal
import subprocess
import sys
import uuid

from .config import Config
from .container import STATE_DIR, Box
from .errors import UsageError, docker_error
from .output import say

# bash if the image has it, else sh
SHELL = ["sh", "-c", "command -v bash >/dev/null 2>&1 && exec bash || exec sh"]
# record the command's pid (in the container) so that a signal can be forwarded to it
_WRAPPER = 'echo $$ > "$0"; exec "$@"'


def run_inside(config: Config, argv: list[str], env: dict[str, str], workdir: str | None, user: str | None,
               tty: bool | None = None) -> int:
    from .compose import ToolMissing
    from .engine import connect

    docker = shutil.which("docker")
    if docker is None:
        raise ToolMissing("`devbox exec` and `devbox shell` use the docker CLI, which is not on PATH: install "
                          "Docker's command-line client")
    box = Box(connect(), config, say)
    container = box.find()
    if container is None:
        raise UsageError(f"no container for project '{config.name}' yet: run `devbox up` first")
    if container.status != "running":
        say(f"starting container {container.name}")
        box.start(container)
    if tty is None:
        tty = sys.stdin.isatty() and sys.stdout.isatty()
    args = [docker, "exec", "-i"] + (["-t"] if tty else [])
    for key, value in {**config.server_env(), **env}.items():
        args += ["-e", f"{key}={value}"]
    args += ["-w", workdir or config.workdir] + (["-u", user] if user else []) + [container.id]
    if tty:
        sys.stdout.flush()
        os.execv(docker, args + argv)  # the docker CLI owns the terminal from here; its exit code is ours
    record = f"{STATE_DIR}/exec-{uuid.uuid4().hex[:12]}.pid"
    child = subprocess.Popen(args + ["sh", "-c", _WRAPPER, record, *argv])

    def forward(signum: int, frame: object) -> None:
        name = signal.Signals(signum).name.removeprefix("SIG")
        try:
            container.exec_run(["sh", "-c", f'kill -{name} "$(cat {record})" 2>/dev/null'])
        except Exception as e:
            say(str(docker_error(e, "cannot pass the signal on")))

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        code = child.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        try:
            container.exec_run(["rm", "-f", record])
        except Exception:
            pass  # the tmpfs goes with the container anyway
    return code
