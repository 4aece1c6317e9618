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
from typing import Iterable

from docker import APIClient

from ..config import Config
from ..lock import runtime_dir
from .transport import files_transport
from .files import Archive, SyncedTree


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
    def __init__(self, api: APIClient, config: Config, container_id: str):
        self.config, self.container_id = config, container_id
        self.tree = SyncedTree(config)
        self.transport = files_transport(api, container_id)
        self.record = runtime_dir() / f"{config.name}.synced.json"
        self.synced: set[str] = set()  # container paths of the files sent (for deletions while down)
        self.batches = 0  # archives sent, the first one included
        self.files = 0  # files sent in all
        self.deleted = 0
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="devbox-sync")  # in order, one at a time

    @property
    def way(self) -> str:
        return self.transport.name

    def send_all(self) -> Sent:
        """Everything, as one archive; what was sent to this container before and is gone here is deleted."""
        began = time.monotonic()
        files = list(self.tree.walk())
        archive = Archive.of(self.tree, files)
        now = {self.tree.target(p) for p in files} - {None}
        gone = sorted(self._sent_before() - now)
        archive.deletions.extend(gone)
        self._send(archive)
        self.synced = {p for p in now if p is not None}
        self._remember()
        return Sent(archive.files, len(gone), archive.size, time.monotonic() - began)

    def send_soon(self, changed: Iterable[str]) -> Future:
        """`send` in the syncer's own thread, after the batches before it: a Future of what was sent."""
        return self.worker.submit(self.send, list(changed))

    def send(self, changed: Iterable[str]) -> Sent | None:
        """The changed paths the watcher reported (relative to the project folder, or absolute); None if
        none of them is synced."""
        began = time.monotonic()
        paths = [Path(p) if Path(p).is_absolute() else self.config.project_dir / p for p in changed]
        archive = Archive.of(self.tree, paths)
        if archive.empty():
            return None
        self._send(archive)
        gone = [p for p in archive.deletions if not p.endswith("*.pyc")]
        self.synced.difference_update(gone)
        self.synced.update(t for p in paths if (t := self.tree.target(p)) and p.is_file())
        return Sent(archive.files, len(gone), archive.size, time.monotonic() - began)

    def _send(self, archive: Archive) -> None:
        self.transport.send(archive)
        self.batches += 1
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
