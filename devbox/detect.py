"""Read a project the way a teammate would, for `devbox init`: its framework and where the app lives,
its Compose service, its Dockerfile, its Python version, its port. Each finding keeps its reason."""

from __future__ import annotations

__all__ = ["Detected", "detect"]

import os
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path

from .config import COMPOSE_FILES, ComposeFiles
from .dockerfile import Dockerfile, clean_source, is_dependency_file, read_dockerfile

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
    dockerfile: str | None = None  # relative to the project folder
    context: str = "."  # the build's context, relative to the project folder
    target: str | None = None
    requirements: str | None = None
    workdir: str = "/app"  # where the server runs
    code: str = "."  # the host folder (relative) whose files the server runs ...
    code_at: str = "/app"  # ... and where it is mounted in the container
    mount: bool = True  # devbox mounts `code` at `code_at` (not the Compose service's own mounts)
    other_mounts: list[str] = field(default_factory=list)  # the service's own, kept beside devbox's code mount
    image_entrypoint: list[str] = field(default_factory=list)  # the image's ENTRYPOINT, which devbox does not run
    setup: list[str] = field(default_factory=list)
    rules: list[tuple[str, str, str]] = field(default_factory=list)  # (pattern, action, why)
    reasons: list[str] = field(default_factory=list)
    app_file: Path | None = None  # the framework's file the command names
    app_command: str = ""  # the command, with {path} or {module} for where app_file is seen from workdir
    app_at: str | None = None  # where the container has app_file


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


def _names_django(folder: Path) -> bool:
    """Whether the project's dependency files name Django."""
    for path in [*folder.glob("requirements*.txt"), *folder.glob("*/requirements*.txt"),
                 folder / "pyproject.toml", folder / "Pipfile", *folder.glob("*/pyproject.toml")]:
        if re.search(r"^\s*[\"']?django\b", _read(path), re.M | re.I):
            return True
    return False


def _django(folder: Path, files: list[Path], found: Detected) -> bool:
    manages = [p for p in files if p.name == "manage.py"]
    manage = next((p for p in manages if "DJANGO_SETTINGS_MODULE" in _read(p)), None)
    why = ""
    if manage is None and manages:
        settings = next((p for p in files if p.name == "settings.py" and manages[0].parent in p.parents), None)
        if settings is not None or _names_django(folder):
            manage = manages[0]
            if settings is not None:
                module = _module(settings, manage.parent)
                found.env["DJANGO_SETTINGS_MODULE"] = module
                why = f" (its settings: {module}, set as DJANGO_SETTINGS_MODULE)"
            else:
                why = " (Django in the requirements)"
    if manage is None:
        return False
    found.framework, found.port, found.app_file = "django", DEFAULT_PORTS["django"], manage
    found.app_command = "python {path} runserver 0.0.0.0:8000 --noreload"
    found.reasons.append(f"Django: {manage.relative_to(folder).as_posix()}{why}")
    return True


def _framework(folder: Path, found: Detected) -> None:
    files = _python_files(folder)
    if _django(folder, files, found):
        return
    for path in files:
        match = re.search(r"^(\w+)\s*=\s*FastAPI\(", _read(path), re.M)
        if match:
            found.framework, found.port, found.ready_path = "fastapi", DEFAULT_PORTS["fastapi"], "/docs"
            found.app_file, found.app_command = path, f"uvicorn {{module}}:{match.group(1)} --host 0.0.0.0 --port 8000"
            found.reasons.append(f"FastAPI: `{match.group(1)} = FastAPI(` in {path.relative_to(folder)}")
            return
    for path in files:
        text = _read(path)
        if re.search(r"\bFlask\(__name__", text) or re.search(r"^def create_app\(", text, re.M):
            if path.name != "__init__.py" and not re.search(r"^(app|application)\s*=\s*Flask\(", text, re.M) and \
                    (path.parent / "__init__.py").is_file():
                path = path.parent / "__init__.py"  # create_app in the package
            found.framework, found.port, found.app_file = "flask", DEFAULT_PORTS["flask"], path
            # --debug keeps the in-browser debugger; --no-reload: devbox is the reloader, from outside
            found.app_command = "flask run --debug --no-reload --host 0.0.0.0 --port 5000"
            found.reasons.append(f"Flask: the app is in {path.relative_to(folder)}")
            return


def _place_command(folder: Path, found: Detected) -> None:
    """The command as seen from the workdir: the framework's file where the container has it."""
    if found.app_file is None:
        return
    inside = found.app_at or found.app_file.relative_to(folder).as_posix()  # not placed: from the project, at best
    workdir = found.workdir.rstrip("/") + "/"
    path = inside[len(workdir):] if inside.startswith(workdir) else inside
    module = path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
    found.command = found.app_command.format(path=path, module=module)
    if found.framework == "flask":
        found.env["FLASK_APP"] = module
        found.reasons.append(f"Flask: so FLASK_APP={module}")
    elif found.framework == "fastapi":
        found.reasons.append(f"FastAPI: so {module} (the app is {inside} in the container, run from {found.workdir})")


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


