"""What a Dockerfile says that devbox needs to know without building it: where the code goes (WORKDIR,
each `COPY SRC DEST` from the build context), what the image runs first (ENTRYPOINT), and which files of
the context the build reads (its COPY/ADD sources and `RUN --mount=type=bind` sources): the image's inputs.

This reads the instructions the way BuildKit applies them (stages up to the target, WORKDIR relative to the
last one, a directory source copies its contents, `*` does not cross `/`); it does not run the build.
"""

from __future__ import annotations

__all__ = ["Dockerfile", "Copy", "read_dockerfile", "DEPENDENCY_FILES", "is_dependency_file", "clean_source"]

import json
import posixpath
import re
import shlex
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

# the files a Python image installs its packages from
DEPENDENCY_FILES = ("requirements*.txt", "requirements/*.txt", "requirements/*.in", "requirements*.in",
                    "pyproject.toml", "poetry.lock", "uv.lock", "Pipfile", "Pipfile.lock", "setup.py", "setup.cfg",
                    "pdm.lock", "constraints*.txt")


def is_dependency_file(relative: str) -> bool:
    """Whether a context file (relative, posix) is one a Python image installs from."""
    parts = relative.split("/")
    tail2 = "/".join(parts[-2:])
    return any(fnmatchcase(parts[-1], p) or fnmatchcase(tail2, p) for p in DEPENDENCY_FILES)


@dataclass(frozen=True)
class Copy:
    """One COPY/ADD from the build context (or a RUN's bind mount of it: `dest` None)."""

    sources: tuple[str, ...]  # as written, relative to the context
    dest: str | None  # absolute, in the image
    final: bool  # in the stage the image is (not an earlier stage copied from)

    def destinations(self, relative: str) -> list[str] | None:
        """Where the context file `relative` lands in the image (empty list: read but not placed, as a
        bind mount's source), or None when this copy does not take it."""
        out = []
        for source in self.sources:
            source = clean_source(source)
            parts = relative.split("/")
            if source == ".":
                matched = 0
            else:
                pattern = source.split("/")
                if len(pattern) > len(parts) or not all(fnmatchcase(p, q) for p, q in zip(parts, pattern)):
                    continue
                matched = len(pattern)
            if self.dest is None:
                out.append("")
                continue
            if matched == len(parts):  # the file itself is the source
                into_folder = self.dest.endswith("/") or len(self.sources) > 1 or any(c in source for c in "*?[")
                out.append(posixpath.join(self.dest, parts[-1]) if into_folder else self.dest)
            else:  # a folder is the source: its contents go to DEST
                out.append(posixpath.join(self.dest, *parts[matched:]))
        return [d for d in out if d] if out else None


@dataclass
class Dockerfile:
    workdir: str = "/"
    entrypoint: list[str] = field(default_factory=list)
    copies: list[Copy] = field(default_factory=list)
    text: str = ""

    @property
    def code_dest(self) -> str | None:
        """Where `COPY . DEST` puts the whole context, in the image's stage."""
        dest = next((c.dest for c in reversed(self.copies) if c.final and c.dest and "." in map(clean_source, c.sources)),
                    None)
        return None if dest is None else dest.rstrip("/") or "/"

    def copied_to(self, relative: str) -> list[str]:
        """Where the image has the context file or folder `relative` (a `COPY ./backend/app /app/app`)."""
        out = []
        for copy in self.copies:
            if copy.final and copy.dest:
                out += copy.destinations(relative) or []
        return out

    def sources_of(self, place: str) -> list[str]:
        """The context paths the image's stage copies to the container path `place` (before a build: is the
        script the command names in the image?): each COPY's candidate, checked by where it would land."""
        out = []
        for copy in self.copies:
            if not copy.final or not copy.dest:
                continue
            dest = copy.dest.rstrip("/")
            rest = place[len(dest) + 1:] if place.startswith(dest + "/") else ""
            for source in map(clean_source, copy.sources):
                inside = rest if source == "." else posixpath.join(source, rest) if rest else ""
                # a folder source holds `rest`; a file source is itself the file (the caller checks which exists)
                for candidate in dict.fromkeys(c for c in (inside, source) if c not in ("", ".")):
                    if place in (copy.destinations(candidate) or []):
                        out.append(candidate)
        return out

    def uses(self, relative: str) -> list[str] | None:
        """Whether the build reads this context file: None if not, else where it lands in the image's stage
        (empty: read by an earlier stage or a RUN's bind mount only, so nothing of it is placed there)."""
        found = None
        for copy in self.copies:
            where = copy.destinations(relative)
            if where is not None:
                found = (found or []) + (where if copy.final else [])
        return found

    def names(self, relative: str) -> bool:
        """Whether the build reads this context file by name: a COPY of it, or a mention in a RUN."""
        base = posixpath.basename(relative)
        if any(clean_source(s) not in (".",) and (fnmatchcase(relative, clean_source(s)) or fnmatchcase(base, clean_source(s)))
               for copy in self.copies for s in copy.sources):
            return True
        return re.search(rf"(?<![\w.-]){re.escape(base)}(?![\w.-])", self.text) is not None


