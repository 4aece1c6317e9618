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
from pathlib import Path

from .config import Config
from .container import Box
from .inside import exec_record
from .errors import ContainerError, docker_error
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
        raise ContainerError(f"no container for project '{config.name}' yet: run `devbox up` first")
    if container.status != "running":
        say(f"starting container {container.name}")
        box.start(container)
    if tty is None:
        tty = sys.stdin.isatty() and sys.stdout.isatty()
    args = [docker, "exec", "-i"] + (["-t"] if tty else [])
    env_file, child_env = _env_outside_argv({**config.server_env(), **env})
    args += ["--env-file", str(env_file)] + [a for key in child_env for a in ("-e", key)]
    args += ["-w", workdir or config.workdir] + (["-u", user] if user else []) + [container.id]
    try:
        if tty:
            sys.stdout.flush()
            # the docker CLI owns the terminal (raw mode: Ctrl-C goes inside); devbox only waits, to
            # remove the env file once it has been read
            return subprocess.call(args + argv, env={**os.environ, **child_env})
        return _forwarding_signals(container, args, argv, {**os.environ, **child_env})
    finally:
        env_file.unlink(missing_ok=True)


def _env_outside_argv(env: dict[str, str]) -> tuple[Path, dict[str, str]]:
    """The environment for `docker exec`, kept out of its command line (where any local user reads it
    with `ps`): an env file of mode 600 in the private runtime folder; a value with a line break, which
    an env file cannot hold, goes through the CLI's own environment as `-e NAME`."""
    from .lock import private_open, runtime_dir

    path = runtime_dir() / f"exec-{uuid.uuid4().hex[:12]}.env"
    in_file = {k: v for k, v in env.items() if "\n" not in v and "\r" not in v}
    with os.fdopen(private_open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL), "w") as f:
        f.writelines(f"{k}={v}\n" for k, v in in_file.items())
    return path, {k: v for k, v in env.items() if k not in in_file}


def _forwarding_signals(container, args: list[str], argv: list[str], env: dict[str, str]) -> int:
    """Pipes on either end: devbox stays the parent and passes Ctrl-C and SIGTERM on to the command."""
    record = exec_record()
    child = subprocess.Popen(args + ["sh", "-c", _WRAPPER, record, *argv], env=env)

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
