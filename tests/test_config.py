"""The config loader with real files in temp folders: errors with exact positions, interpolation, layering,
lookup, `devbox config`, `devbox init` and the JSON Schema."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from devbox import schema
from devbox.cli import main
from devbox.config import find_config, interpolate, load
from devbox.errors import ConfigError
from devbox.init import TEMPLATES, template_text

MINIMAL = "image: busybox\ncommand: httpd -f\n"


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def errors(folder: Path, text: str | None, environ: dict | None = None, local: str | None = None) -> list[str]:
    """The problems loading devbox.yaml (written from `text`, unless None: as it is) reports."""
    path = folder / "devbox.yaml" if text is None else write(folder, "devbox.yaml", text)
    if local is not None:
        write(folder, "devbox.local.yaml", local)
    with pytest.raises(ConfigError) as info:
        load(path, environ=environ or {})
    return [str(p) for p in info.value.problems]


# -- every error kind, with its exact line and column ------------------------------------------------

ERROR_CASES = [
    # (name, devbox.yaml, the one expected line)
    ("unknown key", MINIMAL + "port: 8000\n", "devbox.yaml:3:1: unknown key 'port' (did you mean 'ports'?)"),
    ("unknown nested key", MINIMAL + "ready:\n  htp: /\n", "devbox.yaml:4:3: unknown key 'htp' in ready (did you mean 'http'?)"),
    ("not an integer", MINIMAL + "watch:\n  debounce_ms: fast\n",
     "devbox.yaml:4:16: watch.debounce_ms: expected an integer >= 0 and <= 60000, got 'fast'"),
    ("negative duration", MINIMAL + "stop_timeout: -1\n", "devbox.yaml:3:15: stop_timeout: expected a number >= 0 and <= 3600, got -1"),
    ("port out of range", MINIMAL + "ports: ['70000:80']\n",
     "devbox.yaml:3:9: ports[0]: expected [ADDR:]HOST:CONTAINER (port '70000' is not a number from 1 to 65535), got '70000:80'"),
    ("port not a number", MINIMAL + "ports: ['web:80']\n",
     "devbox.yaml:3:9: ports[0]: expected [ADDR:]HOST:CONTAINER (port 'web' is not a number from 1 to 65535), got 'web:80'"),
    ("bad port address", MINIMAL + "ports: ['my host:8000:80']\n",
     "devbox.yaml:3:9: ports[0]: expected [ADDR:]HOST:CONTAINER (address 'my host' is not an IP address), got 'my host:8000:80'"),
    ("mount without container path", MINIMAL + "mounts: [src]\n",
     "devbox.yaml:3:10: mounts[0]: expected HOST:CONTAINER[:ro] (a host path and a container path, separated by ':'), got 'src'"),
    ("mount with relative target", MINIMAL + "mounts: ['.:app']\n",
     "devbox.yaml:3:10: mounts[0]: expected HOST:CONTAINER[:ro] (container path 'app' must be absolute), got '.:app'"),
    ("mount with bad mode", MINIMAL + "mounts: ['.:/app:rx']\n",
     "devbox.yaml:3:10: mounts[0]: expected HOST:CONTAINER[:ro] (mode must be ro or rw, not 'rx'), got '.:/app:rx'"),
    ("bad volume", MINIMAL + "volumes: [cache]\n",
     "devbox.yaml:3:11: volumes[0]: expected NAME:/container/path (form is NAME:/container/path), got 'cache'"),
    ("bad signal", MINIMAL + "stop_signal: SIGFOO\n",
     "devbox.yaml:3:14: stop_signal: expected a signal name like SIGTERM (not a signal name; try SIGTERM, SIGINT or SIGQUIT), got 'SIGFOO'"),
    ("both image and build", MINIMAL + "build: .\n", "devbox.yaml:3:1: expected exactly one of 'image' or 'build', got both"),
    ("neither image nor build", "command: x\n", "devbox.yaml:1:1: expected exactly one of 'image' or 'build', got neither"),
    ("missing command", "image: busybox\n", "devbox.yaml:1:1: missing required key 'command'"),
    ("command of wrong type", "image: busybox\ncommand: {run: x}\n",
     "devbox.yaml:2:10: command: expected a command string or a list of strings, got a mapping"),
    ("list item of wrong type", "image: busybox\ncommand: [python, {a: b}]\n",
     "devbox.yaml:2:19: command[1]: expected a string, got a mapping"),
    ("bad action", MINIMAL + "watch:\n  rules:\n    - match: '*.txt'\n      action: restrat\n",
     "devbox.yaml:6:15: watch.rules[0].action: expected one of restart, setup, rebuild, none, got 'restrat' (did you mean 'restart'?)"),
    ("rule without action", MINIMAL + "watch:\n  rules:\n    - match: '*.txt'\n",
     "devbox.yaml:5:7: watch.rules[0]: missing required key 'action'"),
    ("bad regex", MINIMAL + "ready:\n  log: 'ready ('\n",
     "devbox.yaml:4:8: ready.log: expected a regular expression (not a regular expression: missing ), unterminated subpattern at position 6), got 'ready ('"),
    ("http path without slash", MINIMAL + "ready: {http: health}\n",
     "devbox.yaml:3:15: ready.http: expected a URL path starting with /, got 'health'"),
    ("relative workdir", MINIMAL + "workdir: app\n", "devbox.yaml:3:10: workdir: expected an absolute container path, got 'app'"),
    ("bad name", MINIMAL + "name: 'my shop'\n",
     "devbox.yaml:3:7: name: expected a project name of up to 63 letters, digits, '-', '_', '.', got 'my shop'"),
    ("env not a mapping", MINIMAL + "env: 3\n", "devbox.yaml:3:6: env: expected a mapping of NAME: value, got 3"),
    ("bad env name", MINIMAL + "env:\n  1BAD: x\n",
     "devbox.yaml:4:3: env.1BAD: expected an environment variable name, got '1BAD'"),
    ("env value a list", MINIMAL + "env:\n  A: [1]\n", "devbox.yaml:4:6: env.A: expected a string, number or boolean (no NUL), got a list"),
    ("top level a list", "- image: x\n", "devbox.yaml:1:1: expected a mapping of keys at the top, got a list"),
    ("top level a scalar", "hello\n", "devbox.yaml:1:1: expected a mapping of keys at the top, got 'hello'"),
    ("empty file", "", "devbox.yaml: is empty; run `devbox init` for a starter file"),
    ("comments only", "# nothing yet\n", "devbox.yaml: is empty; run `devbox init` for a starter file"),
    ("YAML syntax: bad indent", "image: x\n command: y\n", "devbox.yaml:2:9: YAML syntax: mapping values are not allowed here"),
    ("YAML syntax: unclosed quote", "image: 'x\ncommand: y\n",
     "devbox.yaml:3:1: YAML syntax: found unexpected end of stream"),
    ("YAML syntax: tab", "image: x\n\tcommand: y\n",
     "devbox.yaml:2:1: YAML syntax: found character '\\t' that cannot start any token"),
    ("required variable", MINIMAL + "env:\n  KEY: ${SECRET:?ask the team for SECRET}\n",
     "devbox.yaml:4:8: env.KEY: ${SECRET} is required: ask the team for SECRET"),
    ("bad substitution", MINIMAL + "env:\n  KEY: ${not valid}\n",
     "devbox.yaml:4:8: env.KEY: bad substitution '${not valid}' (use ${VAR}, ${VAR:-default} or $$ for a literal $)"),
    ("missing env_file", MINIMAL + "env_file: .env.dev\n",
     "devbox.yaml:3:11: env_file: '.env.dev' does not exist (create it or remove the entry)"),
    ("missing watch path", MINIMAL + "watch: {paths: [src]}\n", "devbox.yaml:3:17: watch.paths: 'src' does not exist"),
    ("compose without a Compose file", MINIMAL + "compose: {services: [db]}\n",
     "devbox.yaml:3:10: compose: no Compose file here (compose.yaml, compose.yml, docker-compose.yaml, "
     "docker-compose.yml): set compose.file"),
    ("compose file missing", MINIMAL + "compose: {file: other.yaml}\n",
     "devbox.yaml:3:17: compose.file: 'other.yaml' does not exist"),
    ("recursive alias", "image: x\ncommand: &c [a, *c]\n",
     "devbox.yaml:1:1: YAML: nested too deeply (an alias that contains itself?)"),
    ("boolean for a number", MINIMAL + "stop_timeout: yes\n", "devbox.yaml:3:15: stop_timeout: expected a number >= 0 and <= 3600, got true"),
    # hostile or careless input: one line each, never a hang or a later OCI error
    ("alias bomb", "image: x\ncommand: y\na: &a [x, x, x, x, x, x, x, x, x]\n" +
     "".join(f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcde", "bcdef")),
     "devbox.yaml:1:1: YAML: its aliases expand to more than 10,000 values (an alias bomb?): write the values out"),
    ("duplicate key", MINIMAL + "ports: ['1:1']\nports: ['2:2']\n",
     "devbox.yaml:4:1: duplicate key 'ports' (first at line 3): keep one"),
    ("empty command list", "image: x\ncommand: []\n",
     "devbox.yaml:2:10: command: expected a non-empty list of strings, got a list"),
    ("blank command", "image: x\ncommand: '  '\n",
     "devbox.yaml:2:10: command: expected a command that is not empty, got '  '"),
    ("env list without a name", MINIMAL + "env: ['=z']\n",
     "devbox.yaml:3:7: env[0]: expected NAME=value (a NAME of letters, digits and _, not starting with a digit; "
     "no NUL), got '=z'"),
    ("env list name with a space", MINIMAL + "env: ['A B=y']\n",
     "devbox.yaml:3:7: env[0]: expected NAME=value (a NAME of letters, digits and _, not starting with a digit; "
     "no NUL), got 'A B=y'"),
    ("NUL in an env value", MINIMAL + 'env: {A: "x\\0y"}\n',
     "devbox.yaml:3:10: env.A: expected a string, number or boolean (no NUL), got 'x\\x00y'"),
    ("not an address", MINIMAL + "ports: ['1.2.3.4.5.6:80:80']\n",
     "devbox.yaml:3:9: ports[0]: expected [ADDR:]HOST:CONTAINER (address '1.2.3.4.5.6' is not an IP address), "
     "got '1.2.3.4.5.6:80:80'"),
    ("letters for an address", MINIMAL + "ports: ['abc:1:1']\n",
     "devbox.yaml:3:9: ports[0]: expected [ADDR:]HOST:CONTAINER (address 'abc' is not an IP address), got 'abc:1:1'"),
    ("infinite stop_timeout", MINIMAL + "stop_timeout: .inf\n",
     "devbox.yaml:3:15: stop_timeout: expected a number >= 0 and <= 3600, got inf"),
    ("huge debounce", MINIMAL + "watch: {debounce_ms: 99999999999999999999}\n",
     "devbox.yaml:3:22: watch.debounce_ms: expected an integer >= 0 and <= 60000, got 99999999999999999999"),
    ("name too long", MINIMAL + "name: " + "a" * 120 + "\n",
     "devbox.yaml:3:7: name: expected a project name of up to 63 letters, digits, '-', '_', '.', got "
     "'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...'"),
    ("a regex that can backtrack for ever", MINIMAL + "ready: {log: '(a+)+$'}\n",
     "devbox.yaml:3:14: ready.log: expected a regular expression (a repetition inside a repetition, like (a+)+, "
     "can take for ever on some lines: write it without the inner repeat), got '(a+)+$'"),
]


@pytest.mark.parametrize("name,text,expected", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_each_error_names_file_line_column(tmp_path, name, text, expected):
    assert errors(tmp_path, text) == [expected]


def test_all_problems_are_reported_at_once_in_file_order(tmp_path):
    found = errors(tmp_path, "image: x\ncommand: y\nport: 1\nstop_timeout: -2\nready: {tcp: 0}\n")
    assert [line.split(":")[1] for line in found] == ["3", "4", "5"]


def test_a_config_of_megabytes_is_refused_at_once(tmp_path):
    (tmp_path / "devbox.yaml").write_text("image: x\ncommand: y\n" + "# padding\n" * 300_000)
    began = time.monotonic()
    assert errors(tmp_path, None) == ["devbox.yaml: is larger than 1024 KB; a devbox.yaml is a few KB: "
                                      "is it the right file?"]
    assert time.monotonic() - began < 1


def test_an_env_file_line_no_process_could_take_is_named(tmp_path):
    (tmp_path / ".env.dev").write_text("GOOD=1\n=x\n")
    assert errors(tmp_path, MINIMAL + "env_file: .env.dev\n") == [
        ".env.dev:2:1: expected NAME=value with a NAME of letters, digits and _ (not starting with a digit) "
        "and no NUL, got '=x': fix or remove the line"]


def test_binary_file(tmp_path):
    (tmp_path / "devbox.yaml").write_bytes(b"\x00\x01\x02image")
    with pytest.raises(ConfigError) as info:
        load(tmp_path / "devbox.yaml", environ={})
    assert [str(p) for p in info.value.problems] == ["devbox.yaml: is a binary file, not YAML"]


def test_not_utf8(tmp_path):
    (tmp_path / "devbox.yaml").write_bytes(b"image: caf\xe9\ncommand: x\n")
    with pytest.raises(ConfigError) as info:
        load(tmp_path / "devbox.yaml", environ={})
    assert str(info.value) == "devbox.yaml: is not UTF-8 text (byte 10)"


# -- values ------------------------------------------------------------------------------------------

def test_defaults(tmp_path):
    cfg = load(write(tmp_path / "My Shop!", "devbox.yaml", MINIMAL), environ={})
    assert cfg.name == "my-shop"
    assert cfg.workdir == "/app"
    assert [(m.source, m.target, m.read_only) for m in cfg.mounts] == [(tmp_path / "My Shop!", "/app", False)]
    assert (cfg.stop_signal, cfg.stop_timeout, cfg.watch.debounce_ms) == ("SIGTERM", 5.0, 50)
    assert cfg.ready.timeout == 30.0 and cfg.ready.http is None
    assert cfg.watch.paths == (tmp_path / "My Shop!",)


def test_ports_default_to_loopback_and_keep_an_explicit_address(tmp_path):
    cfg = load(write(tmp_path, "devbox.yaml", MINIMAL + "ports: ['8000:80', '0.0.0.0:9000:90', 7000, '5353:53/udp', "
                     "'localhost:8080:80', '[::1]:8443:443']\n"), environ={})
    assert [str(p) for p in cfg.ports] == ["127.0.0.1:8000:80", "0.0.0.0:9000:90", "127.0.0.1:7000:7000",
                                           "127.0.0.1:5353:53/udp", "127.0.0.1:8080:80", "[::1]:8443:443"]


def test_signal_names_are_normalised(tmp_path):
    assert load(write(tmp_path, "devbox.yaml", MINIMAL + "stop_signal: int\n"), environ={}).stop_signal == "SIGINT"


def test_env_values_become_strings_and_env_file_comes_first(tmp_path):
    write(tmp_path, "dev.env", "A=from-file\nB='quoted value'\n# comment\nexport C=3\n")
    cfg = load(write(tmp_path, "devbox.yaml", MINIMAL + "env_file: dev.env\nenv: {A: 1, D: true, E: null}\n"), environ={})
    assert cfg.server_env() == {"A": "1", "B": "quoted value", "C": "3", "D": "true", "E": ""}


def test_list_command_and_rules(tmp_path):
    cfg = load(write(tmp_path, "devbox.yaml", "image: x\ncommand: [python, -m, app]\nwatch:\n  rules:\n"
                     "    - {match: [a.txt], action: none}\n    - {match: b.ts, action: {exec: make}}\n"), environ={})
    assert cfg.command == ("python", "-m", "app")
    assert [(r.match, r.action, r.exec) for r in cfg.watch.rules] == [(("a.txt",), "none", None), (("b.ts",), "exec", "make")]


# -- interpolation -----------------------------------------------------------------------------------

@pytest.mark.parametrize("text,env,expected", [
    ("${A}", {"A": "1"}, "1"),
    ("${A}", {}, ""),
    ("${A:-d}", {}, "d"),
    ("${A:-d}", {"A": ""}, "d"),
    ("${A-d}", {"A": ""}, ""),
    ("${A-d}", {}, "d"),
    ("${A:?m}", {"A": "x"}, "x"),
    ("$$A", {"A": "x"}, "$A"),
    ("$${A}", {"A": "x"}, "${A}"),
    ("a$b", {"b": "x"}, "a$b"),  # only braces interpolate, as in Compose files
    ("${A}${B}", {"A": "1", "B": "2"}, "12"),
    ("${A:-${B}}", {}, "${B}"),  # no nesting: the default is taken literally up to the first }
    ("x${A:-}y", {}, "xy"),
])
def test_interpolation(text, env, expected):
    assert interpolate(text, env) == expected


@pytest.mark.parametrize("text,message", [
    ("${A:?}", "${A} is required: set it in the environment or .env"),
    ("${A?gone}", "${A} is required: gone"),
    ("${A:?empty}", "${A} is required: empty"),
    ("${", "bad substitution '${' (use ${VAR}, ${VAR:-default} or $$ for a literal $)"),
    ("${1A}", "bad substitution '${1A}' (use ${VAR}, ${VAR:-default} or $$ for a literal $)"),
])
def test_interpolation_errors(text, message):
    with pytest.raises(ValueError) as info:
        interpolate(text, {"A": ""} if "empty" in text else {})
    assert str(info.value) == message


def test_environment_wins_over_dotenv(tmp_path):
    write(tmp_path, ".env", "IMAGE=from-dotenv\nTAG=1.0\n")
    cfg = load(write(tmp_path, "devbox.yaml", "image: ${IMAGE}:${TAG}\ncommand: x\n"), environ={"IMAGE": "from-env"})
    assert cfg.image == "from-env:1.0"


def test_interpolated_numbers_are_checked_as_numbers(tmp_path):
    cfg = load(write(tmp_path, "devbox.yaml", MINIMAL + "stop_timeout: ${T:-2}\nports: ['${P}:80']\n"), environ={"P": "8080"})
    assert cfg.stop_timeout == 2 and cfg.ports[0].host_port == 8080


# -- layering and lookup -----------------------------------------------------------------------------

def test_local_file_merges_maps_and_replaces_lists(tmp_path):
    write(tmp_path, "devbox.local.yaml", "env: {B: local}\nports: ['9000:80']\nready: {timeout: 5}\n")
    cfg = load(write(tmp_path, "devbox.yaml", MINIMAL + "env: {A: 1, B: 2}\nports: ['8000:80', '8001:81']\n"
                     "ready: {http: /health}\n"), environ={})
    assert dict(cfg.env) == {"A": "1", "B": "local"}
    assert [str(p) for p in cfg.ports] == ["127.0.0.1:9000:80"]
    assert (cfg.ready.http, cfg.ready.timeout) == ("/health", 5.0)


def test_errors_in_the_local_file_name_it(tmp_path):
    found = errors(tmp_path, MINIMAL + "ports: ['8000:80']\n", local="\nports: ['8000']\nwatch: {debounce_ms: -5}\n")
    assert found == ["devbox.local.yaml:3:22: watch.debounce_ms: expected an integer >= 0 and <= 60000, got -5"]
    found = errors(tmp_path, MINIMAL, local="command: [a, b\n")
    assert found == ["devbox.local.yaml:2:1: YAML syntax: expected ',' or ']', but got '<stream end>'"]


def test_replaced_values_point_at_the_local_file(tmp_path):
    found = errors(tmp_path, MINIMAL + "ready: {tcp: 80}\n", local="ready: {tcp: 0}\n")
    assert found == ["devbox.local.yaml:1:14: ready.tcp: expected an integer >= 1 and <= 65535, got 0"]


def test_lookup_goes_up_like_git(tmp_path):
    config = write(tmp_path, "devbox.yaml", MINIMAL)
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert find_config(start=deep) == config
    other = write(tmp_path, "other.yaml", MINIMAL)
    assert find_config(other) == other


def test_missing_file_says_where_it_looked(tmp_path):
    with pytest.raises(ConfigError) as info:
        find_config(start=tmp_path)
    assert str(info.value) == f"devbox.yaml: not found in {tmp_path} or any parent folder; run `devbox init` to write one"
    with pytest.raises(ConfigError) as info:
        find_config(tmp_path / "nope.yaml")
    assert "no such file" in str(info.value)


# -- devbox config / schema / init -------------------------------------------------------------------

def run_cli(folder: Path, *args: str) -> subprocess.CompletedProcess:
    root = Path(__file__).resolve().parent.parent
    return subprocess.run([sys.executable, "-m", "devbox", *args], cwd=folder, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(root)})


def test_devbox_config_prints_resolved_yaml_and_json(tmp_path):
    write(tmp_path, "devbox.yaml", MINIMAL + "ports: ['8000:80']\n")
    result = run_cli(tmp_path, "config")
    assert result.returncode == 0, result.stderr
    assert "- 127.0.0.1:8000:80" in result.stdout and "command: httpd -f" in result.stdout
    data = json.loads(run_cli(tmp_path, "config", "--json").stdout)
    assert data["ports"] == ["127.0.0.1:8000:80"] and data["image"] == "busybox"


def test_devbox_config_prints_errors_and_exits_2(tmp_path):
    write(tmp_path, "devbox.yaml", MINIMAL + "port: 1\nstop_timeout: x\n")
    result = run_cli(tmp_path, "config")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "devbox: devbox.yaml:3:1: unknown key 'port' (did you mean 'ports'?)",
        "devbox: devbox.yaml:4:15: stop_timeout: expected a number >= 0 and <= 3600, got 'x'",
    ]
    assert result.stdout == ""


def test_shipped_schema_is_in_step_with_the_loader(capsys):
    """devbox/devbox.schema.json ships in the package for editors; regenerate it with
    `devbox schema > devbox/devbox.schema.json` when the loader's definitions change."""
    assert main(["schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == schema.json_schema()
    shipped = Path(schema.__file__).with_name("devbox.schema.json")
    assert json.loads(shipped.read_text()) == printed
    assert set(printed["properties"]) == set(schema.SCHEMA.fields)
    assert set(printed["properties"]["watch"]["properties"]) == {"paths", "ignore", "debounce_ms", "poll", "rules"}


@pytest.mark.parametrize("template", TEMPLATES)
def test_every_template_validates(tmp_path, monkeypatch, template):
    write(tmp_path, "requirements.txt", "")
    monkeypatch.chdir(tmp_path)
    assert main(["init", "--template", template]) == 0
    cfg = load(tmp_path / "devbox.yaml", environ={})
    assert cfg.command
    first_line = template_text(template).splitlines()[0]
    assert first_line == "# yaml-language-server: $schema=devbox.schema.json"
    assert json.loads((tmp_path / "devbox.schema.json").read_text()) == schema.json_schema()


FLASK_COMPOSE = """\
services:
  web:
    build: .
    ports: ["8000:8000"]
  redis:
    image: redis:7
"""


DJANGO_ON_DOCKER = {
    "docker-compose.yml": "services:\n  web:\n    build: ./app\n    command: python manage.py runserver 0.0.0.0:8000\n"
                          "    volumes:\n      - ./app/:/usr/src/app/\n    ports:\n      - 8000:8000\n"
                          "    env_file:\n      - ./.env.dev\n    depends_on:\n      - db\n"
                          "  db:\n    image: postgres:15\n",
    ".env.dev": "DEBUG=1\n",
    "app/Dockerfile": "FROM python:3.11.4-slim-buster\nWORKDIR /usr/src/app\nCOPY ./requirements.txt .\n"
                      "RUN pip install -r requirements.txt\nCOPY ./entrypoint.sh .\nCOPY . .\n"
                      'ENTRYPOINT ["/usr/src/app/entrypoint.sh"]\n',
    "app/entrypoint.sh": "#!/bin/sh\npython manage.py flush --no-input\npython manage.py migrate\nexec \"$@\"\n",
    "app/requirements.txt": "Django==4.2.3\npsycopg2-binary==2.9.6\n",
    "app/manage.py": "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'hello_django.settings')\n",
    "app/hello_django/settings.py": "",
}
AWESOME_DJANGO = {
    "compose.yaml": "services:\n  web:\n    build:\n      context: app\n      target: builder\n"
                    "    ports:\n      - '8000:8000'\n",
    "app/Dockerfile": "FROM --platform=$BUILDPLATFORM python:3.7-alpine AS builder\nEXPOSE 8000\nWORKDIR /app\n"
                      "COPY requirements.txt /app\nRUN pip3 install -r requirements.txt --no-cache-dir\nCOPY . /app\n"
                      'ENTRYPOINT ["python3"]\nCMD ["manage.py", "runserver", "0.0.0.0:8000"]\n'
                      "FROM builder as dev-envs\nRUN apk add git\n",
    "app/requirements.txt": "Django>=3.0,<4.0\n",
    "app/manage.py": "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'example.settings')\n",
    "app/example/settings.py": "",
}


@pytest.mark.parametrize("files,expected", [
    # Django one folder down
    ({"src/manage.py": "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'shop.settings')\n"},
     {"framework": "django", "command": "python src/manage.py runserver 0.0.0.0:8000 --noreload"}),
    # FastAPI whose app is app/main.py
    ({"app/__init__.py": "", "app/main.py": "from fastapi import FastAPI\napp = FastAPI()\n"},
     {"framework": "fastapi", "command": "uvicorn app.main:app --host 0.0.0.0 --port 8000", "ready_path": "/docs"}),
    # the Flask tutorial: create_app in the flaskr package; --debug keeps the debugger
    ({"flaskr/__init__.py": "from flask import Flask\ndef create_app():\n    app = Flask(__name__)\n"},
     {"framework": "flask", "env": {"FLASK_APP": "flaskr"},
      "command": "flask run --debug --no-reload --host 0.0.0.0 --port 5000"}),
    # Flask with a Dockerfile and a Compose file that says port 8000 and names a redis service
    ({"app.py": "from flask import Flask\napp = Flask(__name__)\n", "Dockerfile": "FROM python:3.12\n",
      "compose.yaml": FLASK_COMPOSE},
     {"framework": "flask", "port": 8000, "compose_service": "web", "env": {"FLASK_APP": "app"},
      "command": "flask run --debug --no-reload --host 0.0.0.0 --port 8000"}),
    # a Dockerfile with a dev stage
    ({"Dockerfile": "FROM python:3.12 AS base\nFROM base AS dev\n", "main.py": "print()\n"},
     {"framework": "generic", "dockerfile": "Dockerfile", "target": "dev"}),
    # the Python version from pyproject.toml
    ({"pyproject.toml": '[project]\nrequires-python = ">=3.11"\n', "requirements.txt": "flask\n"},
     {"python": "3.11", "requirements": "requirements.txt"}),

    # Django whose manage.py does not set DJANGO_SETTINGS_MODULE: its settings.py names the module
    ({"manage.py": "import sys\n", "shop/settings.py": "DEBUG = True\n", "requirements.txt": "Django==5.2\n"},
     {"framework": "django", "env": {"DJANGO_SETTINGS_MODULE": "shop.settings"},
      "command": "python manage.py runserver 0.0.0.0:8000 --noreload"}),
    # ... or only its requirements say Django
    ({"manage.py": "import sys\n", "requirements.txt": "django>=4\n"},
     {"framework": "django", "command": "python manage.py runserver 0.0.0.0:8000 --noreload"}),
    # testdrivenio/django-on-docker: the service mounts ./app at the Dockerfile's WORKDIR; its ENTRYPOINT
    # migrates; the image installs app/requirements.txt
    (DJANGO_ON_DOCKER,
     {"framework": "django", "compose_service": "web", "workdir": "/usr/src/app", "mount": False,
      "command": "python manage.py runserver 0.0.0.0:8000 --noreload",
      "image_entrypoint": ["/usr/src/app/entrypoint.sh"], "setup": ["python manage.py migrate"],
      "rules": [("app/Dockerfile", "rebuild", "the image is built from it"),
                ("app/requirements.txt", "rebuild", "app/Dockerfile installs from it"),
                ("**/migrations/*.py", "setup", "a new migration is applied by setup")]}),
    # docker/awesome-compose's django: no mount; the context app/ is copied to /app; ENTRYPOINT python3
    (AWESOME_DJANGO,
     {"framework": "django", "compose_service": "web", "workdir": "/app", "code": "app", "code_at": "/app",
      "command": "python manage.py runserver 0.0.0.0:8000 --noreload", "image_entrypoint": ["python3"]}),
])
def test_init_reads_the_project(tmp_path, files, expected):
    from devbox.detect import detect

    for name, text in files.items():
        write(tmp_path, name, text)
    found = detect(tmp_path)
    assert {k: getattr(found, k) for k in expected} == expected, found.reasons
    rendered = tmp_path / "devbox.yaml"
    rendered.write_text(__import__("devbox.init", fromlist=["render"]).render(found, "shop"))
    load(rendered)  # what init writes is valid


def test_init_never_overwrites_and_ignores_the_local_file(tmp_path):
    write(tmp_path, ".gitignore", "*.pyc")
    first = run_cli(tmp_path, "init")
    assert first.returncode == 0 and "from what the project says (generic)" in first.stderr
    assert "found no Django, Flask or FastAPI app found" in first.stderr and "devbox up" in first.stderr
    assert (tmp_path / ".gitignore").read_text() == "*.pyc\ndevbox.local.yaml\n"
    (tmp_path / "devbox.yaml").write_text("mine\n")
    second = run_cli(tmp_path, "init", "--template", "django")
    assert second.returncode == 2 and "--force" in second.stderr
    assert (tmp_path / "devbox.yaml").read_text() == "mine\n"
    third = run_cli(tmp_path, "init", "--template", "django", "--force")
    assert third.returncode == 0
    assert "runserver" in (tmp_path / "devbox.yaml").read_text()
    assert (tmp_path / ".gitignore").read_text().count("devbox.local.yaml") == 1


def test_init_works_from_an_installed_wheel(tmp_path):
    """The templates ship inside the package: build a wheel, install it elsewhere, run init from it."""
    root = Path(__file__).resolve().parent.parent
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels),
                    str(root)], check=True, capture_output=True)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                    *map(str, wheels.glob("*.whl"))], check=True, capture_output=True)
    project = tmp_path / "proj"
    project.mkdir()
    write(project, "manage.py", "")
    result = subprocess.run([sys.executable, "-c", "import sys, devbox.loop.supervisor, devbox.config.load, devbox.server; "
                             "from devbox.cli import main; sys.exit(main(['init', '--template', 'django']))"],
                            cwd=project, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(target), "PYTHONSAFEPATH": "1"})
    assert result.returncode == 0, result.stderr
    assert "runserver" in (project / "devbox.yaml").read_text()