def clean_source(source: str) -> str:
    """A COPY source as a context-relative posix path (\".\" for the whole context)."""
    source = posixpath.normpath(source.lstrip("/")) if source.strip("/.") else "."
    return source.removeprefix("./") or "."


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


def _bind_sources(rest: str) -> list[str]:
    """The context files a RUN bind-mounts (`--mount=type=bind,source=uv.lock,target=uv.lock`)."""
    out = []
    for spec in re.findall(r"--mount=(\S+)", rest):
        fields = dict(part.split("=", 1) for part in spec.split(",") if "=" in part)
        if fields.get("type") == "bind" and "from" not in fields:
            out.append(fields.get("source") or fields.get("src") or ".")
    return out


def read_dockerfile(path: Path, target: str | None = None) -> Dockerfile | None:
    """The Dockerfile up to the end of `target` (the last stage without one); None if it cannot be read."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    out = Dockerfile(text=text)
    stage_workdirs: dict[str, str] = {}
    stage_entrypoints: dict[str, list[str]] = {}
    stage, stage_index = "", -1
    stage_numbers: dict[str, int] = {}  # a stage's name -> its index
    built_on: dict[int, int] = {}  # a stage -> the earlier stage it is built FROM: it has that one's files
    copies: list[tuple[int, tuple[str, ...], str | None]] = []  # (stage index, sources, dest)
    for line in _lines(text):
        instruction, _, rest = line.partition(" ")
        instruction, rest = instruction.upper(), rest.strip()
        if instruction == "FROM":
            if target and stage.lower() == target.lower():
                break  # the target stage is complete
            words = rest.split()
            base = words[-1] if len(words) >= 3 and words[-2].upper() == "AS" else ""
            parent = next((w for w in words if not w.startswith("--")), "")
            stage, stage_index = base, stage_index + 1
            if parent in stage_numbers:
                built_on[stage_index] = stage_numbers[parent]
            if base:
                stage_numbers[base] = stage_index
            # a stage built on an earlier one starts from its WORKDIR and ENTRYPOINT
            out.workdir = stage_workdirs.get(parent, "/")
            out.entrypoint = list(stage_entrypoints.get(parent, []))
        elif instruction == "WORKDIR":
            out.workdir = posixpath.normpath(posixpath.join(out.workdir, rest.strip('"')))
        elif instruction == "ENTRYPOINT":
            out.entrypoint = _words(rest)
        elif instruction == "RUN":
            sources = _bind_sources(rest)
            if sources:
                copies.append((stage_index, tuple(sources), None))
        elif instruction in ("COPY", "ADD"):
            words = _words(rest)
            if any(w.startswith("--from") for w in words):
                continue  # from another stage or image, not from the context
            words = [w for w in words if not w.startswith("--")]
            if len(words) < 2:
                continue
            *sources, dest = words
            sources = [s for s in sources if not re.match(r"^(https?|git)://|^git@", s)]
            absolute = posixpath.normpath(posixpath.join(out.workdir, dest))
            if dest.endswith("/") or dest in (".", "..") or absolute == out.workdir:
                absolute = absolute.rstrip("/") + "/"  # a folder (the WORKDIR exists as one): files go into it
            if sources:
                copies.append((stage_index, tuple(sources), absolute))
        if stage:
            stage_workdirs[stage] = out.workdir
            stage_entrypoints[stage] = list(out.entrypoint)
    final, index = {stage_index}, stage_index
    while index in built_on:
        index = built_on[index]
        final.add(index)
    out.copies = [Copy(sources, dest, index in final) for index, sources, dest in copies]
    return out
