"""Which files a synced container gets, and the tar archive that carries them.

The same files the watcher watches: each bind mount's source (`mounts:`, `.:/app` by default), minus
watchfiles' defaults (.git, __pycache__, node_modules, ...), `.gitignore`, `watch.ignore`, and, when the
image is built from this folder, its `.dockerignore` (what the team keeps out of the image is not
needed in the container either). The files devbox itself reads (devbox.yaml, .env) always go.
"""

from __future__ import annotations

__all__ = ["SyncedTree", "Archive"]

import io
import os
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import watchfiles

from ..config import Config
from ..ignore import IgnoreRules, _lines
from ..watch import ChangeFilter

SPOOL = 32 * 1024 * 1024  # an archive bigger than this is spooled to a temporary file


class SyncedTree:
    """The host side of what is synced: which paths go, and where each one lands in the container."""

    def __init__(self, config: Config):
        self.config = config
        rules = IgnoreRules.for_project(config.project_dir, config.watch.ignore)
        if config.build is not None and config.build.context == config.project_dir:
            rules.add(dockerignore_patterns(config.project_dir))
        self.filter = ChangeFilter(config.project_dir, rules, config.watched_files())

    def wanted(self, path: Path) -> bool:
        """True if `path` (a file, or a folder and what is in it) is sent."""
        if path.is_dir():
            return not self.filter.folder_ignored(str(path))
        return self.filter(watchfiles.Change.modified, str(path))

    def target(self, path: Path) -> str | None:
        return self.config.container_path(path)

    def walk(self) -> Iterator[Path]:
        """Every file (and symlink) that is sent, mount by mount."""
        for mount in self.config.mounts:
            if not mount.source.is_dir():
                if mount.source.exists():
                    yield mount.source
                continue
            for root, dirs, files in os.walk(mount.source):
                dirs[:] = sorted(d for d in dirs if self.wanted(Path(root, d))
                                 or os.path.islink(os.path.join(root, d)))
                for name in sorted(files) + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
                    path = Path(root, name)
                    if self.filter(watchfiles.Change.modified, str(path)):
                        yield path


def dockerignore_patterns(folder: Path) -> list[str]:
    """A .dockerignore as .gitignore patterns: Docker anchors every pattern at the context's root."""
    out = []
    for line in _lines(folder / ".dockerignore"):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        body = (line[1:] if negated else line).strip()
        body = body[2:] if body.startswith("./") else body
        out.append(("!" if negated else "") + "/" + body.lstrip("/"))
    return out


PART_FILES = 2000  # files (or deletions) in one archive at most: a batch bigger than this goes in parts,
PART_BYTES = 64 * 1024 * 1024  # or bytes: each part is one request, answered within its own bound


