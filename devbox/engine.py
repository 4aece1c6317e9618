"""Reach the Docker engine the way the `docker` CLI does.

The endpoint is, in this order: `DOCKER_HOST`; the context named by
`DOCKER_CONTEXT`; the `currentContext` of the CLI's config.json (`docker
context use`); the default socket. Contexts are read from the CLI's own files
(`$DOCKER_CONFIG` or ~/.docker, `contexts/meta/<sha256 of name>/meta.json`),
so Colima, OrbStack, rootless Docker and Docker Desktop work as they do for
the CLI. This module does not import the Docker SDK (prestart.py needs the
endpoint before the SDK is loaded).
"""

from __future__ import annotations

__all__ = ["Endpoint", "endpoint", "connect"]

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .errors import DockerUnavailable, UsageError, docker_reason

DEFAULT_HOST = "unix:///var/run/docker.sock"


@dataclass(frozen=True)
class Endpoint:
    host: str  # unix:///path, tcp://host:port, ssh://...
    source: str  # where it came from, for messages: "DOCKER_HOST", "context 'colima'", "the default"
    tls_dir: Path | None = None  # a context's TLS material (ca.pem, cert.pem, key.pem)

    def __str__(self) -> str:
        return f"{self.host} ({self.source})"

    @property
    def socket_path(self) -> str | None:
        return self.host[len("unix://"):] if self.host.startswith("unix://") else None

    @property
    def is_ssh(self) -> bool:
        return self.host.startswith("ssh://")

    @property
    def on_this_machine(self) -> bool:
        """The engine's processes and networks are this machine's (so a pid or a bridge address works here).
        An ssh:// engine never counts, even on loopback: its tunnel is how it is reached."""
        return self.remote_host is None and not self.is_ssh

    @property
    def remote_host(self) -> str | None:
        """The other machine an ssh:// or tcp:// endpoint names; None for this machine (a unix socket, loopback).
        Only a hint (a forwarded socket looks local): where the files are is asked of the engine (sync/)."""
        if not self.host.startswith(("ssh://", "tcp://", "http://", "https://")):
            return None
        host = urlsplit(self.host).hostname or ""
        if host == "localhost" or host.startswith("127.") or host == "::1":
            return None
        return host


def _config_dir() -> Path:
    return Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")


def endpoint() -> Endpoint:
    if os.environ.get("DOCKER_HOST"):
        return Endpoint(os.environ["DOCKER_HOST"], "DOCKER_HOST")
    name, source = os.environ.get("DOCKER_CONTEXT", ""), "DOCKER_CONTEXT"
    if not name:
        source = f"{_config_dir() / 'config.json'}"
        try:
            name = json.loads((_config_dir() / "config.json").read_text()).get("currentContext", "")
        except (OSError, ValueError, AttributeError):
            name = ""
    if not name or name == "default":
        return Endpoint(DEFAULT_HOST, "the default")
    context_id = hashlib.sha256(name.encode()).hexdigest()
    meta = _config_dir() / "contexts" / "meta" / context_id / "meta.json"
    try:
        host = json.loads(meta.read_text())["Endpoints"]["docker"]["Host"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UsageError(f"docker context '{name}' (from {source}) does not exist or has no docker endpoint: "
                         "see `docker context ls`, or `docker context use default`") from None
    tls = _config_dir() / "contexts" / "tls" / context_id / "docker"
    return Endpoint(host, f"context '{name}'", tls if tls.is_dir() else None)


def connect(timeout: int = 120):
    """A Docker SDK client that has answered a ping, or DockerUnavailable naming the endpoint."""
    import docker
    import docker.tls

    where = endpoint()
    if where.is_ssh:  # through an SSH connection of devbox's own (tunnel.py); the SDK needs no paramiko
        from .tunnel import REMOTE_SOCKET_VAR, open_tunnel

        tunnel = open_tunnel(where.host)
        try:
            client = docker.DockerClient(base_url=tunnel.base_url, timeout=timeout)
            client.ping()
            return client
        except Exception as e:
            raise DockerUnavailable(f"cannot reach the Docker engine at {where} through SSH ({docker_reason(e)}): "
                                    f"nothing answers at {tunnel.remote} on {tunnel.destination} ({tunnel.remote_from}); "
                                    f"set {REMOTE_SOCKET_VAR} to the engine's socket there") from e
    try:
        if where.source == "DOCKER_HOST":
            client = docker.from_env(timeout=timeout)  # also reads DOCKER_TLS_VERIFY and DOCKER_CERT_PATH
        else:
            tls = None
            if where.tls_dir is not None:
                cert = (str(where.tls_dir / "cert.pem"), str(where.tls_dir / "key.pem"))
                ca = where.tls_dir / "ca.pem"
                tls = docker.tls.TLSConfig(client_cert=cert if os.path.exists(cert[0]) else None,
                                           ca_cert=str(ca) if ca.exists() else None, verify=ca.exists())
            client = docker.DockerClient(base_url=where.host, tls=tls or False, timeout=timeout)
        client.ping()
        return client
    except Exception as e:  # DockerException, and requests' connection errors under it
        raise DockerUnavailable(
            f"cannot reach the Docker engine at {where} ({docker_reason(e)}): is it running? try `docker info`"
        ) from e
