"""Real frameworks in the python image: Django (runserver --noreload) and Flask, edited while `devbox up` runs."""

from __future__ import annotations

from apps import make_django_app, value_module
from conftest import wait_http, wait_until

DJANGO_CONFIG = """\
name: {name}
image: devbox-test/python:bookworm
mounts:
  - .:/app
  - SITE:/site:ro
env:
  PYTHONPATH: /site
  DJANGO_DEBUG: "1"
ports: ["{port}:8000"]
command: python3 manage.py runserver 0.0.0.0:8000 --noreload
ready:
  http: /hello/
"""

def make_django_project(project, site_packages):
    make_django_app(project.path, site_packages)
    project.config(DJANGO_CONFIG.replace("SITE", str(site_packages)))


def thread_starts(project) -> int:
    result = project.container().exec_run(["sh", "-c", "cat /tmp/thread-starts.log 2>/dev/null"])
    return len(result.output.decode().splitlines())


def test_django_edit_is_served_and_ready_runs_once_per_start(project, python_image, site_packages):
    make_django_project(project, site_packages)
    run = project.up()
    run.wait_for(r"ready in [\d.]+s \(start\)", timeout=60)
    assert wait_http(project.port, "hello v1", "/hello/") == "hello v1"
    container = project.container()
    started_at = container.attrs["State"]["StartedAt"]
    assert thread_starts(project) == 1

    for count, version in enumerate(("v2", "v3"), start=1):
        project.write("mysite/value.py", value_module(version))
        wait_http(project.port, f"hello {version}", "/hello/")
        # a save before devbox's own probe has run would replace this start before it has a ready line
        run.wait_for(r"ready in [\d.]+s \(mysite/value.py changed\)", count=count)

    # one runserver at a time, one AppConfig thread per start, and the same container throughout
    servers = project.servers("manage.py runserver")
    assert len(servers) == 1, servers
    wait_until(lambda: thread_starts(project) == 3, 10, "three AppConfig.ready thread starts")
    container.reload()
    assert container.id == project.container().id
    assert container.attrs["State"]["StartedAt"] == started_at
    assert run.interrupt() == 0


def test_flask_edit_is_served(project, python_image, site_packages):
    project.config("""\
        name: {name}
        image: devbox-test/python:bookworm
        mounts: [".:/app", "%s:/site:ro"]
        env: {{PYTHONPATH: /site, FLASK_APP: app}}
        ports: ["{port}:5000"]
        command: python3 -m flask run --host 0.0.0.0 --port 5000
        ready: {{http: /}}
        """ % site_packages)
    app = """\
        from flask import Flask
        app = Flask(__name__)

        @app.get("/")
        def index():
            return "flask %s"
        """
    project.write("app.py", app % "one")
    run = project.up()
    run.wait_for(r"ready in .*\(start\)", timeout=60)
    wait_http(project.port, "flask one")
    project.write("app.py", app % "two")
    wait_http(project.port, "flask two")
    run.wait_for(r"ready in .*\(app.py changed\)")
    assert len(project.servers("flask run")) == 1
    assert run.interrupt() == 0
