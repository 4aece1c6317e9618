"""A synced container's copy of the project: all of it when the container is attached, then each
batch of changes before the restart it causes. One way: what the server writes stays in there.

What was sent is remembered on this machine (`<runtime>/<name>.synced.json`, by container), so a file
deleted while devbox was not running is deleted in the container at the next `up` too.
"""

from __future__ import annotations

__all__ = ["Syncer", "Sent"]

import json
from concurrent.futures import Future, ThreadPoolExecutor
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from docker import APIClient

from ..config import Config
from ..lock import runtime_dir
from .transport import files_transport
from ..output import quoted
from .files import PART_FILES, Archive, SyncedTree


def _relative(path: Path, folder: Path) -> str:
    try:
        return path.relative_to(folder).as_posix()
    except ValueError:
        return str(path)


@dataclass(frozen=True)
class Sent:
    files: int
    deleted: int
    size: int
    seconds: float

    def __str__(self) -> str:
        deleted = f", {self.deleted} deleted" if self.deleted else ""
        return f"{self.files} files ({self.size / 1e6:.1f} MB){deleted} in {self.seconds * 1000:.0f} ms"


class Syncer:
    def __init__(self, api: APIClient, config: Config, container_id: str, say: Callable[[str], None] = lambda line: None):
        self.config, self.container_id, self.say = config, container_id, say
        self.max_bytes = config.sync_max_mb * 1024 * 1024
        self.tree = SyncedTree(config)
        self.transport = files_transport(api, container_id)
        self.record = runtime_dir() / f"{config.name}.synced.json"
        self.synced: set[str] = set()  # container paths of the files sent (for deletions while down)
        self.batches = 0  # batches sent (each in one or more archives), the first one included
        self.files = 0  # files sent in all
        self.deleted = 0
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="devbox-sync")  # in order, one at a time

    @property
    def way(self) -> str:
        return self.transport.name

    def send_all(self) -> Sent:
        """Everything; what was sent to this container before and is gone here is deleted."""
        began = time.monotonic()
        files = list(self.tree.walk())
        now = {self.tree.target(p) for p in files} - {None}
        sent, _, skipped = self._send_parts(files, sorted(self._sent_before() - now), began)
        self.synced = {p for p in now if p is not None} - set(skipped)
        self._remember()
        return sent

    def send_soon(self, changed: Iterable[str]) -> Future:
        """`send` in the syncer's own thread, after the batches before it: a Future of what was sent."""
        return self.worker.submit(self.send, list(changed))

    def send(self, changed: Iterable[str]) -> Sent | None:
        """The changed paths the watcher reported (relative to the project folder, or absolute); None if
        none of them is synced."""
        began = time.monotonic()
        paths = [Path(p) if Path(p).is_absolute() else self.config.project_dir / p for p in changed]
        sent, deleted, skipped = self._send_parts(paths, [], began)
        if not sent.files and not sent.deleted and not skipped:
            return None
        self.synced.difference_update(deleted)
        self.synced.update(t for p in paths if (t := self.tree.target(p)) and p.is_file())
        self.synced.difference_update(skipped)
        return sent

    def _send_parts(self, paths: list[Path], gone: list[str], began: float) -> tuple[Sent, list[str], list[str]]:
        """Send a batch as archives of PART_FILES files at most, each one request with its own bound (a
        checkout of 65,000 files must not wait for one answer); a line after each part past the first,
        and one for the files over the size cap, which are not sent. `gone`: container paths to delete.
        What was sent, the container paths deleted, and those of the files not sent."""
        files = size = parts = 0
        deleted: list[str] = []
        skipped: list[tuple[Path, int]] = []
        for archive in Archive.parts(self.tree, paths, self.max_bytes, also_delete=gone):
            skipped += archive.skipped
            if archive.empty():
                continue
            self._send(archive)
            parts += 1
            files += archive.files
            size += archive.size
            deleted += [p for p in archive.deletions if not p.endswith("*.pyc")]
            if parts > 1 or archive.files >= PART_FILES:
                self.say(f"sync: {files} files sent so far ({time.monotonic() - began:.0f}s)")
        if parts:
            self.batches += 1
        if skipped:
            shown = ", ".join(f"{quoted(_relative(p, self.config.project_dir))} ({n / 1e6:.0f} MB)" for p, n in skipped[:3])
            more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
            self.say(f"sync: not sent, over {self.config.sync_max_mb} MB: {shown}{more} (to send bigger files, "
                     f"set `sync: {{max_file_mb: N}}` in {self.config.file.name})")
        return (Sent(files, len(deleted), size, time.monotonic() - began), deleted,
                [t for p, _ in skipped if (t := self.tree.target(p))])

    def _send(self, archive: Archive) -> None:
        self.transport.send(archive)
        self.files += archive.files
        self.deleted += len([p for p in archive.deletions if not p.endswith("*.pyc")])

    def _sent_before(self) -> set[str]:
        try:
            data = json.loads(self.record.read_text())
        except (OSError, ValueError):
            return set()
        return set(data.get("files", [])) if data.get("container") == self.container_id else set()

    def _remember(self) -> None:
        try:
            self.record.write_text(json.dumps({"container": self.container_id, "files": sorted(self.synced)}))
        except OSError:
            pass  # only costs a stale file in the container after a deletion while down

    def status(self) -> dict:
        return {"way": self.way, "batches": self.batches, "files": self.files, "deleted": self.deleted}

    def close(self) -> None:
        self.transport.close()  # first: a batch under way then fails at once instead of waiting for its answer
        self.worker.shutdown(wait=True, cancel_futures=True)
        self._remember()
