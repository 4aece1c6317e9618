"""What to do when the server exits: a pure decision on what is known at that moment, so that the
loop only acts, and the fast test layer can drive every case without an engine.

- exit 3 from a ready server is Django's and Werkzeug's "restart me": at once, with a backoff when it
  keeps coming right after each start;
- an exit before the first ready, while the Compose services this `up` started may still be starting,
  is tried again with a backoff until `ready.timeout`;
- a preloaded server that exits before it was ready is started once cold, to tell whether preloading
  made it fail;
- anything else is a crash: its code and last lines, then a wait for the next change.
"""

from __future__ import annotations

__all__ = ["ExitFacts", "ExitAction", "ExitDecision", "ExitHistory", "decide_exit"]

import enum
from dataclasses import dataclass

QUICK_EXIT = 2.0  # seconds: an exit 3 sooner than this after the start counts towards the backoff
BACKOFF_MAX = 10.0


class ExitAction(enum.Enum):
    NOTHING = "nothing"  # a change in the same batch restarts it
    RESTART = "restart"  # now
    RESTART_LATER = "restart later"  # after `delay`, as a new start
    RETRY_LATER = "retry later"  # after `delay`, the same start again (timed from its cause)
    COLD_CHECK = "cold check"  # the same start once more, cold
    CRASH = "crash"  # say so; wait for a change


@dataclass(frozen=True)
class ExitFacts:
    code: int | None
    ready: bool  # this server answered its ready check
    preloaded: bool  # it was forked by the preloader
    preloading: bool  # the launcher preloads (so a cold check can tell)
    change_follows: bool  # a change came in the same batch
    ran_for: float  # seconds since its start
    since_services: float | None  # seconds since this `up` started Compose services (None: it started none)
    ever_ready: bool  # some server of this `up` was ready
    ready_timeout: float


@dataclass(frozen=True)
class ExitDecision:
    action: ExitAction
    delay: float = 0.0
    line: str = ""  # what the user is told ("" for nothing)


@dataclass
class ExitHistory:
    """What the backoffs count: exits 3 in a row right after starting; early crashes while services start."""

    quick_exits: int = 0
    early_crashes: int = 0


def decide_exit(facts: ExitFacts, history: ExitHistory) -> ExitDecision:
    code = facts.code
    if code == 3 and facts.ready:
        if facts.change_follows:
            return ExitDecision(ExitAction.NOTHING)
        history.quick_exits = history.quick_exits + 1 if facts.ran_for < QUICK_EXIT else 0
        if history.quick_exits >= 2:
            delay = min(BACKOFF_MAX, 0.5 * 2 ** (history.quick_exits - 2))
            return ExitDecision(ExitAction.RESTART_LATER, delay,
                                f"server exited 3 (restart me) {history.quick_exits} times in a row right after "
                                f"starting; restarting in {delay:g}s")
        return ExitDecision(ExitAction.RESTART)
    if facts.change_follows:
        return ExitDecision(ExitAction.CRASH)  # said as a crash; the change starts it again
    settling = facts.since_services is not None and facts.since_services < facts.ready_timeout
    if not facts.ready and not facts.ever_ready and settling:
        history.early_crashes += 1
        delay = min(BACKOFF_MAX / 2, 0.25 * 2 ** (history.early_crashes - 1))
        line = "" if history.early_crashes > 1 else (  # one line: the retries that follow are the same story
            f"server exited with code {code} before it was ever ready, {facts.since_services:.1f}s after its "
            f"compose services started (they may not accept connections yet); starting it again until it is "
            f"ready, for up to {facts.ready_timeout:g}s (ready.timeout)")
        return ExitDecision(ExitAction.RETRY_LATER, delay, line)
    if facts.preloaded and not facts.ready and facts.preloading:
        return ExitDecision(ExitAction.COLD_CHECK, 0.0, f"preload: the server exited with code {code} before it "
                                                        "was ready; starting it once cold")
    return ExitDecision(ExitAction.CRASH)