def _relative(path: Path, folder: Path) -> str:
    try:
        return path.resolve().relative_to(folder.resolve()).as_posix() or "."
    except ValueError:
        return str(path)


def _dockerfile(folder: Path, found: Detected, context: Path, dockerfile: str = "Dockerfile",
                target: str | None = None) -> Dockerfile | None:
    """The build's Dockerfile: where it puts the code, what it runs first, what it installs from."""
    path = context / dockerfile
    if target is None:
        stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", _read(path), re.M | re.I)
        target = next((s for s in stages if s.lower() in ("dev", "development", "develop")), None)
    parsed = read_dockerfile(path, target)
    if parsed is None:
        return None
    found.dockerfile, found.context, found.target = _relative(path, folder), _relative(context, folder), target
    if found.compose_service is None:
        found.reasons.append(f"{found.dockerfile}: devbox builds it" + (f" (target {target})" if target else ""))
    if parsed.workdir != "/":
        found.workdir = parsed.workdir
    found.image_entrypoint = parsed.entrypoint
    return parsed


def _compose(folder: Path, found: Detected) -> dict | None:
    """The Compose service devbox runs as its own (resolved by Compose, overrides and all), if the project
    has one with a build."""
    from .compose import find_compose
    from .config import read_env_file
    from .errors import DevboxError

    where = ComposeFiles(folder)
    if not any((folder / n).is_file() for n in COMPOSE_FILES) and \
            not (os.environ.get("COMPOSE_FILE") or read_env_file(folder / ".env").get("COMPOSE_FILE")):
        return None
    try:
        services = find_compose().config(where, profiles=("*",)).get("services") or {}
    except DevboxError as e:
        found.reasons.append(f"the Compose files not read ({e})")
        return None
    built = [name for name, s in services.items() if s.get("build")]
    candidates = [n for n in PREFERRED_SERVICES if n in built] + built
    if not candidates:
        return None
    name = candidates[0]
    found.compose_file, found.compose_service = str(where), name
    service = services[name]
    ports = [p for p in service.get("ports") or [] if p.get("published")]
    if ports:
        found.port = int(ports[0]["target"])
    found.reasons.append(f"{where}: devbox runs its service `{name}` (its build, env, ports, volumes, "
                         f"depends_on)" + (f"; port {found.port} from it" if ports else ""))
    return service


def _code_mount(folder: Path, found: Detected, service: dict | None, parsed: Dockerfile | None) -> None:
    """Where the code is in the container, as the project itself puts it there: the service's own bind
    mounts of project folders, else the folder the Dockerfile copies the app from, mounted where it copies
    it (`COPY ./app /app/app`: ./backend/app at /app/app), else the project folder at the workdir. And
    where the framework's file is then (`app_at`), through a mount or the image's copy."""
    app = found.app_file.resolve() if found.app_file is not None else None
    root = folder.resolve()
    binds = [v for v in (service or {}).get("volumes") or [] if v.get("type") == "bind"]
    own = [v for v in binds if Path(v["source"]).resolve() == root or root in Path(v["source"]).resolve().parents]
    context = (folder / found.context).resolve()
    if own:  # the service mounts the code itself: devbox keeps its mounts
        bind = next((v for v in sorted(own, key=lambda v: -len(v["source"]))
                     if app is not None and Path(v["source"]).resolve() in app.parents), own[0])
        found.code, found.code_at, found.mount = _relative(Path(bind["source"]), folder), bind["target"].rstrip("/") or "/", False
        if not (service or {}).get("working_dir") and parsed is None:
            found.workdir = found.code_at
        shown = ", ".join(f"{_relative(Path(v['source']), folder)} at {v['target']}" for v in own)
        found.reasons.append(f"the code: the service mounts {shown}")
    elif parsed is not None:
        source, dest = _copy_of(parsed, app, context)
        found.code, found.code_at = _relative(context / source, folder), dest or found.workdir
        for bind in binds:  # `mounts:` replaces the service's list: the ones it had stay in it
            shown = _relative(Path(bind["source"]), folder)
            shown = shown if shown.startswith("/") else "./" + shown.removeprefix("./")
            found.other_mounts.append(f"{shown}:{bind['target']}" + (":ro" if bind.get("read_only") else ""))
        if found.code != "." or found.code_at != "/app":
            copy = f"COPY {source} {dest}" if dest else "no COPY of the code"
            found.reasons.append(f"the code: {found.code} mounted at {found.code_at}, where {found.dockerfile} "
                                 f"has it ({copy})")
    else:
        found.code, found.code_at = ".", found.workdir
    if (service or {}).get("working_dir"):
        found.workdir = service["working_dir"]
    if app is not None:
        found.app_at = _inside(app, folder, found, binds, parsed, context)
    if found.workdir != "/app":
        found.reasons.append(f"workdir {found.workdir}" + (" (the Dockerfile's WORKDIR)" if parsed and
                                                           parsed.workdir == found.workdir else ""))


