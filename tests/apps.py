"""Test and benchmark apps made on the fly: a Django project from `django-admin startproject`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

VIEWS = """\
from django.http import HttpResponse

from .value import VALUE


def hello(request):
    return HttpResponse(f"hello {VALUE}")
"""

# The Django way to run something once per server: only in the serving process, marked RUN_MAIN=true.
PAGES_APPS = """\
import os
import threading
import time

from django.apps import AppConfig


class PagesConfig(AppConfig):
    name = "pages"

    def ready(self):
        if os.environ.get("RUN_MAIN") == "true":
            threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
            with open("/tmp/thread-starts.log", "a") as f:
                f.write(f"thread started in {os.getpid()}\\n")
"""


def value_module(value: str) -> str:
    return f"VALUE = {value!r}\n"


def make_django_app(folder: Path, site_packages: Path, value: str = "v1") -> None:
    """startproject mysite in `folder`, plus /hello/ answering "hello <VALUE from mysite/value.py>"
    and an app `pages` whose AppConfig.ready starts a thread once per server start."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "django", "startproject", "mysite", str(folder)], check=True,
                   env={"PYTHONPATH": str(site_packages), "PATH": "/usr/bin:/bin"})
    (folder / "mysite" / "views.py").write_text(VIEWS)
    (folder / "mysite" / "value.py").write_text(value_module(value))
    (folder / "pages").mkdir()
    (folder / "pages" / "__init__.py").write_text("")
    (folder / "pages" / "apps.py").write_text(PAGES_APPS)
    settings = folder / "mysite" / "settings.py"
    text = settings.read_text().replace("ALLOWED_HOSTS = []", 'ALLOWED_HOSTS = ["*"]')
    text = re.sub(r"""(['"])django.contrib.staticfiles\1,""", r"\g<0>\n    'pages',", text)
    assert "'pages'" in text
    settings.write_text(text)
    urls = folder / "mysite" / "urls.py"
    text = urls.read_text().replace("from django.urls import path", "from django.urls import path\nfrom . import views")
    text = re.sub(r"""path\((['"])admin/\1, admin.site.urls\),""", r"\g<0>\n    path('hello/', views.hello),", text)
    assert "views.hello" in text
    urls.write_text(text)


FLASK_APP = """\
from flask import Flask

from value import VALUE

app = Flask(__name__)


@app.route("/")
@app.route("/hello/")
def hello():
    return f"hello {VALUE}"
"""

FASTAPI_APP = """\
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

from value import VALUE

app = FastAPI()


@app.get("/hello/", response_class=PlainTextResponse)
def hello():
    return f"hello {VALUE}"
"""


def make_flask_app(folder: Path, value: str = "v1") -> None:
    """app.py answering /hello/ with "hello <VALUE from value.py>" (FLASK_APP=app)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "app.py").write_text(FLASK_APP)
    (folder / "value.py").write_text(value_module(value))


def make_fastapi_app(folder: Path, value: str = "v1") -> None:
    """main.py (uvicorn main:app) answering /hello/ with "hello <VALUE from value.py>"."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "main.py").write_text(FASTAPI_APP)
    (folder / "value.py").write_text(value_module(value))