def test_a_broken_layer_reports_only_its_own_problem(tmp_path):
    write(tmp_path, "devbox.local.yaml", "ports: ['8000:80']\n")
    assert errors(tmp_path, "image: [x\n") == ["devbox.yaml:2:1: YAML syntax: expected ',' or ']', but got '<stream end>'"]


def test_f_and_debug_work_before_and_after_the_verb(tmp_path, capsys):
    other = write(tmp_path, "other.yaml", "image: other\ncommand: x\n")
    for argv in (["-f", str(other), "config", "--json"], ["config", "--json", "-f", str(other)]):
        assert main(argv) == 0
        assert json.loads(capsys.readouterr().out)["image"] == "other"
    assert main(["--debug", "config", "-f", str(tmp_path / "nope.yaml")]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_init_writes_the_project_name(tmp_path, monkeypatch):
    folder = tmp_path / "My Shop"
    folder.mkdir()
    assert run_cli(folder, "init").returncode == 0
    assert load(folder / "devbox.yaml").name == "my-shop"
    assert "\nname: my-shop\n" in (folder / "devbox.yaml").read_text()


@pytest.mark.parametrize("text,expected", [
    ("ports:\n  - 22:22\n", "devbox.yaml:4:5: ports[0]: 22:22 is read by YAML as 1342, not as written: quote it (\"22:22\")"),
    ("env: {MODE: 0755}\n", "devbox.yaml:3:13: env.MODE: 0755 is read by YAML as 493, not as written: quote it (\"0755\")"),
    ("env: {DEBUG: on}\n", "devbox.yaml:3:14: env.DEBUG: on is read by YAML as True, not as written: quote it (\"on\")"),
])
def test_values_yaml_reads_otherwise_than_written_are_reported(tmp_path, text, expected):
    assert errors(tmp_path, MINIMAL + text) == [expected]


def test_quoted_and_plain_values_that_read_as_written_pass(tmp_path):
    write(tmp_path, "devbox.yaml", MINIMAL + 'ports: ["22:22", 8000:8000, 9000]\nenv: {DEBUG: "on", N: 10}\nwatch: {poll: yes}\n')
    cfg = load(tmp_path / "devbox.yaml")
    assert [str(p) for p in cfg.ports] == ["127.0.0.1:22:22", "127.0.0.1:8000:8000", "127.0.0.1:9000:9000"]
    assert cfg.env == {"DEBUG": "on", "N": "10"} and cfg.watch.poll is True


def test_local_image_replaces_the_teams_build_and_the_reverse(tmp_path):
    write(tmp_path, "devbox.yaml", "build: {context: ., target: dev}\ncommand: x\n")
    write(tmp_path, "devbox.local.yaml", "image: shop:prebuilt\n")
    cfg = load(tmp_path / "devbox.yaml")
    assert cfg.image == "shop:prebuilt" and cfg.build is None
    write(tmp_path, "devbox.yaml", "image: python:3.12\ncommand: x\n")
    write(tmp_path, "devbox.local.yaml", "build: .\n")
    cfg = load(tmp_path / "devbox.yaml")
    assert cfg.image is None and cfg.build is not None and cfg.build.context == tmp_path
    (tmp_path / "devbox.local.yaml").unlink()  # within one file, both is still an error
    assert errors(tmp_path, "image: a\nbuild: .\ncommand: x\n") == [
        "devbox.yaml:2:1: expected exactly one of 'image' or 'build', got both"]


def test_a_compose_service_maps_to_devbox_keys():
    from devbox.compose import service_defaults

    resolved = {
        "build": {"context": "/p", "dockerfile": "Dockerfile", "args": {"V": "1"}, "target": "dev"},
        "image": "ignored-when-built",
        "command": ["python", "manage.py", "runserver"],
        "environment": {"A": "1", "UNSET": None},
        "ports": [{"target": 8000, "published": "8000", "protocol": "tcp"},
                  {"target": 53, "published": "5353", "protocol": "udp", "host_ip": "0.0.0.0"},
                  {"target": 9000, "protocol": "tcp"}],
        "volumes": [{"type": "bind", "source": "/p", "target": "/srv"},
                    {"type": "bind", "source": "/p/conf", "target": "/etc/conf", "read_only": True},
                    {"type": "volume", "source": "media", "target": "/srv/media"},
                    {"type": "volume", "target": "/anonymous"}],
        "working_dir": "/srv",
        "depends_on": {"db": {"condition": "service_healthy"}, "cache": {"condition": "service_started"}},
    }
    assert service_defaults(resolved) == {
        "build": {"context": "/p", "dockerfile": "Dockerfile", "args": {"V": "1"}, "target": "dev"},
        "env": {"A": "1"},
        "ports": ["8000:8000", "0.0.0.0:5353:53/udp"],
        "mounts": ["/p:/srv", "/p/conf:/etc/conf:ro"],
        "volumes": ["media:/srv/media"],
        "workdir": "/srv",
        "compose": {"services": ["db", "cache"]},
    }