def _copy_of(parsed: Dockerfile, app: Path | None, context: Path) -> tuple[str, str | None]:
    """The widest folder of the context that the image's stage copies as a whole with the app in it, and
    where: ("app", "/app/app") for `COPY ./app /app/app`; (".", code_dest) when none is found."""
    relative = None
    if app is not None and context in app.parents:
        relative = app.relative_to(context).as_posix()
    found: list[tuple[str, str]] = []
    for copy in parsed.copies:
        if not copy.final or not copy.dest:
            continue
        for source in map(clean_source, copy.sources):
            if source == "." or (relative is not None and relative.startswith(source + "/")):
                found.append((source, copy.dest.rstrip("/") or "/"))
    if not found:
        return ".", parsed.code_dest
    return min(found, key=lambda f: (0 if f[0] == "." else len(f[0].split("/"))))


def _inside(app: Path, folder: Path, found: Detected, binds: list[dict], parsed: Dockerfile | None,
            context: Path) -> str | None:
    """The framework's file as a container path: through the code mount, one of the service's mounts, or
    the image's copy of it; None if the container does not have it."""
    mounts = [(Path(v["source"]).resolve(), v["target"]) for v in binds]
    if found.mount:
        mounts.append(((folder / found.code).resolve(), found.code_at))
    for source, target in sorted(mounts, key=lambda m: -len(str(m[0]))):
        if source == app or source in app.parents:
            return posixpath.join(target, app.relative_to(source).as_posix())
    if parsed is not None and context in app.parents:
        places = parsed.copied_to(app.relative_to(context).as_posix())
        if places:
            return places[-1]
    return None


def _rules(folder: Path, found: Detected, parsed: Dockerfile | None) -> None:
    """The watch rules a team needs: the Dockerfile and the dependency files the image installs from
    (`requirements/`, uv.lock, poetry.lock, Pipfile.lock, ...) rebuild it; dependency files that setup
    installs from rerun setup."""
    prefix = "" if found.context == "." else found.context.rstrip("/") + "/"
    if parsed is not None:
        found.rules.append((found.dockerfile or "Dockerfile", "rebuild", "the image is built from it"))
        context = folder / found.context
        patterns: dict[str, None] = {}
        for path in sorted(_dependency_files(context)):
            relative = path.relative_to(context).as_posix()
            if parsed.uses(relative) is None and not parsed.names(relative):
                continue
            parent = posixpath.dirname(relative)
            # a requirements/ folder: a new file in it counts too (`-r base.txt` from production.txt)
            grouped = posixpath.basename(parent).startswith("requirements")
            patterns[f"{prefix}{parent}/**" if grouped else prefix + relative] = None
        found.rules += [(pattern, "rebuild", f"{found.dockerfile} installs from it") for pattern in patterns]
    elif found.requirements:
        found.rules.append(("requirements*.txt", "setup", "setup installs from it"))
    if any("migrate" in command for command in found.setup) and found.framework == "django":
        found.rules.append(("**/migrations/*.py", "setup", "a new migration is applied by setup"))


def _dependency_files(context: Path) -> list[Path]:
    """The dependency files of the build context, in it and in its folders two deep (`requirements/`)."""
    out = []
    for root, dirs, files in os.walk(context):
        level = len(Path(root).relative_to(context).parts)
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.startswith(".")] if level < 2 else []
        out += [Path(root) / f for f in files if is_dependency_file((Path(root) / f).relative_to(context).as_posix())]
    return out


def _entrypoint_setup(folder: Path, found: Detected) -> None:
    """What the image's entrypoint script does before the server that a dev container needs once: the
    database migrations (devbox waits for the services itself)."""
    if not found.image_entrypoint or found.framework != "django":
        return
    script = folder / found.context / posixpath.basename(found.image_entrypoint[0])
    if re.search(r"manage\.py\s+migrate\b", _read(script)):
        found.setup.append("python manage.py migrate")
        found.reasons.append(f"{_relative(script, folder)} runs `manage.py migrate`: setup does, once per container")


def detect(folder: Path) -> Detected:
    found = Detected()
    _framework(folder, found)
    if found.framework == "generic":
        found.reasons.append("no Django, Flask or FastAPI app found: a generic server")
    service = _compose(folder, found)
    parsed = None
    if service is not None:
        build = service.get("build") or {}
        context = Path(build.get("context") or folder)
        parsed = _dockerfile(folder, found, context, build.get("dockerfile") or "Dockerfile", build.get("target"))
        if service.get("entrypoint") is not None:
            found.image_entrypoint = []  # the service sets its own: devbox takes it from there
    elif (folder / "Dockerfile").is_file():
        parsed = _dockerfile(folder, found, folder)
    if parsed is None:
        _python_version(folder, found)
    _code_mount(folder, found, service, parsed)
    _place_command(folder, found)
    if found.port != DEFAULT_PORTS.get(found.framework, 8000):
        found.command = re.sub(r"(0\.0\.0\.0:|--port )\d+", lambda m: m.group(1) + str(found.port), found.command)
    requirements = next((n for n in ("requirements-dev.txt", "requirements.txt") if (folder / n).is_file()), None)
    if requirements and parsed is None:
        found.requirements = requirements
        found.setup.append(f"pip install -r {requirements}")
    _entrypoint_setup(folder, found)
    _rules(folder, found, parsed)
    return found