# testdrivenio/django-on-docker, as a new user has it, made offline: Django + PostgreSQL from its Compose
# file; the service mounts ./app at the image's WORKDIR; the ENTRYPOINT migrates; the settings come from
# .env.dev; the image "installs" app/requirements.txt (a copy stands in for pip, which cannot reach PyPI).
DOD_COMPOSE = """\
name: {stack}
services:
  web:
    build: ./app
    command: python manage.py runserver 0.0.0.0:8000
    volumes:
      - ./app/:/usr/src/app/
      - {site}:/site:ro
    ports:
      - {port}:8000
    env_file:
      - ./.env.dev
    depends_on:
      - db
  db:
    image: devbox-test/postgres:bookworm
    volumes:
      - postgres_data:/var/lib/postgresql/data/
    environment:
      - POSTGRES_USER=hello_django
      - POSTGRES_PASSWORD=hello_django
      - POSTGRES_DB=hello_django_dev

volumes:
  postgres_data:
"""
DOD_ENV = """\
DEBUG=1
SECRET_KEY=foo
SQL_ENGINE=django.db.backends.postgresql
SQL_DATABASE=hello_django_dev
SQL_USER=hello_django
SQL_PASSWORD=hello_django
SQL_HOST=db
SQL_PORT=5432
DATABASE=postgres
GREETING=hello
"""
DOD_DOCKERFILE = """\
FROM devbox-test/python:bookworm
WORKDIR /usr/src/app
ENV PYTHONDONTWRITEBYTECODE 1
ENV PYTHONUNBUFFERED 1
ENV PYTHONPATH /site
RUN ln -sf /usr/bin/python3 /usr/local/bin/python
COPY ./requirements.txt .
RUN cp requirements.txt /installed-requirements.txt
COPY ./entrypoint.sh .
RUN chmod +x /usr/src/app/entrypoint.sh
COPY . .
ENTRYPOINT ["/usr/src/app/entrypoint.sh"]
"""
DOD_ENTRYPOINT = """\
#!/bin/sh
python manage.py flush --no-input
python manage.py migrate
exec "$@"
"""
DOD_VIEWS = """\
import os

from django.db.migrations.recorder import MigrationRecorder
from django.http import HttpResponse

from .value import VALUE


def hello(request):
    return HttpResponse(f"hello {VALUE}")


def db(request):
    return HttpResponse(f"migrations {MigrationRecorder.Migration.objects.count()}")


def env(request):
    return HttpResponse(f"greeting {os.environ.get('GREETING')}")


def deps(request):
    with open("/installed-requirements.txt") as f:
        return HttpResponse("deps " + " ".join(f.read().split()))
"""
DOD_DATABASES = """
DATABASES = {
    "default": {
        "ENGINE": os.environ.get("SQL_ENGINE", "django.db.backends.sqlite3"),
        "NAME": os.environ.get("SQL_DATABASE", str(BASE_DIR / "db.sqlite3")),
        "USER": os.environ.get("SQL_USER", "user"),
        "PASSWORD": os.environ.get("SQL_PASSWORD", "password"),
        "HOST": os.environ.get("SQL_HOST", "localhost"),
        "PORT": os.environ.get("SQL_PORT", "5432"),
    }
}
"""


def make_django_postgres_project(folder: Path, site_packages: Path, stack: str, port: int) -> None:
    """django-on-docker's layout in `folder`: docker-compose.yml, .env.dev, app/ (Dockerfile, entrypoint.sh,
    requirements.txt, manage.py, mysite/ with /hello/, /db/, /env/ and /deps/)."""
    app = folder / "app"
    make_django_app(app, site_packages)
    (app / "mysite" / "views.py").write_text(DOD_VIEWS)
    urls = app / "mysite" / "urls.py"
    urls.write_text(urls.read_text().replace(
        "path('hello/', views.hello),", "path('hello/', views.hello),\n    path('db/', views.db),\n"
        "    path('env/', views.env),\n    path('deps/', views.deps),"))
    settings = app / "mysite" / "settings.py"
    text = settings.read_text()
    text = re.sub(r"DATABASES = \{.*?\n\}\n", DOD_DATABASES.replace("\\", "\\\\"), text, flags=re.S)
    settings.write_text("import os\n" + text)
    assert "SQL_ENGINE" in settings.read_text() and "views.db" in urls.read_text()
    (app / "Dockerfile").write_text(DOD_DOCKERFILE)
    (app / "entrypoint.sh").write_text(DOD_ENTRYPOINT)
    (app / "requirements.txt").write_text("Django==5.2\npsycopg2-binary==2.9.10\n")
    (folder / "docker-compose.yml").write_text(DOD_COMPOSE.format(stack=stack, site=site_packages, port=port))
    (folder / ".env.dev").write_text(DOD_ENV)
