"""Pure logic behind `init`, `doctor` and the Compose import: Dockerfiles, Compose durations and env
files, the entrypoint before the command. No engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from devbox.compose import duration_seconds, service_defaults
from devbox.dockerfile import read_dockerfile
from devbox.server import server_command


def dockerfile(tmp_path: Path, text: str, target: str | None = None):
    (tmp_path / "Dockerfile").write_text(text)
    return read_dockerfile(tmp_path / "Dockerfile", target)


def test_a_dockerfile_says_where_the_code_goes_and_what_runs_first(tmp_path):
    parsed = dockerfile(tmp_path, "FROM python:3.12 AS base\nWORKDIR /usr/src\nWORKDIR app\n"
                                  "COPY ./requirements.txt .\nRUN pip install -r requirements.txt\n"
                                  "COPY --from=node /dist /static\nCOPY . .\n"
                                  'ENTRYPOINT ["/usr/src/app/entrypoint.sh"]\n')
    assert parsed.workdir == "/usr/src/app" and parsed.code_dest == "/usr/src/app"
    assert parsed.uses("requirements.txt") == ["/usr/src/app/requirements.txt", "/usr/src/app/requirements.txt"]
    assert parsed.entrypoint == ["/usr/src/app/entrypoint.sh"]
    assert parsed.names("requirements.txt") and parsed.names("sub/requirements.txt")
    assert not parsed.names("poetry.lock") and not parsed.names("app.py")


def test_a_dockerfile_is_read_up_to_its_target_and_stages_inherit(tmp_path):
    text = ("FROM python AS builder\nWORKDIR /app\nENTRYPOINT python3\nCOPY . /app\n"
            "FROM builder AS dev\nRUN true\nFROM python AS prod\nWORKDIR /srv\nENTRYPOINT [\"gunicorn\"]\n")
    assert dockerfile(tmp_path, text, "dev").workdir == "/app"
    assert dockerfile(tmp_path, text, "dev").entrypoint == ["python3"]
    assert dockerfile(tmp_path, text).workdir == "/srv"  # no target: the last stage
    assert read_dockerfile(tmp_path / "missing") is None


@pytest.mark.parametrize("text,seconds", [("10s", 10), ("1m30s", 90), ("500ms", 0.5), ("1h", 3600), (20, 20),
                                          (None, None), ("soon", None)])
def test_compose_durations(text, seconds):
    assert duration_seconds(text) == seconds


def test_a_services_env_files_stay_files_and_its_own_environment_stays(tmp_path):
    (tmp_path / ".env.dev").write_text("A=1\nB=2\n")
    resolved = {"image": "x", "environment": {"A": "1", "B": "2", "C": "3"}, "stop_signal": "SIGINT",
                "stop_grace_period": "20s", "entrypoint": ["/e.sh"]}
    # as `compose config --no-interpolate --no-env-resolution` gives it: paths made absolute
    raw = {"env_file": [{"path": str(tmp_path / ".env.dev"), "required": True},
                        {"path": str(tmp_path / ".env.local"), "required": False}], "environment": {"C": "3"}}
    out = service_defaults(resolved, raw)
    assert out["env_file"] == [str(tmp_path / ".env.dev")]  # the optional one that is not there is left out
    assert out["env"] == {"C": "3"}  # A and B come from the file, read at each start
    assert (out["stop_signal"], out["stop_timeout"], out["entrypoint"]) == ("SIGINT", 20, ["/e.sh"])


def test_the_entrypoint_comes_before_the_command_as_in_docker():
    assert server_command("python app.py", None) == "python app.py"
    assert server_command("python app.py", ()) == "python app.py"
    assert server_command("python app.py", ("/e.sh",)) == ("/e.sh", "python", "app.py")
    assert server_command("echo $HOME", ("/e.sh",)) == ("/e.sh", "sh", "-c", "echo $HOME")


@pytest.mark.parametrize("name,secret", [("DB_PASSWORD", True), ("SECRET_KEY", True), ("NPM_TOKEN", True),
                                         ("AWS_SECRET_ACCESS_KEY", True), ("STRIPE_API_KEY", True),
                                         ("GOOGLE_CREDENTIALS", True), ("api_key", True), ("SSH_PRIVATE", True),
                                         ("DEBUG", False), ("KEYBOARD", False), ("MONKEY", False),
                                         ("DJANGO_SETTINGS_MODULE", False), ("PORT", False)])
def test_secret_names(name, secret):
    from devbox.secrets import is_secret_name

    assert is_secret_name(name) is secret


def test_a_port_published_on_ipv6_only_is_probed_there():
    from devbox.config import Port
    from devbox.ready import probe_address

    assert probe_address(Port("::", 8000, 80, "tcp")) == ("::1", 8000)
    assert probe_address(Port("0.0.0.0", 8000, 80, "tcp")) == ("127.0.0.1", 8000)
    assert probe_address(Port("127.0.0.2", 8000, 80, "tcp")) == ("127.0.0.2", 8000)


def test_depends_on_conditions_say_which_services_run_to_completion():
    resolved = {"image": "x", "depends_on": {"db": {"condition": "service_healthy"},
                                             "prestart": {"condition": "service_completed_successfully"}}}
    assert service_defaults(resolved)["compose"] == {"services": ["db", "prestart"], "completed": ["prestart"]}


FULL_STACK_DOCKERFILE = """\
FROM python:3.10
WORKDIR /app/
RUN --mount=type=cache,target=/root/.cache/uv \\
    --mount=type=bind,source=uv.lock,target=uv.lock \\
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml uv sync --frozen --no-install-project
COPY ./scripts /app/scripts
COPY ./pyproject.toml ./uv.lock ./alembic.ini /app/
COPY ./app /app/app
ADD requirements/ /tmp/requirements/
"""


def test_a_dockerfile_says_where_each_context_file_lands(tmp_path):
    parsed = dockerfile(tmp_path, FULL_STACK_DOCKERFILE)
    assert parsed.uses("app/main.py") == ["/app/app/main.py"]
    assert parsed.uses("app/api/routes/items.py") == ["/app/app/api/routes/items.py"]
    assert parsed.uses("uv.lock") == ["/app/uv.lock"] and parsed.uses("alembic.ini") == ["/app/alembic.ini"]
    assert parsed.uses("requirements/production.txt") == ["/tmp/requirements/production.txt"]
    assert parsed.uses("README.md") is None and parsed.uses("devbox.yaml") is None
    assert parsed.copied_to("app") == ["/app/app"] and parsed.code_dest is None


def test_an_earlier_stages_copies_are_read_but_placed_only_through_its_heirs(tmp_path):
    parsed = dockerfile(tmp_path, "FROM python AS deps\nCOPY requirements.txt /r/\nFROM python AS base\n"
                                  "WORKDIR /srv\nCOPY . .\nFROM base AS dev\nRUN true\n", target="dev")
    assert parsed.uses("requirements.txt") == ["/srv/requirements.txt"]  # base's COPY . lands in dev
    assert parsed.uses("x/y.py") == ["/srv/x/y.py"] and parsed.code_dest == "/srv"
    only_deps = dockerfile(tmp_path, "FROM python AS deps\nCOPY requirements.txt /r/\nFROM python\nCOPY app /app\n")
    assert only_deps.uses("requirements.txt") == []  # read by a stage the image does not come from


@pytest.mark.parametrize("relative,dependency", [("requirements.txt", True), ("requirements/base.txt", True),
                                                 ("backend/uv.lock", True), ("poetry.lock", True),
                                                 ("Pipfile.lock", True), ("app/main.py", False),
                                                 ("README.md", False), ("docs/requirements.txt", True)])
def test_dependency_files(relative, dependency):
    from devbox.dockerfile import is_dependency_file

    assert is_dependency_file(relative) is dependency


def test_the_images_inputs_are_what_the_dockerfile_uses_less_what_a_mount_covers(tmp_path):
    """devbox.yaml and a README are not inputs; a save under `./app` mounted where the image has it is not
    either (the mount wins); the Dockerfile, uv.lock and a requirements/ file are."""
    import os

    from devbox.build import inputs_hash
    from devbox.config import Build, Mount

    (tmp_path / "Dockerfile").write_text(FULL_STACK_DOCKERFILE)
    for name in ("app/main.py", "scripts/prestart.sh", "pyproject.toml", "uv.lock", "alembic.ini",
                 "requirements/production.txt", "README.md", "devbox.yaml"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("1\n")
    build = Build(tmp_path, "Dockerfile", {}, None)
    mounts = (Mount(tmp_path / "app", "/app/app", False),)
    before = inputs_hash(build, mounts)

    def touched(name: str) -> str:
        path = tmp_path / name
        path.write_text(path.read_text() + "2\n")
        os.utime(path, ns=(path.stat().st_mtime_ns + 10**9,) * 2)
        return inputs_hash(build, mounts)

    for name in ("README.md", "devbox.yaml", "app/main.py"):
        assert touched(name) == before, name
    unmounted = inputs_hash(build, ())
    (tmp_path / "app" / "main.py").write_text("changed\n")
    assert inputs_hash(build, ()) != unmounted  # no mount covers it: an input
    for name in ("uv.lock", "requirements/production.txt", "scripts/prestart.sh", "Dockerfile"):
        now = touched(name)
        assert now != before, name
        before = now


def test_the_debuggers_path_mappings_follow_the_mounts(tmp_path):
    """A backend in a subfolder mounted where the image has it: VS Code's localRoot is that subfolder."""
    from devbox.config import load
    from devbox.debugger import launch_configuration

    (tmp_path / "backend" / "app").mkdir(parents=True)
    (tmp_path / "devbox.yaml").write_text("image: x\ncommand: uvicorn app.main:app\n"
                                          "mounts: [./backend/app:/app/app, /tmp:/host-tmp]\n")
    mappings = launch_configuration(5678, load(tmp_path / "devbox.yaml"))["pathMappings"]
    assert mappings == [{"localRoot": "${workspaceFolder}/backend/app", "remoteRoot": "/app/app"}]
    (tmp_path / "devbox.yaml").write_text("image: x\ncommand: python app.py\nworkdir: /srv\n")
    mappings = launch_configuration(5678, load(tmp_path / "devbox.yaml"))["pathMappings"]
    assert mappings == [{"localRoot": "${workspaceFolder}", "remoteRoot": "/srv"}]


def test_a_rebuild_waits_for_the_burst_to_end():
    from devbox.loop.buildhold import BuildHold

    hold = BuildHold()
    first = hold.add({"pyproject.toml"}, 10.0)
    second = hold.add({"uv.lock"}, 12.5)  # `uv add`: the lock file seconds later
    assert hold.release(first) is None  # the first timer finds the burst still going
    assert hold.release(second) == ({"pyproject.toml", "uv.lock"}, 10.0)  # one rebuild, timed from the first
    assert not hold.active and hold.release(second) is None
