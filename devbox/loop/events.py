"""What the loop's queue carries: one type per kind of event, with typed states, never bare strings.

Other threads (the watcher, output pumps, ready probes, the engine's event stream, the control socket,
signal handlers, timers) only put these on the queue; the loop alone acts on them.
"""

from __future__ import annotations

__all__ = ["Changed", "Exited", "Probed", "Stop", "EngineAction", "EngineEvent", "ContainerLost", "Retry", "Settled",
           "Failed", "Verb", "Control", "StoppedBy", "Event", "Interrupted"]

import enum
from dataclasses import dataclass, field
from typing import Any, Callable

from ..ready import ProbeOutcome
from ..server import ServerProcess


@dataclass
class Changed:
    paths: set[str]
    seen: float


@dataclass
class Exited:
    proc: ServerProcess


@dataclass
class Probed:
    proc: ServerProcess
    outcome: ProbeOutcome
    at: float
    error: str = ""  # for ProbeOutcome.FAILED: what broke


@dataclass
class Stop:
    signal: str  # the signal's name (SIGINT, SIGTERM, SIGHUP)
    count: int = 0  # signals counted when it was sent: any signal after it hurries the stop


class EngineAction(enum.Enum):
    """What the engine's event stream says of devbox's container (only what the loop acts on)."""

    DIED = "die"
    DESTROYED = "destroy"
    ENGINE_LOST = "engine-lost"  # the stream itself broke
    OTHER = "other"

    @classmethod
    def of(cls, action: str) -> "EngineAction":
        return next((a for a in cls if a.value == action), cls.OTHER)


@dataclass
class EngineEvent:
    container_id: str
    action: EngineAction


@dataclass
class ContainerLost:
    """The loop found, itself, that the container or the engine went away (a start could not exec)."""

    container_id: str


@dataclass
class Retry:
    generation: int  # the start this retry was planned after; stale once another start happened
    reason: str = "restart after exit 3"
    seen: float | None = None  # when its cause was seen (None: when the retry is due)


@dataclass
class Settled:
    token: int  # the build hold's timer (buildhold.py): the held changes act now if it is the newest


@dataclass
class Failed:
    message: str  # a helper thread died: `up` ends with this line, exit 1


class Verb(enum.Enum):
    """What another devbox command asks of the running `up` (through control.py)."""

    DOWN = "down"
    RESTART = "restart"
    REBUILD = "rebuild"
    STATUS = "status"


@dataclass
class Control:
    verb: Verb | str  # a string: a verb this devbox does not know (a newer client's), answered as such
    reply: Callable[[dict[str, Any]], None] = field(repr=False)

    @classmethod
    def parse(cls, verb: str, reply: Callable[[dict[str, Any]], None]) -> "Control":
        return cls(next((v for v in Verb if v.value == verb), verb), reply)


class StoppedBy(enum.Enum):
    SIGNAL = "signal"  # Ctrl-C, SIGTERM, SIGHUP: the container is stopped, kept for the next `up`
    DOWN = "down"  # `devbox down`: it removes the container


Event = Changed | Exited | Probed | Stop | EngineEvent | ContainerLost | Retry | Settled | Failed | Control


class Interrupted(Exception):
    """A signal (or `devbox down`) arrived while a long step was under way."""
