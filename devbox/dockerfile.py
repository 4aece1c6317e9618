"""What a Dockerfile says that devbox needs to know without building it: where the code goes (WORKDIR,
`COPY . DEST`), what the image runs first (ENTRYPOINT), and which files of the context the build reads
by name (`COPY requirements.txt .`, `pip install -r requirements.txt`)."""

from __future__ import annotations

__all__ = ["Dockerfile", "read_dockerfile", "DEPENDENCY_FILES"]

import json
import posixpath
import re
import shlex
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

# the files a Python image installs its packages from
DEPENDENCY_FILES = ("requirements*.txt", "pyproject.toml", "poetry.lock", "uv.lock", "Pipfile", "Pipfile.lock",
                    "setup.py", "setup.cfg")


@dataclass
class Dockerfile:
    workdir: str = "/"
    code_dest: str | None = None  # where `COPY . DEST` puts the whole context
    entrypoint: list[str] = field(default_factory=list)
    copied: list[str] = field(default_factory=list)  # COPY/ADD sources from the context, other than "."
    text: str = ""

    def names(self, relative: str) -> bool:
        """Whether the build reads this context file by name (a COPY of it, or a mention in a RUN)."""
        base = posixpath.basename(relative)
        if any(fnmatch(relative, source.lstrip("./")) or fnmatch(base, source.lstrip("./")) for source in self.copied):
            return True
        return re.search(rf"(?<![\w.-]){re.escape(base)}(?![\w.-])", self.text) is not None


def _lines(text: str) -> list[str]:
    """Instructions, continuation lines joined, comments dropped."""
    out, current = [], ""
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        if current.strip():
            out.append(current.strip())
        current = ""
    if current.strip():
        out.append(current.strip())
    return out


def _words(rest: str) -> list[str]:
    """An instruction's arguments: JSON (exec) form or words."""
    if rest.startswith("["):
        try:
            value = json.loads(rest)
            return [str(v) for v in value] if isinstance(value, list) else []
        except ValueError:
            pass
    try:
        return shlex.split(rest)
    except ValueError:
        return rest.split()


def read_dockerfile(path: Path, target: str | None = None) -> Dockerfile | None:
    """The Dockerfile up to the end of `target` (the last stage without one); None if it cannot be read."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    out = Dockerfile(text=text)
    stage_workdirs: dict[str, str] = {}
    stage_entrypoints: dict[str, list[str]] = {}
    stage = ""
    for line in _lines(text):
        instruction, _, rest = line.partition(" ")
        instruction, rest = instruction.upper(), rest.strip()
        if instruction == "FROM":
            if target and stage.lower() == target.lower():
                break  # the target stage is complete
            words = rest.split()
            base = words[-1] if len(words) >= 3 and words[-2].upper() == "AS" else ""
            parent = next((w for w in words if not w.startswith("--")), "")
            stage = base
            # a stage built on an earlier one starts from its WORKDIR and ENTRYPOINT
            out.workdir = stage_workdirs.get(parent, "/")
            out.entrypoint = list(stage_entrypoints.get(parent, []))
        elif instruction == "WORKDIR":
            out.workdir = posixpath.normpath(posixpath.join(out.workdir, rest.strip('"')))
        elif instruction == "ENTRYPOINT":
            out.entrypoint = _words(rest)
        elif instruction in ("COPY", "ADD"):
            words = _words(rest)
            if any(w.startswith("--from") for w in words):
                continue  # from another stage or image, not from the context
            words = [w for w in words if not w.startswith("--")]
            if len(words) < 2:
                continue
            *sources, dest = words
            dest = posixpath.normpath(posixpath.join(out.workdir, dest))
            for source in sources:
                if source.rstrip("/") in (".", "./"):
                    out.code_dest = dest
                else:
                    out.copied.append(source)
        if stage:
            stage_workdirs[stage] = out.workdir
            stage_entrypoints[stage] = list(out.entrypoint)
    return out
