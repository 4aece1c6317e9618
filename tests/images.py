"""Build the test images offline and cache them by tag; `python tests/images.py` builds them all (CI does).

- busybox: FROM scratch + Debian's static busybox (sh, httpd, kill, sleep) + /tmp.
- python: `debootstrap --variant=minbase --include=python3 bookworm`, imported with `docker import`.
- postgres: Debian's postgresql on the same base, with an entrypoint like the official image's.
- old python: bullseye's python3-minimal (Python 3.9, older than debugpy supports).
- frameworks: Django, Flask, FastAPI and psycopg2 installed on the host with `pip install --target`, mounted read-only
  into the python image and found through PYTHONPATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BUSYBOX_IMAGE = "devbox-test/busybox:1"
PYTHON_IMAGE = "devbox-test/python:bookworm"
OLD_PYTHON_IMAGE = "devbox-test/python:bullseye"
REDIS_IMAGE = "devbox-test/redis:bookworm"
POSTGRES_IMAGE = "devbox-test/postgres:bookworm"
FRAMEWORKS = ("django==5.2.*", "flask==3.1.*", "fastapi==0.115.*", "uvicorn==0.32.*", "psycopg2-binary==2.9.*")
CACHE = Path(os.environ.get("DEVBOX_TEST_CACHE", Path.home() / ".cache" / "devbox-tests"))
SITE_DIR = CACHE / "site-django52-flask31-fastapi0115-psycopg29"
BUSYBOX_BINARY = Path("/bin/busybox")


def _have_image(tag: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0


def build_busybox() -> str:
    if _have_image(BUSYBOX_IMAGE):
        return BUSYBOX_IMAGE
    if not BUSYBOX_BINARY.is_file():
        raise RuntimeError(f"{BUSYBOX_BINARY} is missing: apt-get install busybox-static")
    return _build(BUSYBOX_IMAGE, {"busybox": BUSYBOX_BINARY.read_bytes()},
                  "FROM scratch\n"
                  "COPY busybox /bin/busybox\n"
                  'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
                  "RUN mkdir -p /tmp && chmod 1777 /tmp\n"
                  'CMD ["sh"]\n')


def _build(tag: str, files: dict[str, bytes], dockerfile: str) -> str:
    """`docker build` of a context holding `files` and the Dockerfile, with the legacy builder (no buildx)."""
    with tempfile.TemporaryDirectory() as ctx:
        for name, data in files.items():
            (Path(ctx) / name).write_bytes(data)
            (Path(ctx) / name).chmod(0o755)  # COPY keeps the mode: a binary must stay executable
        (Path(ctx) / "Dockerfile").write_text(dockerfile)
        subprocess.run(["docker", "build", "-q", "-t", tag, ctx], check=True,
                       env={**os.environ, "DOCKER_BUILDKIT": "0"}, stdout=subprocess.DEVNULL)
    return tag


def _debootstrap_image(tag: str, packages: str, release: str = "bookworm") -> str:
    """A Debian image with `packages`, made by debootstrap and `docker import` (no registry)."""
    if _have_image(tag):
        return tag
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap is missing: apt-get install debootstrap")
    with tempfile.TemporaryDirectory(dir=CACHE.parent if CACHE.parent.exists() else None) as root:
        subprocess.run(["debootstrap", "--variant=minbase", f"--include={packages}", release, root,
                        "http://deb.debian.org/debian"], check=True, stdout=subprocess.DEVNULL)
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(["docker", "import", "-", tag], stdin=tar.stdout, check=True, stdout=subprocess.DEVNULL)
        tar.wait()
    return tag


def build_python() -> str:
    return _debootstrap_image(PYTHON_IMAGE, "python3")


def build_old_python() -> str:
    """Debian bullseye's Python 3.9: older than debugpy supports."""
    return _debootstrap_image(OLD_PYTHON_IMAGE, "python3-minimal", release="bullseye")


