"""Mounted or synced: does the engine see this folder?

The endpoint is only a hint: Docker Desktop, Colima and VM shares look remote and share the files; a
forwarded unix socket looks local and does not. So `sync: auto` asks the engine itself: the
container is made with the bind mounts, and the first mount's source must look the same in there
as here (its modification time, to the second, and for a file its size). A source the engine does not
have fails the create; one it has but that differs (another checkout at the same path on a build
host) fails the comparison. Either way the container is made again, synced.
"""

from __future__ import annotations

__all__ = ["Placement", "sees_folder", "MOUNT_SOURCE_MISSING"]

import base64
import json
import os
import re
from dataclasses import dataclass
from datetime import datetime

from docker import APIClient

from ..config import Config

# what the engine answers when a bind mount's source is not on its host
MOUNT_SOURCE_MISSING = ("bind source path does not exist", "invalid mount config")


@dataclass(frozen=True)
class Placement:
    """How the project's files reach the container, and why (for the line `up` says)."""

    synced: bool
    why: str

    def line(self, config: Config) -> str:
        where = config.container_path(config.project_dir) or config.workdir
        if self.synced:
            return f"files: synced into {where}, one way ({self.why})"
        return f"files: mounted at {where} ({self.why})"


def sees_folder(api: APIClient, container_id: str, config: Config) -> bool:
    """True if the container's view of the first bind mount is this machine's folder."""
    mount = next((m for m in config.mounts if m.source.exists()), None)
    if mount is None:
        return True  # nothing to compare: nothing is mounted from here that exists
    for _ in range(3):  # a local change between the two looks: look again
        before = os.stat(mount.source)
        try:  # HEAD: only the stat header, not the folder's contents
            response = api.head(api._url("/containers/{0}/archive", container_id), params={"path": mount.target},
                                timeout=30)
        except Exception:
            return False
        header = response.headers.get("x-docker-container-path-stat")
        if response.status_code != 200 or not header:
            return False
        seen = json.loads(base64.b64decode(header))
        if os.stat(mount.source).st_mtime_ns != before.st_mtime_ns:
            continue
        same_size = os.path.isdir(mount.source) or seen.get("size") == before.st_size
        return same_size and _seconds(seen.get("mtime", "")) == int(before.st_mtime)
    return False


def _seconds(rfc3339: str) -> int | None:
    """Whole seconds since the epoch of the engine's RFC 3339 time (its nanoseconds dropped)."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.\d+)?(Z|[+-]\d\d:\d\d)", rfc3339)
    if match is None:
        return None
    return int(datetime.fromisoformat(match.group(1) + match.group(2).replace("Z", "+00:00")).timestamp())
