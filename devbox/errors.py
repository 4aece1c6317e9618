"""Every error devbox reports to a person: one base class, subclasses that carry what explains them.

`cli.py` is the only place that prints them and picks the exit code; everything
else raises. Docker SDK errors are translated where they are raised (`raise ... from e`),
so the user never sees an `APIError` repr.
"""

from __future__ import annotations

__all__ = [
    "DevboxError",
    "ConfigError",
    "ConfigProblem",
    "DockerUnavailable",
    "ImageError",
    "PortInUse",
    "ContainerError",
    "ContainerGone",
    "UsageError",
    "docker_error",
    "docker_reason",
    "engine_says",
    "EngineSays",
    "render",
]

import enum
from dataclasses import dataclass


class DevboxError(Exception):
    """Base class: `str(error)` is the one line shown to the user; `tail`, the last lines of output that
    explain it (a failed build's, a service's), shown under it."""

    exit_code = 1

    def __init__(self, message: str = "", tail: list[str] | tuple[str, ...] = ()):
        super().__init__(message)
        self.tail = list(tail)


TAIL_SHOWN = 10  # lines of an error's tail shown under it


def render(error: DevboxError) -> list[str]:
    """An error as the user sees it, by the CLI and by the loop alike: its line, then its tail."""
    return [str(error), *(f"  | {line}" for line in error.tail[-TAIL_SHOWN:])]


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in a config file, located to a line and column (1-based, 0 when unknown)."""

    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        # one line, whatever the file holds: control characters (a key of "\r") are shown escaped
        message = "".join(c if c.isprintable() else repr(c)[1:-1] for c in self.message)
        if self.line:
            return f"{self.file}:{self.line}:{self.column}: {message}"
        return f"{self.file}: {message}"


class ConfigError(DevboxError):
    """A config file that cannot be used; carries every problem found, not only the first."""

    exit_code = 2

    def __init__(self, problems: list[ConfigProblem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class UsageError(DevboxError):
    exit_code = 2


class DockerUnavailable(DevboxError):
    """The engine does not answer: not running, asleep, restarting, or the endpoint is wrong."""


class ImageError(DevboxError):
    pass


class PortInUse(DevboxError):
    pass


class ContainerError(DevboxError):
    pass


class ContainerGone(ContainerError):
    """The project's container is not running any more (stopped, killed or removed behind devbox's back)."""


class EngineSays(enum.Enum):
    """What an engine's error message means, where devbox does something about it."""

    CONTAINER_GONE = "the container is not running"
    PORT_TAKEN = "a published port is taken"
    NO_SLEEP = "the image has no sleep"
    OTHER = "other"


# The one table of engine messages devbox reads: (words in the message, what they mean). The engine has
# no codes for these; its messages are stable across the versions seen (20.10 to 27).
ENGINE_MESSAGES: tuple[tuple[tuple[str, ...], EngineSays], ...] = (
    (("is not running",), EngineSays.CONTAINER_GONE),
    (("is restarting",), EngineSays.CONTAINER_GONE),
    (("is paused",), EngineSays.CONTAINER_GONE),
    (("already allocated",), EngineSays.PORT_TAKEN),
    (("address already in use",), EngineSays.PORT_TAKEN),
    (("executable file not found", "sleep"), EngineSays.NO_SLEEP),
)


def engine_says(error: BaseException) -> EngineSays:
    text = str(getattr(error, "explanation", None) or error)
    for words, meaning in ENGINE_MESSAGES:
        if all(word in text for word in words):
            return meaning
    if getattr(error, "status_code", None) == 404 and "container" in text.lower():
        return EngineSays.CONTAINER_GONE
    return EngineSays.OTHER


def docker_reason(error: BaseException) -> str:
    """A short reason from a Docker SDK or connection error, for the end of a one-line message."""
    text = getattr(error, "explanation", None) or str(error)
    for known in ("No such file or directory", "Connection refused", "Permission denied", "timed out",
                  "Connection aborted", "Connection reset"):
        if known in text:
            return known.lower()
    text = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return text[:160]


def docker_error(error: BaseException, doing: str) -> DevboxError:
    """The one place where Docker SDK and connection errors become devbox errors (`raise ... from e`).

    `doing` says what failed, e.g. "cannot start the server". Connection failures (from `requests`
    as well as the SDK) mean the engine went away; 404 and "is not running" mean the container did.
    """
    if isinstance(error, DevboxError):
        return error
    import docker.errors
    import requests.exceptions

    if isinstance(error, (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError,
                          TimeoutError)) or (isinstance(error, docker.errors.DockerException)
                                             and not isinstance(error, docker.errors.APIError)):
        return DockerUnavailable(f"{doing}: the Docker engine does not answer ({docker_reason(error)})")
    if isinstance(error, docker.errors.APIError):
        if engine_says(error) is EngineSays.CONTAINER_GONE:
            return ContainerGone(f"{doing}: the container is not running ({docker_reason(error)})")
        return ContainerError(f"{doing}: {docker_reason(error)}")
    return ContainerError(f"{doing}: {type(error).__name__}: {docker_reason(error)}")
