"""What a devbox.yaml opens beyond the project: the host's root or Docker's socket in the container
(root on the host, for whoever controls the container's code), ports on every interface (the app to the
network). Allowed, since some projects need them; said at `up` and by `doctor`."""

from __future__ import annotations

__all__ = ["exposure_warnings"]

from pathlib import Path

from .config import Config

DOCKER_SOCKETS = (Path("/var/run/docker.sock"), Path("/run/docker.sock"))


def exposure_warnings(config: Config) -> list[str]:
    out = []
    sockets = {s.resolve() for s in DOCKER_SOCKETS if s.exists()} | set(DOCKER_SOCKETS)
    for mount in config.mounts:
        source = mount.source.resolve()
        if source == Path("/"):
            what = "the host's root folder"
        elif source in sockets or any(source in s.parents for s in sockets if source != Path("/")):
            what = "Docker's socket"
        else:
            continue
        out.append(f"mounts: {mount.source}:{mount.target} gives the container {what}: code in it is root on "
                   f"this machine (run devbox only on projects you trust; see README, Security)")
    every = [p for p in config.ports if p.host_ip in ("0.0.0.0", "::", "")]
    if every:
        shown = ", ".join(f"{'[::]' if p.host_ip == '::' else p.host_ip}:{p.host_port}" for p in every)
        out.append(f"ports: {shown} answers on every network interface, not only this machine: "
                   f"drop the address (devbox's default is 127.0.0.1) unless others must reach it")
    return out
