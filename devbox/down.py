"""`devbox down`: take everything of the project away, the way `up` made it, whether an `up` runs or not."""

from __future__ import annotations

__all__ = ["down"]

import docker.errors

from .compose import Services, forget_started, started_by_up
from .config import Config
from .container import Box
from .control import request
from .engine import connect
from .errors import ContainerError, docker_reason
from .output import say
from .server import ExecLauncher


def down(config: Config, with_volumes: bool) -> None:
    """End a running `up` (through its control socket), the server tree, the container, the Compose
    services `up` started (`with_volumes`: every service named, and the named volumes), the network."""
    answer = request(config.name, "down")
    if answer is not None and not answer.get("ok"):
        raise ContainerError(f"the running `devbox up` refused: {answer.get('error')}")
    if answer is not None:
        say("ended the running `devbox up`")
    box = Box(connect(), config, say)
    container = box.find()
    if container is not None and container.status == "running":
        # end the server tree the Django way first, so it can clean up, before the container goes
        ExecLauncher(box.client.api, container.id, config.workdir).end_leftover(config.stop_signal, config.stop_timeout)
    named = {box.volume_name(v.name) for v in config.volumes}
    anonymous = [m["Name"] for m in (container.attrs.get("Mounts") or []) if m.get("Type") == "volume"
                 and m.get("Name") and m["Name"] not in named] if container is not None else []
    volumes = box.remove(container, volumes=with_volumes)
    if container is not None:
        say(f"removed container {container.name}" + (f" and its anonymous volume{'s' if len(anonymous) > 1 else ''} "
                                                      f"{', '.join(a[:12] for a in anonymous)}" if anonymous else ""))
    volumes += _stop_services(config, box, with_volumes)
    if with_volumes:
        say(f"removed volumes {', '.join(volumes)}" if volumes else f"no volumes to remove for project '{config.name}'")
    elif container is None:
        say(f"no container for project '{config.name}'")


def _stop_services(config: Config, box, volumes: bool) -> list[str]:
    """`down`: remove the Compose services that `up` started (a service the user started stays theirs);
    `down --volumes`: every service devbox.yaml names, whoever started it, and the Compose project's named
    volumes, as `compose down --volumes` removes them (one still used by a container devbox did not
    start is kept, and said). Then the Compose network, once nothing is left on it. The names of the
    volumes removed."""
    if config.compose is None:
        return []
    names = list(config.compose.services) if volumes else started_by_up(config.name)
    if not names and not volumes:
        return []
    services = Services.resolve(config.compose.where, tuple(names), config.file.name)
    present = [name for name, (state, _) in services.states().items() if name in names and state]
    forget_started(config.name)
    removed = []
    if present:
        services.stop(present, volumes=volumes)
        say(f"removed compose services {', '.join(present)}" +
            ("" if volumes else " (started by `devbox up`)"))
    for name in services.project_volumes() if volumes else []:
        try:
            box.client.volumes.get(name).remove()
            removed.append(name)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as e:
            say(f"kept volume {name}: {docker_reason(e)}")
    try:
        network = box.client.networks.get(services.network)
        network.reload()
        if not network.attrs.get("Containers"):
            network.remove()
            say(f"removed network {services.network}")
    except Exception:
        pass  # gone already, or other containers of the Compose project still use it
    return removed
