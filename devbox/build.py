"""Build the project's image from `build:`, as Compose does.

With a Compose v2 CLI (the usual case) the build goes through `compose build`,
which uses the engine's built-in BuildKit: `RUN --mount=type=cache`,
`FROM --platform=$BUILDPLATFORM` and multi-stage targets work. Without one,
the engine's legacy builder through the Docker SDK builds what it can (plain
Dockerfiles) and a BuildKit-only Dockerfile fails with a line saying to
install Compose. `DEVBOX_BUILDER=compose|legacy` picks one.

An image is built when it is missing, when its build inputs changed (the
Dockerfile, args, target, .dockerignore, and the context files the Dockerfile
uses, by path, size and mtime: see `inputs_hash`), or when asked (`up
--build`, the `rebuild` rule). The inputs' hash is a label on the image.
devbox.yaml, a README or anything else the Dockerfile does not COPY is not
an input; nor is a file whose place in the image a bind mount covers (the
server sees the mount), except what the image installs from. A rebuild
removes the untagged image it replaced.
"""

from __future__ import annotations

__all__ = ["Builder", "image_tag", "inputs_hash", "BuildFailed"]

import collections
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Callable

import docker
import docker.errors

from .compose import ToolMissing, find_compose
from .config import Build, Config, Mount
from .errors import ImageError, docker_error
from .dockerfile import Dockerfile, is_dependency_file, read_dockerfile
from .ignore import IgnoreRules

LABEL_BUILD_HASH = "devbox.build-hash"
MAX_FILES = 100_000  # files of the context looked at for the inputs' hash
TAIL = 15


class BuildFailed(ImageError):
    """A build that failed; `tail` holds its last lines of output."""

    def __init__(self, message: str, tail: list[str]):
        super().__init__(message, tail)


def image_tag(config: Config) -> str:
    return f"devbox-{config.name.lower()}:dev"


def _dockerignore(context: Path) -> IgnoreRules:
    """.dockerignore patterns are relative to the context's root (anchored), unlike .gitignore's."""
    try:
        lines = (context / ".dockerignore").read_text(errors="replace").splitlines()
    except OSError:
        return IgnoreRules([])
    anchored = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        body = line[1:] if negated else line
        anchored.append(("!" if negated else "") + "/" + body.lstrip("/").removeprefix("./"))
    return IgnoreRules(anchored)


