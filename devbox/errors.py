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
    "UsageError",
]

from dataclasses import dataclass


class DevboxError(Exception):
    """Base class: `str(error)` is the one line shown to the user."""

    exit_code = 1


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in a config file, located to a line and column (1-based, 0 when unknown)."""

    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        if self.line:
            return f"{self.file}:{self.line}:{self.column}: {self.message}"
        return f"{self.file}: {self.message}"


class ConfigError(DevboxError):
    """A config file that cannot be used; carries every problem found, not only the first."""

    exit_code = 2

    def __init__(self, problems: list[ConfigProblem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class UsageError(DevboxError):
    exit_code = 2


class DockerUnavailable(DevboxError):
    pass


class ImageError(DevboxError):
    pass


class PortInUse(DevboxError):
    pass


class ContainerError(DevboxError):
    pass
