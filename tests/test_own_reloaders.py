"""A framework's own reloader left on still works under devbox, preloaded or cold (SPEC, Preload).

Teams keep `app.run(debug=True)`, `flask run --debug`, `runserver` without `--noreload` and
`uvicorn --reload`. Each must serve every save; where the reloader adds a process that polls the
files, devbox says once how to turn it off."""

from __future__ import annotations

import re

import pytest

from apps import make_django_app, make_fastapi_app, value_module
from conftest import wait_http

TRACE = {"DEVBOX_TRACE": "1"}
FLASK_APP = """\
from flask import Flask
from value import VALUE
app = Flask(__name__)

@app.get("/")
def index():
    return f"hello {VALUE}"

if __name__ == "__main__":
    app.run(host="0.0.0.0", port=8000, debug=True)
"""
FLASK_SCRIPT = """\
import re, sys
from flask.cli import main
if __name__ == "__main__":
    sys.argv[0] = re.sub(r"(-script\\.pyw|\\.exe)?$", "", sys.argv[0])
    sys.exit(main())
"""
CASES = {
    # name: (command, the page, the value module, the hint devbox gives)
    "werkzeug-debug": ("python3 app.py", "/", "value.py", "use_reloader=False"),
    "flask-run-debug": ("flask run --debug --host 0.0.0.0 --port 8000", "/", "value.py", "--no-reload"),
    "django-runserver": ("python3 manage.py runserver 0.0.0.0:8000", "/hello/", "mysite/value.py", "--noreload"),
    "uvicorn-reload": ("python3 -m uvicorn main:app --reload --host 0.0.0.0 --port 8000", "/hello/", "value.py",
                       "--reload"),
}


def make_app(project, site_packages, case: str) -> None:
    if case == "django-runserver":
        make_django_app(project.path, site_packages)
    elif case == "uvicorn-reload":
        make_fastapi_app(project.path)
    else:
        project.write("app.py", FLASK_APP)
        project.write("bin/flask", "#!/usr/bin/python3\n" + FLASK_SCRIPT).chmod(0o755)  # as pip writes it
        project.write("value.py", value_module("v1"))


@pytest.mark.parametrize("preload", ["true", "false"])
@pytest.mark.parametrize("case", CASES)
def test_a_framework_s_own_reloader_left_on_serves_every_save(project, python_image, site_packages, case, preload):
    command, page, value_file, hint = CASES[case]
    make_app(project, site_packages, case)
    project.config(f"""\
        name: {{name}}
        image: devbox-test/python:bookworm
        mounts: [".:/app", "{site_packages}:/site:ro"]
        env: {{{{PYTHONPATH: /site, FLASK_APP: app, PATH: "/app/bin:/usr/local/bin:/usr/bin:/bin"}}}}
        ports: ["{{port}}:8000"]
        stop_timeout: 2
        preload: {preload}
        command: {command}
        ready: {{{{http: {page}}}}}
        """)
    run = project.up(env=TRACE)
    run.wait_for(r"ready in [\d.]+s \(start\)", timeout=60)
    wait_http(project.port, "hello v1", page)
    for i, version in enumerate(("v2", "v3", "v4"), start=1):
        project.write(value_file, value_module(version))
        wait_http(project.port, f"hello {version}", page)
        run.wait_for(r"trace: seen->act", count=i)
    starts = [line for line in run.output.splitlines() if "trace: seen->act" in line]
    if preload == "true":
        assert "(preloaded)" in starts[-1], run.output
    else:
        assert all("(cold)" in line for line in starts), run.output
    # said once, with the way to turn it off
    said = r"^devbox: .*own reloader.*" + re.escape(hint)
    run.wait_for(said, timeout=10)
    assert run.count(said) == 1, run.output
    assert "preload off" not in run.output and "cold start" not in run.output
    assert "Traceback" not in run.output
    assert run.interrupt() == 0
