"""Property: whatever bytes or YAML the loader is fed, it returns a Config or raises ConfigError, and the
CLI answers 0 or 2 with one line per problem: never a traceback."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import time
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devbox.cli import main
from devbox.config import Config, load
from devbox.errors import ConfigError
from devbox.schema import SCHEMA

KEYS = list(SCHEMA.fields) + ["port", "ready", "http", "tcp", "log", "timeout", "paths", "rules", "match", "action",
                              "exec", "debounce_ms", "ignore", "context", "file", "services"]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-70000, 70000), st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from(["8000:8000", "1.2.3.4:80:80", ".:/app", ".:/app:ro", "SIGTERM", "/", "x:y:z:w", "${A}", "${A:?m}",
                     "$$", "${", "python -m app", "*.py", "restart", "none", "setup", "..", "/"]),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), children, max_size=6)),
    max_leaves=25,
)
documents = st.dictionaries(st.sampled_from(KEYS), values, max_size=10)


TIME_BOUND = 2.0  # seconds for the loader and for `devbox config` on any input (a hang is a bug)


def check_loader(folder: Path, data: bytes) -> None:
    path = folder / "devbox.yaml"
    path.write_bytes(data)
    began = time.monotonic()
    problems = 0
    try:
        assert isinstance(load(path, environ={}), Config)
    except ConfigError as e:
        problems = len(e.problems)
        assert e.problems and all(str(p).startswith("devbox.yaml") for p in e.problems)
    assert time.monotonic() - began < TIME_BOUND
    out, err = io.StringIO(), io.StringIO()
    began = time.monotonic()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["config", "-f", str(path)])
    assert time.monotonic() - began < TIME_BOUND
    assert code in (0, 2), err.getvalue()
    assert "Traceback" not in err.getvalue() and "devbox: unexpected" not in err.getvalue(), err.getvalue()
    if code == 2:  # one line per problem, each naming the file
        lines = err.getvalue().splitlines()
        assert len(lines) == problems and all(line.startswith("devbox: devbox.yaml") for line in lines), lines


FUZZ = settings(max_examples=int(os.environ.get("DEVBOX_FUZZ_EXAMPLES", "400")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(documents)
def test_random_yaml_documents(document):
    with tempfile.TemporaryDirectory() as folder:
        check_loader(Path(folder), yaml.safe_dump(document, allow_unicode=True).encode())


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes(data):
    with tempfile.TemporaryDirectory() as folder:
        check_loader(Path(folder), data)


@FUZZ
@given(st.lists(st.sampled_from(["image: x\n", "command: &c [a, *c]\n", "env: &e {A: *e}\n", "x: &a\n  - *a\n",
                                 "<<: {image: y}\n", "ports: [*p]\n", "p: &p 80\n", "a: !!python/name:os.system\n",
                                 "b: !!binary aGk=\n", "c: 2001-01-01\n", "? [a]\n: b\n"]), max_size=6))
def test_random_anchors_aliases_and_tags(lines):
    with tempfile.TemporaryDirectory() as folder:
        check_loader(Path(folder), "".join(lines).encode())


@FUZZ
@given(st.text(alphabet=st.sampled_from(list("ab: -[]{}'\"\n\t#&*!|>%@`,?$")), max_size=80))
def test_random_yaml_punctuation(text):
    with tempfile.TemporaryDirectory() as folder:
        check_loader(Path(folder), text.encode())


@settings(max_examples=60, deadline=None)  # a small space: 9 depths, 11 fans, 2 places
@given(st.integers(1, 9), st.integers(2, 12), st.booleans())
def test_alias_fans_are_refused_fast(levels, fan, in_a_key):
    """Billion laughs: each level an alias list of the one before. Refused by its expanded size, fast."""
    lines = ['l0: &l0 ["x"]']
    for i in range(1, levels + 1):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * fan)}]")
    lines.append(f"{'env' if in_a_key else 'command'}: *l{levels}" if in_a_key else f"command: *l{levels}")
    with tempfile.TemporaryDirectory() as folder:
        check_loader(Path(folder), ("image: x\n" + "\n".join(lines) + "\n").encode())