def build_redis() -> str:
    """A real cache server for the Compose tests: Debian's redis-server (and redis-cli for its healthcheck)."""
    return _debootstrap_image(REDIS_IMAGE, "redis-server,redis-tools")


# Like the official postgres image's entrypoint: the first start makes the cluster with POSTGRES_USER,
# POSTGRES_PASSWORD and POSTGRES_DB on a server that listens on no TCP port; only then does the real
# server listen on 5432. No HEALTHCHECK, as in the official image.
POSTGRES_ENTRYPOINT = r"""#!/bin/sh
set -e
bin=$(echo /usr/lib/postgresql/*/bin)
: "${PGDATA:=/var/lib/postgresql/data}" "${POSTGRES_USER:=postgres}" "${POSTGRES_DB:=$POSTGRES_USER}"
mkdir -p "$PGDATA" /run/postgresql && chown -R postgres:postgres "$PGDATA" /run/postgresql && chmod 700 "$PGDATA"
as_pg() { su postgres -s /bin/sh -c "$*"; }
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  echo "$POSTGRES_PASSWORD" > /tmp/pwfile && chown postgres /tmp/pwfile
  as_pg "$bin/initdb -D '$PGDATA' -U '$POSTGRES_USER' --pwfile=/tmp/pwfile --auth-local=trust --auth-host=scram-sha-256" >/dev/null
  rm -f /tmp/pwfile
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  as_pg "$bin/pg_ctl -D '$PGDATA' -o \"-c listen_addresses=''\" -w start" >/dev/null
  [ "$POSTGRES_DB" = postgres ] || as_pg "$bin/createdb -U '$POSTGRES_USER' '$POSTGRES_DB'"
  as_pg "$bin/pg_ctl -D '$PGDATA' -m fast -w stop" >/dev/null
  echo "PostgreSQL init process complete; ready for start up."
fi
exec su postgres -s /bin/sh -c "exec $bin/postgres -D '$PGDATA' -c listen_addresses='*'"
"""


def build_postgres() -> str:
    """A PostgreSQL server for the Django + PostgreSQL tests: Debian's `postgresql`, started like the
    official image (POSTGRES_* variables, a volume at /var/lib/postgresql/data, no healthcheck)."""
    if _have_image(POSTGRES_IMAGE):
        return POSTGRES_IMAGE
    base = _debootstrap_image(POSTGRES_IMAGE + "-base", "postgresql")
    return _build(POSTGRES_IMAGE, {"entrypoint.sh": POSTGRES_ENTRYPOINT.encode()},
                  f"FROM {base}\n"
                  "COPY entrypoint.sh /usr/local/bin/docker-entrypoint.sh\n"
                  "RUN chmod +x /usr/local/bin/docker-entrypoint.sh\n"
                  "ENV PGDATA=/var/lib/postgresql/data\n"
                  "VOLUME /var/lib/postgresql/data\n"
                  "EXPOSE 5432\n"
                  "STOPSIGNAL SIGINT\n"
                  'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]\n')


def install_frameworks() -> Path:
    marker = SITE_DIR / ".complete"
    if marker.is_file():
        return SITE_DIR
    shutil.rmtree(SITE_DIR, ignore_errors=True)
    SITE_DIR.mkdir(parents=True)
    # the image's python is 3.11: ask pip for wheels that fit it, whatever python runs this script
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--target", str(SITE_DIR),
                    "--python-version", "3.11", "--only-binary=:all:", *FRAMEWORKS], check=True)
    marker.write_text("ok\n")
    return SITE_DIR


if __name__ == "__main__":
    CACHE.mkdir(parents=True, exist_ok=True)
    print("busybox image:", build_busybox(), flush=True)
    print("frameworks:", install_frameworks(), flush=True)
    print("python image:", build_python(), flush=True)
    print("redis image:", build_redis(), flush=True)
    print("postgres image:", build_postgres(), flush=True)
    print("old python image:", build_old_python(), flush=True)
