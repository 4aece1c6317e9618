"""`devbox init`: write a devbox.yaml from what the project already says (its Compose file, Dockerfile,
framework, Python version), or from a template shipped in the package (`--template`)."""

from __future__ import annotations

__all__ = ["TEMPLATES", "write_starter", "render"]

import importlib.resources
import json
from pathlib import Path

from .config import CONFIG_NAME, LOCAL_NAME, sanitise_name
from .detect import Detected, detect
from .errors import UsageError
from .schema import json_schema

TEMPLATES = ("django", "flask", "fastapi", "generic")
SCHEMA_NAME = "devbox.schema.json"


def template_text(name: str) -> str:
    if name not in TEMPLATES:
        raise UsageError(f"no template '{name}': choose one of {', '.join(TEMPLATES)}")
    return importlib.resources.files("devbox.templates").joinpath(f"{name}.yaml").read_text()


def _with_name(text: str, project: str) -> str:
    """The template with `name:` first after its comments: the project's identity on this machine."""
    lines = text.splitlines(keepends=True)
    at = next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))
    entry = (f"# the container is devbox-{project}; another project on this machine needs another name\n"
             f"name: {project}\n")
    return "".join(lines[:at]) + entry + "".join(lines[at:])


def render(found: Detected, project: str) -> str:
    """devbox.yaml from a project's findings, each reason a comment."""
    lines = ["# yaml-language-server: $schema=devbox.schema.json",
             f"# devbox.yaml for a {found.framework} project, written by `devbox init` from what it found:",
             *[f"#   {reason}" for reason in found.reasons],
             "# Reference: `devbox schema`, README \"Config reference\".",
             f"# the container is devbox-{project}; another project on this machine needs another name",
             f"name: {project}"]
    if found.compose_service:
        file = "" if found.compose_file == "compose.yaml" else f"file: {found.compose_file}, "
        lines.append(f"compose: {{{file}service: {found.compose_service}}}   # its build, env, ports, volumes, "
                     "depends_on; keys here win")
    elif found.dockerfile:
        context = found.context if found.context != "." else "."
        dockerfile = found.dockerfile.removeprefix(context.rstrip("/") + "/") if context != "." else found.dockerfile
        extra = (f", dockerfile: {dockerfile}" if dockerfile != "Dockerfile" else "") + \
            (f", target: {found.target}" if found.target else "")
        lines.append(f"build: {{context: {context}{extra}}}")
    else:
        lines += [f"image: python:{found.python}-slim", "volumes:", "  - pip-cache:/root/.cache/pip"]
    if not found.compose_service:
        lines += ["ports:", f'  - "{found.port}:{found.port}"']
    if found.workdir != "/app":
        lines.append(f"workdir: {found.workdir}")
    if found.mount and (found.code != "." or found.code_at != found.workdir):
        lines += ["mounts:   # the code, where the image has it: edits reach the server without a rebuild",
                  f"  - ./{found.code.removeprefix('./')}:{found.code_at}" if found.code != "." else f"  - .:{found.code_at}"]
        lines += [f"  - {m}" for m in found.other_mounts]
    if found.env:
        lines += ["env:", *[f"  {k}: {v}" for k, v in found.env.items()]]
    if found.image_entrypoint:
        shown = json.dumps(found.image_entrypoint)
        lines += [f"# the image's ENTRYPOINT {shown} is not run: devbox starts the server itself;",
                  f"# to run it before every server start, write `entrypoint: {shown}`",
                  "entrypoint: []"]
    if found.setup:
        lines += ["setup:   # once per container, after its services are up", *[f"  - {c}" for c in found.setup]]
    lines += ["# no in-container reloader: devbox restarts the server from outside on every save",
              f"command: {found.command}", "ready:", f"  http: {found.ready_path}"]
    if found.rules:
        lines += ["watch:", "  rules:"]
        for pattern, action, why in found.rules:
            lines += [f'    - match: ["{pattern}"]   # {why}', f"      action: {action}"]
    return "\n".join(lines) + "\n"


def write_starter(folder: Path, template: str | None, force: bool) -> tuple[str, list[str], list[str]]:
    """Write devbox.yaml (and the schema it points editors at); what it was made from, the files written,
    and what was detected (one line each)."""
    target = folder / CONFIG_NAME
    if target.exists() and not force:
        raise UsageError(f"{target} already exists: edit it, or run `devbox init --force` to overwrite it")
    project = sanitise_name(folder.name)
    if template:
        target.write_text(_with_name(template_text(template), project))
        made_from, reasons = f"the {template} template", []
    else:
        found = detect(folder)
        target.write_text(render(found, project))
        made_from, reasons = f"what the project says ({found.framework})", found.reasons
    (folder / SCHEMA_NAME).write_text(json.dumps(json_schema(), indent=2) + "\n")
    written = [CONFIG_NAME, SCHEMA_NAME]
    gitignore = folder / ".gitignore"
    lines = gitignore.read_text().splitlines() if gitignore.is_file() else []
    if LOCAL_NAME not in (line.strip().lstrip("/") for line in lines):
        prefix = "" if not lines or gitignore.read_text().endswith("\n") else "\n"
        with gitignore.open("a") as f:
            f.write(f"{prefix}{LOCAL_NAME}\n")
        written.append(".gitignore")
    return made_from, written, reasons