@dataclass
class Archive:
    """One tar of files, each under its container path (relative to /), owned by root as `COPY` makes
    them, with the host's modes and modification times; and the container paths to delete."""

    data: io.BufferedRandom | io.BytesIO = field(default_factory=io.BytesIO)
    files: int = 0
    members: int = 0  # files, links and folders in the tar
    deletions: list[str] = field(default_factory=list)
    skipped: list[tuple[Path, int]] = field(default_factory=list)  # files over the size cap: (path, size)
    max_bytes: int | None = None  # a file bigger than this is not sent
    bytes_in: int = 0  # the files' bytes so far (the tar's own headers aside)

    @classmethod
    def of(cls, tree: SyncedTree, paths: Iterable[Path], max_bytes: int | None = None) -> "Archive":
        """The archive for these host paths, whole (see `parts`)."""
        whole = None
        for part in cls.parts(tree, paths, max_bytes, part_files=None):
            whole = part
        return whole if whole is not None else cls(max_bytes=max_bytes)

    @classmethod
    def parts(cls, tree: SyncedTree, paths: Iterable[Path], max_bytes: int | None = None,
              part_files: int | None = PART_FILES, also_delete: Iterable[str] = ()) -> Iterator["Archive"]:
        """The archives for these host paths, in order: the ones that exist go in (a folder with what it
        holds), the ones that are gone are deleted (in the first parts, before any file); a file over
        `max_bytes` is left out (in `skipped`). Paths outside every mount, or ignored, are left out. With
        `part_files`, a new part begins after that many files or deletions, or PART_BYTES of files.
        `also_delete`: container paths to delete besides (what was sent before and is gone since)."""
        deletions, files = list(also_delete), []
        for path in sorted(paths):  # the same batch, the same archives
            target = tree.target(path)
            if target is None:
                continue
            if not os.path.lexists(path):
                deletions.append(target)
            elif path.is_dir() and not path.is_symlink():
                if not tree.wanted(path):
                    continue
                for root, dirs, names in os.walk(path):
                    dirs[:] = sorted(d for d in dirs if tree.wanted(Path(root, d)))
                    files.append(Path(root))
                    files += [Path(root, n) for n in sorted(names)
                              if tree.filter(watchfiles.Change.modified, str(Path(root, n)))]
            elif tree.filter(watchfiles.Change.modified, str(path)):
                files.append(path)
                if target.endswith(".py"):  # the container's own bytecode of it (its mtime may not change)
                    folder, name = target.rsplit("/", 1)
                    deletions.append(f"{folder}/__pycache__/{name[:-3]}.*.pyc")
        step = part_files or max(1, len(deletions))
        made: list[Archive] = []
        for i in range(0, len(deletions), step):
            made.append(cls(max_bytes=max_bytes, deletions=deletions[i:i + step]))
        current = made.pop() if made else cls(tempfile.SpooledTemporaryFile(SPOOL), max_bytes=max_bytes)  # type: ignore[arg-type]
        yield from made
        if not isinstance(current.data, tempfile.SpooledTemporaryFile):
            current.data = tempfile.SpooledTemporaryFile(SPOOL)  # type: ignore[assignment]
        tar = tarfile.open(fileobj=current.data, mode="w", format=tarfile.PAX_FORMAT)
        for path in files:
            if part_files and (current.files >= part_files or current.bytes_in >= PART_BYTES):
                tar.close()
                current.data.seek(0, io.SEEK_END)
                yield current
                current = cls(tempfile.SpooledTemporaryFile(SPOOL), max_bytes=max_bytes)  # type: ignore[arg-type]
                tar = tarfile.open(fileobj=current.data, mode="w", format=tarfile.PAX_FORMAT)
            current._add(tar, path, tree.target(path))
        tar.close()
        current.data.seek(0, io.SEEK_END)
        yield current

    def _add(self, tar: tarfile.TarFile, path: Path, target: str | None) -> None:
        if target is None:
            return
        try:
            info = tar.gettarinfo(str(path), arcname=target.lstrip("/"))
        except OSError:
            return  # gone since it was listed: the next batch says so
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mtime = int(info.mtime)  # whole seconds: no pax header for every file
        if info.isreg():
            if self.max_bytes is not None and info.size > self.max_bytes:
                self.skipped.append((path, info.size))  # a sparse 2 GB file too: its length is what tar sends
                return
            try:
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            except OSError:
                return
            self.bytes_in += info.size
        elif info.isdir() or info.issym():
            tar.addfile(info)
        else:
            return  # sockets, fifos, devices: not source
        self.members += 1
        if not info.isdir():
            self.files += 1

    @property
    def size(self) -> int:
        """The tar's length in bytes (0: nothing to extract)."""
        if not self.members:
            return 0
        at = self.data.tell()
        self.data.seek(0, io.SEEK_END)
        size = self.data.tell()
        self.data.seek(at)
        return size

    def bytes(self) -> bytes:
        self.data.seek(0)
        return self.data.read()

    @property
    def deletion_list(self) -> bytes:
        return "".join(f"{p}\n" for p in self.deletions).encode()

    def empty(self) -> bool:
        return not self.files and not self.deletions
