"""Project layouts nobody here had seen, after public projects' patterns, made offline for the tests and
the bench (tests/test_unseen_layouts.py, bench/layouts.py). Each `make_*` writes the project into a folder;
the frameworks come from the host (images.install_frameworks) mounted at /site."""

from __future__ import annotations

from pathlib import Path

import apps


def python_script(module: str, call: str) -> str:
    """A console script as pip writes it (the image's python runs it)."""
    return f"#!/usr/bin/python3\nimport sys\nfrom {module} import {call.split('.')[0]}\nsys.exit({call}())\n"


def write(folder, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


# -- a monorepo's backend with Compose's override file -------------------------------------------------

FULL_STACK_COMPOSE = """\
name: {stack}
services:
  db:
    image: devbox-test/busybox:1
    command: ["sh", "-c", "mkdir -p /data && exec httpd -f -p 8080 -h /data"]
    volumes:
      - app-db-data:/data
  prestart:
    build:
      context: ./backend
    depends_on:
      db:
        condition: service_started
    command: python3 scripts/prestart.py
    volumes:
      - app-db-data:/data
  backend:
    build:
      context: ./backend
    restart: always
    depends_on:
      db:
        condition: service_started
      prestart:
        condition: service_completed_successfully
    command: ["fastapi", "run", "--workers", "4", "app/main.py"]
volumes:
  app-db-data:
"""
FULL_STACK_OVERRIDE = """\
services:
  backend:
    ports:
      - "{port}:8000"
    environment:
      ENVIRONMENT: local
    volumes:
      - {site}:/site:ro
    command: ["fastapi", "run", "--reload", "app/main.py"]
"""
FULL_STACK_DOCKERFILE = """\
FROM devbox-test/python:bookworm
ENV PYTHONUNBUFFERED=1
WORKDIR /app/
ENV PYTHONPATH=/app:/site
COPY ./uvicorn /usr/local/bin/uvicorn
RUN chmod +x /usr/local/bin/uvicorn
COPY ./scripts /app/scripts
COPY ./pyproject.toml ./uv.lock /app/
RUN cp pyproject.toml uv.lock /tmp/
COPY ./app /app/app
CMD ["fastapi", "run", "--workers", "4", "app/main.py"]
"""
FULL_STACK_MAIN = """\
import os
import urllib.request

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

from app.value import VALUE

# the migrations ran before this server: `prestart` completed first, as Compose orders it
MIGRATED = urllib.request.urlopen("http://db:8080/migrated", timeout=5).read().decode().strip()
app = FastAPI()


@app.get("/hello/", response_class=PlainTextResponse)
def hello():
    return f"hello {VALUE} {MIGRATED} {os.environ.get('ENVIRONMENT')}"
"""
PRESTART = """\
import time

time.sleep(2)  # a migration takes a while: the server must not start before it is done
with open("/data/migrated", "w") as f:
    f.write("migrated\\n")
print("prestart done", flush=True)
"""


def make_full_stack(folder, stack: str, port: int, site) -> None:
    write(folder, {
        "compose.yml": FULL_STACK_COMPOSE.format(stack=stack),
        "compose.override.yml": FULL_STACK_OVERRIDE.format(port=port, site=site),
        "README.md": "# Full stack\n",
        "frontend/package.json": "{}\n",
        "backend/Dockerfile": FULL_STACK_DOCKERFILE,
        "backend/uvicorn": python_script("uvicorn.main", "main"),
        "backend/pyproject.toml": '[project]\nname = "app"\nrequires-python = ">=3.10"\ndependencies = ["fastapi"]\n',
        "backend/uv.lock": "version = 1\n",
        "backend/scripts/prestart.py": PRESTART,
        "backend/app/__init__.py": "",
        "backend/app/main.py": FULL_STACK_MAIN,
        "backend/app/value.py": apps.value_module("v1"),
    })


# -- a Django project whose service mounts only its package ------------------------------------------------

DJANGO_COMPOSE = """\
name: {stack}
services:
  web:
    build: .
    command: python manage.py runserver 0.0.0.0:8000
    ports:
      - "{port}:8000"
    volumes:
      - ./mysite:/code/mysite
      - {site}:/site:ro
    depends_on:
      - cache
  cache:
    image: devbox-test/redis:bookworm
    command: ["redis-server", "--save", "", "--appendonly", "no", "--protected-mode", "no"]
"""
DJANGO_DOCKERFILE = """\
FROM devbox-test/python:bookworm
RUN ln -s /usr/bin/python3 /usr/local/bin/python
ENV PYTHONUNBUFFERED=1 PYTHONPATH=/site
ADD requirements/ /tmp/requirements/
RUN cat /tmp/requirements/production.txt > /installed-requirements.txt
WORKDIR /code
COPY . /code
VOLUME /code/media
"""
DJANGO_VIEWS = """\
from django.conf import settings
from django.http import HttpResponse

from .value import VALUE


def hello(request):
    return HttpResponse(f"{settings.GREETING} {VALUE}")
"""


def make_django_cms(folder, stack: str, port: int, site) -> None:
    apps.make_django_app(folder, site)
    settings = folder / "mysite" / "settings.py"
    settings.write_text(settings.read_text().replace('ALLOWED_HOSTS = ["*"]', 'ALLOWED_HOSTS = ["localhost", "127.0.0.1"]')
                        + '\nGREETING = "hello"\n')
    write(folder, {
        "compose.yaml": DJANGO_COMPOSE.format(stack=stack, port=port, site=site),
        "Dockerfile": DJANGO_DOCKERFILE,
        "README.md": "# CMS demo\n",
        "requirements/base.txt": "Django>=5.2\n",
        "requirements/production.txt": "-r base.txt\n",
        "mysite/views.py": DJANGO_VIEWS,
        ".dockerignore": ".git\n",
    })


# -- a nested package, from a Dockerfile alone ------------------------------------------------------------

NESTED_DOCKERFILE = """\
FROM devbox-test/python:bookworm
ENV PYTHONPATH=/site PYTHONUNBUFFERED=1
COPY ./flask /usr/local/bin/flask
RUN chmod +x /usr/local/bin/flask
WORKDIR /srv/shop/src
COPY ./src /srv/shop/src
"""
NESTED_APP = """\
from flask import Flask

from shop.value import VALUE


def create_app():
    app = Flask(__name__)

    @app.route("/hello/")
    def hello():
        return f"hello {VALUE}"

    return app
"""




def make_nested_flask(folder: Path) -> None:
    write(folder, {
        "Dockerfile": NESTED_DOCKERFILE,
        "flask": python_script("flask.cli", "main"),
        "src/shop/__init__.py": NESTED_APP,
        "src/shop/value.py": apps.value_module("v1"),
        "notes.txt": "not the image's\n",
    })
