"""The container's identity: what defines the container devbox keeps for a project. A change in it
makes a new container; any other config change restarts only the server. Its hash and its spec are
labels on the container, so the spec holds hashes of build args (they may be secrets), never values."""

from __future__ import annotations

__all__ = ["container_spec", "container_hash"]

import hashlib
import json
from typing import Any

from .config import Config


def container_spec(config: Config) -> dict[str, Any]:
    build = config.build
    return {
        "image": config.image,
        "build": None if build is None else [str(build.context), build.dockerfile,
                                             {k: _digest(v) for k, v in build.args.items()}, build.target],
        "workdir": config.workdir,
        "mounts": [f"{m.source}:{m.target}:{'ro' if m.read_only else 'rw'}" for m in config.mounts],
        "volumes": [f"{v.name}:{v.target}" for v in config.volumes],
        "ports": [str(p) for p in config.ports],
    } | ({"debugger": True} if config.debugger is not None else {}) \
      | ({"browser": True} if config.browser is not None and config.ports else {}) \
      | ({"sync": config.sync} if config.sync is not None else {})  # auto: the container's label says which


def container_hash(config: Config, image_id: str = "", network: str = "") -> str:
    data = json.dumps([container_spec(config), image_id] + ([network] if network else []), sort_keys=True).encode()
    return hashlib.sha256(data).hexdigest()[:16]


def _digest(value: object) -> str:
    return "sha256:" + hashlib.sha256(str(value).encode()).hexdigest()[:16]
