"""`devbox init`: write a devbox.yaml from what the project already says (its Compose file, Dockerfile,
framework, Python version), or from a template shipped in the package (`--template`)."""

from __future__ import annotations

__all__ = ["TEMPLATES", "write_starter", "render", "write_vscode_launch"]

import importlib.resources
import json
import re
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
        lines.append(f"compose: {{service: {found.compose_service}}}   # from {found.compose_file}, as Compose "
                     "reads them: its build, env, ports, volumes, depends_on; keys here win")
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


def write_vscode_launch(folder: Path, config) -> str:
    """Merge devbox's attach configuration into .vscode/launch.json (never clobbering the others: one of
    the same name is replaced); what was done, in a few words."""
    from .debugger import launch_configuration

    settings = config.debugger
    port = settings.port if settings is not None else 5678
    ours = launch_configuration(port, config)
    remote = ", ".join(m["remoteRoot"] for m in ours["pathMappings"])
    target = folder / ".vscode" / "launch.json"
    data: dict = {"version": "0.2.0", "configurations": []}
    if target.exists():
        try:
            data = json.loads(_without_comments(target.read_text()))
        except ValueError as e:
            raise UsageError(f"{target}: not JSON that devbox can merge into ({e}): add this configuration "
                             f"by hand: {json.dumps(ours)}") from None
        if not isinstance(data, dict) or not isinstance(data.get("configurations", []), list):
            raise UsageError(f"{target}: `configurations` is not a list: add this configuration by hand: "
                             f"{json.dumps(ours)}")
    configurations = data.setdefault("configurations", [])
    same = [c for c in configurations if isinstance(c, dict) and c.get("name") == ours["name"]]
    where = f".vscode/launch.json (remoteRoot {remote}, port {port})"
    if same == [ours]:
        return f"\"{ours['name']}\" is already in {where}"
    target.parent.mkdir(exist_ok=True)
    text = target.read_text() if target.exists() else ""
    opening = re.search(r'"configurations"\s*:\s*\[', text)
    if not same and opening:  # inserted as text: the file's comments and layout stay
        entry = json.dumps(ours, indent=4).replace("\n", "\n        ")
        rest = text[opening.end():]
        comma = "," if _without_comments(rest).lstrip()[:1] not in ("]", "") else ""
        target.write_text(f"{text[:opening.end()]}\n        {entry}{comma}{rest}")
        return f"added \"{ours['name']}\" to {where}"
    data["configurations"] = [c for c in configurations if c not in same] + [ours]
    target.write_text(json.dumps(data, indent=4) + "\n")
    verb = "updated" if same else "added"
    kept = "; its comments were not kept" if text and _without_comments(text) != text else ""
    return f"{verb} \"{ours['name']}\" in {where}{kept}"


def _without_comments(text: str) -> str:
    """launch.json is JSON with comments (VS Code writes `//` ones) and trailing commas: drop both,
    outside strings."""
    out, i, in_string = [], 0, False
    while i < len(text):
        c = text[i]
        if in_string:
            out.append(c)
            if c == "\\":
                out.append(text[i + 1:i + 2])
                i += 1
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
            out.append(c)
        elif text.startswith("//", i):
            i = text.find("\n", i)
            i = len(text) if i < 0 else i
            continue
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = len(text) if end < 0 else end + 2
            continue
        else:
            out.append(c)
        i += 1
    return re.sub(r",(\s*[}\]])", r"\1", "".join(out))
