"""Read a project the way a teammate would, for `devbox init`: its framework and where the app lives,
its Compose service, its Dockerfile, its Python version, its port. Each finding keeps its reason."""

from __future__ import annotations

__all__ = ["Detected", "detect"]

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .config import COMPOSE_FILES

DEFAULT_PORTS = {"django": 8000, "fastapi": 8000, "flask": 5000, "generic": 8000}
PREFERRED_SERVICES = ("web", "app", "api", "backend", "server", "django", "flask", "fastapi")
SKIP_DIRS = {".git", "node_modules", "__pycache__", ".venv", "venv", "env", ".tox", "site-packages", "dist", "build"}


@dataclass
class Detected:
    framework: str = "generic"
    command: str = "python -m http.server 8000"
    port: int = 8000
    env: dict[str, str] = field(default_factory=dict)
    ready_path: str = "/"
    python: str = "3.12"
    compose_file: str | None = None
    compose_service: str | None = None
    dockerfile: str | None = None
    target: str | None = None
    requirements: str | None = None
    reasons: list[str] = field(default_factory=list)


def _python_files(folder: Path, depth: int = 3) -> list[Path]:
    out = []
    for root, dirs, files in os.walk(folder):
        level = len(Path(root).relative_to(folder).parts)
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.startswith(".")] if level < depth else []
        out += [Path(root) / f for f in sorted(files) if f.endswith(".py")]
    return sorted(out, key=lambda p: (len(p.relative_to(folder).parts), str(p)))


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _module(path: Path, folder: Path) -> str:
    parts = list(path.relative_to(folder).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _framework(folder: Path, found: Detected) -> None:
    files = _python_files(folder)
    manage = next((p for p in files if p.name == "manage.py" and "DJANGO_SETTINGS_MODULE" in _read(p)), None)
    if manage is not None:
        where = manage.relative_to(folder).as_posix()
        found.framework, found.port = "django", DEFAULT_PORTS["django"]
        found.command = f"python {where} runserver 0.0.0.0:8000 --noreload"
        found.reasons.append(f"Django: {where}")
        return
    for path in files:
        match = re.search(r"^(\w+)\s*=\s*FastAPI\(", _read(path), re.M)
        if match:
            app = f"{_module(path, folder)}:{match.group(1)}"
            found.framework, found.port, found.ready_path = "fastapi", DEFAULT_PORTS["fastapi"], "/docs"
            found.command = f"uvicorn {app} --host 0.0.0.0 --port 8000"
            found.reasons.append(f"FastAPI: `{match.group(1)} = FastAPI(` in {path.relative_to(folder)}, so {app}")
            return
    for path in files:
        text = _read(path)
        if re.search(r"\bFlask\(__name__", text) or re.search(r"^def create_app\(", text, re.M):
            module = _module(path, folder)
            if path.name != "__init__.py" and not re.search(r"^(app|application)\s*=\s*Flask\(", text, re.M) and \
                    (path.parent / "__init__.py").is_file():
                module = _module(path.parent / "__init__.py", folder)  # create_app in the package
            found.framework, found.port = "flask", DEFAULT_PORTS["flask"]
            found.env["FLASK_APP"] = module
            # --debug keeps the in-browser debugger; --no-reload: devbox is the reloader, from outside
            found.command = "flask run --debug --no-reload --host 0.0.0.0 --port 5000"
            found.reasons.append(f"Flask: the app is in {path.relative_to(folder)}, so FLASK_APP={module}")
            return


def _python_version(folder: Path, found: Detected) -> None:
    pyproject = _read(folder / "pyproject.toml")
    match = re.search(r'requires-python\s*=\s*"[^"\d]*(3\.\d+)', pyproject)
    if match:
        found.python = match.group(1)
        found.reasons.append(f"Python {found.python}: requires-python in pyproject.toml")
        return
    version = _read(folder / ".python-version").strip()
    if re.match(r"3\.\d+", version):
        found.python = ".".join(version.split(".")[:2])
        found.reasons.append(f"Python {found.python}: .python-version")


def _dockerfile(folder: Path, found: Detected) -> None:
    path = folder / "Dockerfile"
    if not path.is_file():
        return
    text = _read(path)
    found.dockerfile = "Dockerfile"
    stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, re.M | re.I)
    found.target = next((s for s in stages if s.lower() in ("dev", "development", "develop")), None)
    found.reasons.append("a Dockerfile: devbox builds it" + (f" (target {found.target})" if found.target else ""))


def _compose(folder: Path, found: Detected) -> None:
    file = next((folder / n for n in COMPOSE_FILES if (folder / n).is_file()), None)
    if file is None:
        return
    from .compose import find_compose
    from .errors import DevboxError

    try:
        services = find_compose().config(file, profiles=("*",)).get("services") or {}
    except DevboxError as e:
        found.reasons.append(f"{file.name} not read ({e})")
        return
    built = [name for name, s in services.items() if s.get("build")]
    candidates = [n for n in PREFERRED_SERVICES if n in built] + built
    if not candidates:
        return
    name = candidates[0]
    found.compose_file, found.compose_service = file.name, name
    ports = [p for p in services[name].get("ports") or [] if p.get("published")]
    if ports:
        found.port = int(ports[0]["target"])
        found.command = re.sub(r"(0\.0\.0\.0:|--port )\d+", lambda m: m.group(1) + str(found.port), found.command)
    found.reasons.append(f"{file.name}: devbox runs its service `{name}` (its build, env, ports, volumes, "
                         f"depends_on)" + (f"; port {found.port} from it" if ports else ""))


def detect(folder: Path) -> Detected:
    found = Detected()
    _framework(folder, found)
    if found.framework == "generic":
        found.reasons.append("no Django, Flask or FastAPI app found: a generic server")
    _compose(folder, found)
    if found.compose_service is None:
        _dockerfile(folder, found)
        if found.dockerfile is None:
            _python_version(folder, found)
    requirements = next((n for n in ("requirements-dev.txt", "requirements.txt") if (folder / n).is_file()), None)
    if requirements and found.compose_service is None and found.dockerfile is None:
        found.requirements = requirements
    return found
