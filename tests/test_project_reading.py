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
    raw = {"env_file": ["./.env.dev", {"path": "./.env.local", "required": False}], "environment": ["C=3"]}
    out = service_defaults(resolved, raw, tmp_path)
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
