"""Pure logic of preloading: how a command becomes the process `python` would make of it, which
commands need a shell, what tells a framework's own reloader, and the memory of "cold from now on"."""

from __future__ import annotations

import os

import pytest

from devbox.preload import ColdMemory
from devbox.inside.preloader import _split_options, resolve
from devbox.reloaders import own_reloader_hint, parse_tree
from devbox.server import command_argv


@pytest.mark.parametrize("args,expected", [
    (["app.py", "x"], ([], "script", "app.py", ["x"])),
    (["-u", "-B", "app.py"], (["-u", "-B"], "script", "app.py", [])),
    (["-uB", "app.py"], (["-uB"], "script", "app.py", [])),
    (["-X", "dev", "-W", "error", "app.py"], (["-X", "dev", "-W", "error"], "script", "app.py", [])),
    (["-Xutf8", "-Wd", "app.py", "-u"], (["-Xutf8", "-Wd"], "script", "app.py", ["-u"])),
    (["-m", "uvicorn", "main:app", "--reload"], ([], "module", "uvicorn", ["main:app", "--reload"])),
    (["-um", "flask", "run"], (["-u"], "module", "flask", ["run"])),
    (["-mflask", "run"], ([], "module", "flask", ["run"])),
    (["--", "-weird.py"], ([], "script", "-weird.py", [])),
])
def test_interpreter_options_are_split_as_python_reads_them(args, expected):
    assert _split_options(args) == expected


@pytest.mark.parametrize("args,why", [
    (["-c", "print(1)"], "-c"), (["-i", "app.py"], "-i"), (["-"], "no script"), ([], "no script"),
    (["--version"], "--version"),
])
def test_what_cannot_be_reproduced_is_refused_with_a_reason(args, why):
    with pytest.raises(ValueError, match=why):
        _split_options(args)


def test_a_console_script_runs_as_the_kernel_runs_its_first_line(tmp_path):
    script = tmp_path / "flask"
    script.write_text("#!/usr/bin/python3 -u\nprint()\n")
    script.chmod(0o755)
    target = resolve(["flask", "run", "--debug"], str(tmp_path))
    assert target.orig_argv == ["/usr/bin/python3", "-u", str(script), "run", "--debug"]
    assert (target.interpreter, target.options, target.comm) == ("/usr/bin/python3", ["-u"], "flask")
    assert (target.script, target.argv) == (str(script), [str(script), "run", "--debug"])


def test_an_env_first_line_runs_the_python_found_on_path(tmp_path):
    python = tmp_path / "python3"
    python.write_text("")
    python.chmod(0o755)
    script = tmp_path / "serve"
    script.write_text("#!/usr/bin/env python3\n")
    script.chmod(0o755)
    target = resolve(["serve", "a"], str(tmp_path))
    assert target.orig_argv == ["python3", str(script), "a"]
    assert (target.interpreter, target.comm) == (str(python), "python3")


def test_python_by_name_keeps_argv_and_finds_its_executable_on_path(tmp_path):
    python = tmp_path / "python3.12"
    python.write_text("")
    python.chmod(0o755)
    target = resolve(["python3.12", "-B", "manage.py", "runserver"], str(tmp_path))
    assert target.orig_argv == ["python3.12", "-B", "manage.py", "runserver"]
    assert (target.interpreter, target.options, target.script) == (str(python), ["-B"], "manage.py")
    assert target.argv == ["manage.py", "runserver"]


def test_a_program_that_is_not_python_is_refused(tmp_path):
    tool = tmp_path / "httpd"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    with pytest.raises(ValueError, match="not a Python program"):
        resolve(["httpd"], str(tmp_path))


@pytest.mark.parametrize("command,argv", [
    ("python manage.py runserver 0.0.0.0:8000", ["python", "manage.py", "runserver", "0.0.0.0:8000"]),
    ("uvicorn 'main:app' --port 8000", ["uvicorn", "main:app", "--port", "8000"]),
    (("python3", "a b.py"), ["python3", "a b.py"]),
    ("python app.py $PORT", None), ("echo hi && python app.py", None), ("FOO=1 python app.py", None),
    ("python app.py > log", None), ("python app.py # note", None), ("python 'unclosed", None),
])
def test_a_command_runs_as_its_words_unless_it_needs_a_shell(command, argv):
    assert command_argv(command) == argv


@pytest.mark.parametrize("argv,tree,says", [
    (["python3", "app.py"], "7 -\n9 -,werkzeug\n", "use_reloader=False"),
    (["flask", "run", "--debug"], "7 -\n9 -,werkzeug\n", "--no-reload"),
    (["python3", "-m", "uvicorn", "m:app", "--reload"], "7 -\n9 -,spawn\n", "drop --reload"),
    (["python3", "manage.py", "runserver"], "7 -\n", "add --noreload"),
    (["python3", "manage.py", "runserver", "--noreload"], "7 -\n", ""),
    (["python3", "app.py"], "7 -,devbox\n8 -\n", ""),
    (["python3", "-m", "uvicorn", "m:app"], "7 -\n", ""),
])
def test_a_framework_s_own_reloader_is_named_with_the_way_to_turn_it_off(argv, tree, says):
    hint = own_reloader_hint(argv, parse_tree(tree))
    assert (says in hint and "own reloader" in hint) if says else hint == ""


def test_cold_from_now_on_is_kept_per_container_command_and_environment(tmp_path):
    memory = ColdMemory(tmp_path / "p.preload.json")
    key = ColdMemory.key("c1", ["python3", "app.py"], {"A": "1"})
    assert memory.get(key) == ""
    memory.put(key, "it fails preloaded")
    assert ColdMemory(memory.path).get(key) == "it fails preloaded"
    for other in (ColdMemory.key("c2", ["python3", "app.py"], {"A": "1"}),
                  ColdMemory.key("c1", ["python3", "app.py", "-x"], {"A": "1"}),
                  ColdMemory.key("c1", ["python3", "app.py"], {"A": "2"})):
        assert memory.get(other) == ""
    memory.path.write_text("not json")
    assert memory.get(key) == ""  # a damaged file forgets, it does not fail
    assert os.path.exists(memory.path)


def test_a_command_that_starts_with_a_shell_word_runs_under_the_shell():
    from devbox.server import command_argv

    assert command_argv("exec httpd -f -p 8000") is None
    assert command_argv("cd src") is None
    assert command_argv("httpd -f -p 8000") == ["httpd", "-f", "-p", "8000"]
