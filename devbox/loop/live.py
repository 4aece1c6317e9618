"""Live config: devbox.yaml, devbox.local.yaml, .env and env files saved during `up`.

`apply` decides what a new config changes: the container (made anew beside the old one, see the
keeper), the watch, or only the next server start; an invalid file, or a container that cannot be
made, leaves the running one alone. An env file with a line no process could take is named and not
applied.
"""

from __future__ import annotations

__all__ = ["LiveConfig"]

from typing import TYPE_CHECKING

from ..config import LOCAL_NAME, Config, load, read_env_file
from ..container import Box
from ..errors import ConfigError, DevboxError, render
from ..identity import container_spec
from ..output import quoted
from .events import Interrupted

if TYPE_CHECKING:
    from .supervisor import Supervisor


class LiveConfig:
    def __init__(self, loop: "Supervisor"):
        self.loop = loop

    @property
    def files(self) -> set[str]:
        """The files whose change reloads the config (env_file entries only restart the server)."""
        return {self.loop.config.file.name, LOCAL_NAME, ".env"}

    def take(self, paths: set[str]) -> set[str]:
        """Of a batch of changed paths, those still to act on: the config's own files once applied
        (dropped if not), minus env files that would break every start."""
        if paths & self.files and not self.reload():
            paths = paths - self.files  # an invalid or failing config changes nothing
        return paths - self._bad_env_files(paths)

    def reload(self) -> bool:
        loop = self.loop
        try:
            new = load(loop.config.file)
            if loop.debugger_flag:
                new = new.with_debugger()
        except ConfigError as e:
            for problem in e.problems:
                loop.say(str(problem))
            loop.say(f"{loop.config.file.name} not applied; the previous config still runs")
            return False
        return self.apply(new)

    def apply(self, new: Config) -> bool:
        """Switch to `new`: True if applied. A changed container spec or name makes a new container."""
        loop, keeper = self.loop, self.loop.keeper
        old = loop.config
        if container_spec(new) != container_spec(old) or new.name != old.name:
            try:
                keeper.replace(new)
            except Interrupted:
                raise
            except DevboxError as e:
                first, *tail = render(e)
                loop.say(f"{new.file.name} not applied: {first}")
                for line in tail:
                    loop.say(line)
                loop.say("the previous container and server still run")
                return False
        loop.config = new
        keeper.box = Box(loop.client, new, loop.say, keeper.network)
        if new.watch != old.watch:
            loop.watch()
        loop.say(f"reloaded {new.file.name}")
        return True

    def _bad_env_files(self, paths: set[str]) -> set[str]:
        """Changed env files with a line no process could take: said, and no restart for them (every
        start would fail until they are fixed)."""
        cfg, say = self.loop.config, self.loop.say
        bad = set()
        for path in cfg.env_files:
            try:
                relative = path.resolve().relative_to(cfg.project_dir).as_posix()
            except ValueError:
                continue
            problems: list[tuple[int, str]] = []
            if relative in paths:
                read_env_file(path, problems)
            for number, message in problems:
                say(f"{quoted(relative)}:{number}: {message}")
            if problems:
                say(f"{quoted(relative)} not applied; the server runs on with what it had")
                bad.add(relative)
        return bad
