"""Hold a rebuild until its inputs settle: one rebuild per burst.

A package manager writes its files seconds apart (`uv add` writes pyproject.toml, resolves, then writes
uv.lock; `poetry add` likewise): a rebuild at the first file would build an image without the second,
and the second would build it again. A change that the rules rebuild for is therefore held, with every
change after it, until nothing has changed for SETTLE seconds; then the whole set is acted on once.
The loop owns the timer; this only keeps the set and says which timer is the last one.
"""

from __future__ import annotations

__all__ = ["BuildHold", "SETTLE"]

from dataclasses import dataclass, field

SETTLE = 2.0  # seconds of quiet before a rebuild starts


@dataclass
class BuildHold:
    paths: set[str] = field(default_factory=set)
    seen: float | None = None  # when the first held change was seen (the ready line counts from it)
    token: int = 0  # the newest timer's; an older timer that fires finds the hold moved on

    @property
    def active(self) -> bool:
        return bool(self.paths)

    def add(self, paths: set[str], seen: float) -> int:
        """Hold these changes too; the token of the timer to start now (any older one no longer counts)."""
        self.paths |= paths
        self.seen = seen if self.seen is None else min(self.seen, seen)
        self.token += 1
        return self.token

    def release(self, token: int) -> tuple[set[str], float] | None:
        """The held changes, if `token` is the newest timer's (nothing changed since it started)."""
        if token != self.token or not self.paths:
            return None
        paths, seen = self.paths, self.seen
        self.paths, self.seen = set(), None
        assert seen is not None
        return paths, seen
