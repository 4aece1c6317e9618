"""`devbox status`: the container, the server, the URLs and the Compose services, in one shape.

The shape of `devbox status --json` (documented in the README; keys are always present):

    {"project": str, "folder": str,
     "container": {"name", "id", "state", "image", "image_id", "created"} | null,
     "up": {"pid", "since"} | null,                       # the running `devbox up`, if any
     "server": {"pid", "uptime_s", "ready", "started_because"} | null,
     "restarts": int | null, "last_ready": {"at", "took_s"} | null,
     "preload": str | null,                               # "on", "on (holds the project's ...)", "off: why"
     "urls": [str], "services": [{"name", "state", "health"}]}
"""

from __future__ import annotations

__all__ = ["gather", "lines"]

import datetime
from typing import Any

from .config import Config
from .container import LABEL_SYNC, Box
from .control import request
from .output import say
from .ready import probe_address


def gather(config: Config) -> dict[str, Any]:
    from .engine import connect

    answer = request(config.name, "status", timeout=10)
    live = answer.get("status") if answer and answer.get("ok") else None
    box = Box(connect(), config, say)
    container = box.find()
    info = None
    if container is not None:
        info = {"name": container.name, "id": container.id, "state": container.status,
                # by name (`devbox-web:dev` for a `build:`), as the user wrote or devbox tagged it; the id beside it
                "image": box.image_name, "image_id": container.attrs["Image"], "created": container.attrs["Created"],
                "files": "synced" if container.labels.get(LABEL_SYNC) == "synced" else "mounted"}
    services = []
    if config.compose is not None and config.compose.services:
        from .compose import Services

        found = Services.resolve(config.compose.where, config.compose.services, config.file.name)
        states = found.states()
        services = [{"name": name, "state": states.get(name, ("not created", ""))[0],
                     "health": states.get(name, ("", ""))[1] or None} for name in config.compose.services]
    urls = []
    for port in config.ports:
        if port.protocol == "tcp":
            host, number = probe_address(port)
            urls.append(f"http://{f'[{host}]' if ':' in host else host}:{number}/")
    return {
        "project": config.name, "folder": str(config.project_dir), "container": info,
        "up": None if live is None else {"pid": live["up_pid"], "since": live["up_since"]},
        "server": None if live is None else live["server"],
        "restarts": None if live is None else live["restarts"],
        "last_ready": None if live is None else live["last_ready"],
        "preload": None if live is None else live.get("preload"),
        "sync": None if live is None else live.get("sync"),
        "urls": urls, "services": services,
    }


def _ago(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(seconds)))


def lines(status: dict[str, Any]) -> list[str]:
    out = [f"project {status['project']} ({status['folder']})"]
    container = status["container"]
    out.append("container: none (run `devbox up`)" if container is None else
               f"container: {container['name']} {container['state']}, image {container['image']}, "
               f"created {container['created'][:19].replace('T', ' ')}, files {container['files']}")
    if status["up"] is None:
        out.append("devbox up: not running")
    else:
        out.append(f"devbox up: pid {status['up']['pid']}, restarts {status['restarts']}")
        server = status["server"]
        out.append("server: not running (waiting for a change)" if server is None else
                   f"server: pid {server['pid']}, up {_ago(server['uptime_s'])}, "
                   f"{'ready' if server['ready'] else 'not ready yet'} ({server['started_because']})")
        if status["preload"]:
            out.append(f"preload: {status['preload']}")
        if status["last_ready"]:
            out.append(f"last ready in {status['last_ready']['took_s']:.2f}s")
        if status["sync"]:
            sync = status["sync"]
            out.append(f"sync: {sync['batches']} batches, {sync['files']} files sent, {sync['deleted']} deleted "
                       f"(through {sync['way']})")
    for url in status["urls"]:
        out.append(f"url: {url}")
    for service in status["services"]:
        health = f", {service['health']}" if service["health"] else ""
        out.append(f"compose service {service['name']}: {service['state']}{health}")
    return out
