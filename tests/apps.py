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
