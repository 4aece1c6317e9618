"""`devbox init`: write a starter devbox.yaml from the templates shipped in the package."""

from __future__ import annotations

__all__ = ["TEMPLATES", "detect_template", "write_starter"]

import importlib.resources
import json
from pathlib import Path

from .config import CONFIG_NAME, LOCAL_NAME
from .errors import UsageError
from .schema import json_schema

TEMPLATES = ("django", "flask", "fastapi", "generic")
SCHEMA_NAME = "devbox.schema.json"


def template_text(name: str) -> str:
    if name not in TEMPLATES:
        raise UsageError(f"no template '{name}': choose one of {', '.join(TEMPLATES)}")
    return importlib.resources.files("devbox.templates").joinpath(f"{name}.yaml").read_text()


def _mentions(folder: Path, word: str) -> bool:
    for name in ("requirements.txt", "requirements-dev.txt", "pyproject.toml", "Pipfile", "setup.cfg"):
        path = folder / name
        if path.is_file() and word in path.read_text(errors="replace").lower():
            return True
    return False


def detect_template(folder: Path) -> str:
    """Django if there is a manage.py, else FastAPI or Flask if the requirements name them, else generic."""
    if (folder / "manage.py").is_file() or _mentions(folder, "django"):
        return "django"
    for name in ("fastapi", "flask"):
        if _mentions(folder, name):
            return name
    return "generic"


def write_starter(folder: Path, template: str | None, force: bool) -> tuple[str, list[str]]:
    """Write devbox.yaml (and the schema it points editors at); the template used and the files written."""
    target = folder / CONFIG_NAME
    if target.exists() and not force:
        raise UsageError(f"{target} already exists: edit it, or run `devbox init --force` to overwrite it")
    name = template or detect_template(folder)
    target.write_text(template_text(name))
    (folder / SCHEMA_NAME).write_text(json.dumps(json_schema(), indent=2) + "\n")
    written = [CONFIG_NAME, SCHEMA_NAME]
    gitignore = folder / ".gitignore"
    lines = gitignore.read_text().splitlines() if gitignore.is_file() else []
    if LOCAL_NAME not in (line.strip().lstrip("/") for line in lines):
        prefix = "" if not lines or gitignore.read_text().endswith("\n") else "\n"
        with gitignore.open("a") as f:
            f.write(f"{prefix}{LOCAL_NAME}\n")
        written.append(".gitignore")
    return name, written