def inputs_hash(build: Build, mounts: tuple[Mount, ...] = ()) -> str:
    """What the image is built from: a change here rebuilds it. The Dockerfile, its args and target, the
    .dockerignore, and the context files the Dockerfile uses (its COPY/ADD and RUN bind-mount sources, less
    what .dockerignore excludes); not a file whose place in the image a bind mount covers at run time (the
    mount wins: an edit there restarts, never rebuilds), unless the build installs from it (a dependency
    file, or one a RUN names). A Dockerfile devbox cannot read counts the whole context."""
    digest = hashlib.sha256(json.dumps([build.dockerfile, dict(build.args), build.target]).encode())
    rules = _dockerignore(build.context)
    dockerfile = (build.context / build.dockerfile).resolve()
    parsed = read_dockerfile(dockerfile, build.target)
    covered = tuple(m.target.rstrip("/") + "/" for m in mounts)
    seen = 0
    for root, dirs, files in os.walk(build.context):
        relative_root = Path(root).relative_to(build.context).as_posix()
        relative_root = "" if relative_root == "." else relative_root + "/"
        dirs[:] = sorted(d for d in dirs if not rules.ignored(relative_root + d, True))
        for name in sorted(files):
            relative = relative_root + name
            path = Path(root) / name
            special = path.resolve() == dockerfile or relative == ".dockerignore"
            if not special and (rules.ignored(relative) or not _an_input(parsed, relative, covered)):
                continue
            try:
                info = path.stat()
            except OSError:
                continue
            digest.update(f"{relative}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
            seen += 1
        if seen > MAX_FILES:
            break
    try:
        digest.update(dockerfile.read_bytes())
    except OSError:
        pass
    return digest.hexdigest()[:16]


def _an_input(parsed: Dockerfile | None, relative: str, covered: tuple[str, ...]) -> bool:
    if parsed is None:
        return True
    places = parsed.uses(relative)
    if places is None:
        return False  # the build never reads it
    if is_dependency_file(relative) or parsed.names(relative):
        return True  # installed from: its content is in the image whatever covers it
    # read by another stage or a RUN only (no place here), or placed somewhere a mount does not cover
    return not places or any(not (place + "/").startswith(covered) for place in places)


class Builder:
    def __init__(self, client: docker.DockerClient, config: Config, say: Callable[[str], None]):
        assert config.build is not None
        self.client, self.config, self.build, self.say = client, config, config.build, say
        self.tag = image_tag(config)
        self.replaced: str | None = None  # the image a build replaced, for `drop_replaced` once unused

    def ensure(self, force: bool = False) -> str:
        """The built image's id, building it if missing, stale or `force`d."""
        wanted = inputs_hash(self.build, self.config.mounts)
        previous = None
        try:
            image = self.client.images.get(self.tag)
            if not force and (image.labels or {}).get(LABEL_BUILD_HASH) == wanted:
                return image.id
            why = "asked to" if force else "its inputs changed"
            previous = image.id
        except docker.errors.ImageNotFound:
            why = "no image yet"
        except Exception as e:
            raise docker_error(e, f"image '{self.tag}'") from e
        dockerfile = self.build.context / self.build.dockerfile
        if not dockerfile.is_file():
            raise ImageError(f"{self.config.file.name}: build: {dockerfile} does not exist (fix `build.context` "
                             "or `build.dockerfile`)")
        way = os.environ.get("DEVBOX_BUILDER", "auto")
        if way != "legacy":
            try:
                compose = find_compose()
            except ToolMissing:
                if way == "compose":
                    raise
                compose = None
            if compose is not None:
                self.say(f"building {self.tag} with BuildKit ({why}; {compose})")
                return self._built(self._build_with_compose(compose, wanted), previous)
        self.say(f"building {self.tag} with the engine's legacy builder ({why}; no Compose v2 found)")
        return self._built(self._build_legacy(wanted), previous)

    def _built(self, image_id: str, previous: str | None) -> str:
        self.replaced = previous if previous and previous != image_id else None
        return image_id

    def _labels(self, wanted: str) -> dict[str, str]:
        return {LABEL_BUILD_HASH: wanted, "devbox.project": self.config.name}

    def _build_with_compose(self, compose, wanted: str) -> str:
        service = {"image": self.tag, "build": {"context": str(self.build.context), "dockerfile": self.build.dockerfile,
                                                "args": dict(self.build.args), "labels": self._labels(wanted)}}
        if self.build.target:
            service["build"]["target"] = self.build.target
        with tempfile.TemporaryDirectory(prefix="devbox-build-") as folder:
            file = Path(folder) / "compose.json"  # JSON is YAML: a Compose file of one service, built by Compose
            file.write_text(json.dumps({"name": f"devbox-{self.config.name.lower()}", "services": {"devbox": service}}))
            proc = compose.popen(["-f", str(file), "--progress", "plain", "build", "devbox"], cwd=self.build.context)
            tail: collections.deque[str] = collections.deque(maxlen=TAIL)
            assert proc.stdout is not None
            for line in proc.stdout:
                line = line.rstrip("\n")
                tail.append(line)
                step = re.match(r"#\d+ \[devbox ([^\]]*)\] (.*)", line)
                if step:
                    self.say(f"  build [{step.group(1)}] {step.group(2)[:160]}")
            code = proc.wait()
        # the exit code alone is not trusted (a wrapper around the Compose binary may drop it): the image
        # must be there and carry this build's inputs
        try:
            image = self.client.images.get(self.tag)
        except docker.errors.ImageNotFound:
            image = None
        except Exception as e:
            raise docker_error(e, f"image '{self.tag}'") from e
        if code != 0 or image is None or (image.labels or {}).get(LABEL_BUILD_HASH) != wanted:
            raise BuildFailed(f"building {self.tag} failed (exit {code}): fix the Dockerfile or `build:` in "
                              f"{self.config.file.name}", list(tail))
        return image.id

    def _build_legacy(self, wanted: str) -> str:
        tail: collections.deque[str] = collections.deque(maxlen=TAIL)
        try:
            events = self.client.api.build(path=str(self.build.context), dockerfile=self.build.dockerfile,
                                           buildargs=dict(self.build.args), target=self.build.target, tag=self.tag,
                                           labels=self._labels(wanted), rm=True, decode=True)
            for event in events:
                if "error" in event:
                    tail.append(event["error"].strip())
                    hint = " (BuildKit syntax: install Compose v2)" if "--mount" in event["error"] else ""
                    raise BuildFailed(f"building {self.tag} failed{hint}: fix the Dockerfile or `build:` in "
                                      f"{self.config.file.name}", list(tail))
                text = (event.get("stream") or "").rstrip()
                if text:
                    tail.extend(text.splitlines())
                    if text.startswith("Step "):
                        self.say(f"  build {text[:160]}")
        except ImageError:
            raise
        except Exception as e:
            raise docker_error(e, f"cannot build {self.tag}") from e
        return self.client.images.get(self.tag).id
