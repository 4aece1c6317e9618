"""The debugger inside the container: one debugpy adapter for a whole `devbox up`, and every server
attached to it as a child session of the same process, so that one client attach lasts across restarts.

This file runs inside the container, under the project's Python (standard library; debugpy from the
copy devbox puts in the container, its ROOT). It is never imported by devbox on the host to run.

    python3 debugger.py hub ROOT PORT
        The hub, `devbox-debugger` in `ps`: debugpy.listen(0.0.0.0:PORT) starts debugpy's adapter
        (`devbox-debug-adapter`) with this process as its root session. The hub writes RECORD (its
        pid, the adapter's port for servers and its access token), says `devbox-debugger: ready`,
        and lives until its stdin closes (devbox let go): then it ends the adapter. If the adapter
        dies (debugpy's adapter exits when one of its handlers fails), it says `devbox-debugger: lost`
        and exits; devbox starts a new hub.
    attach(mode)
        A server's side, before its main runs: connect to the adapter as a child of the hub (pydevd's
        `ppid`), so the adapter asks the attached client to open a session for it (startDebugging, or
        the debugpyAttach event), as it does for debugpy's own subprocesses. With no client the
        adapter lets the server run at once; with mode "wait" the server waits for one.
        A preloaded server calls it from the preloader's child; a cold one from a sitecustomize on
        PYTHONPATH (SITE_DIR) that puts PYTHONPATH back as it was before anything else runs.

Why not debugpy's own `--connect` or debugpy.connect(): the adapter that debugpy.listen starts asks
every server for its access token, which neither can pass; pydevd.settrace can, with the parent pid.
"""

import os
import sys

# Only os and sys at the top: the hub says a Python is too old before anything else could fail to
# import (Debian's python3-minimal has no json); the rest is imported where it is used.

STATE_DIR = os.path.dirname(os.path.abspath(__file__))
RECORD = os.path.join(STATE_DIR, "debugger.json")
CLIENT_MARK = os.path.join(STATE_DIR, "debugger.client")  # there while a client is attached
SITE_DIR = os.path.join(STATE_DIR, "debug-site")
MODE_VAR = "DEVBOX_DEBUGGER"  # attach | wait: the server attaches (set by devbox for the start)
PATH_VAR = "DEVBOX_PYTHONPATH"  # PYTHONPATH as it was before SITE_DIR went in front ("-" for unset)
ROLE_VAR = "DEVBOX_DEBUG_ROLE"  # "adapter": the process debugpy.listen starts (see on_site)
PREFIX = "devbox-debugger:"
MIN_PYTHON = (3, 10)  # debugpy 1.8.17 and later
_preloader = None  # preloader.py, loaded for its rename()
SITECUSTOMIZE = """# devbox: attach this server to the debugger, then run the image's own sitecustomize
import importlib.util as _u
_s = _u.spec_from_file_location("_devbox_debugger", %r)
_m = _u.module_from_spec(_s)
_s.loader.exec_module(_m)
_m.on_site()
del _u, _s, _m
"""


# -- the hub -------------------------------------------------------------------------------------

def hub(root: str, port: int) -> None:
    if sys.version_info[:2] < MIN_PYTHON:
        say("off", "the image's Python %d.%d is older than debugpy supports: use an image with Python %d.%d or "
            "newer, or turn `debugger` off" % (sys.version_info[0], sys.version_info[1], MIN_PYTHON[0], MIN_PYTHON[1]))
        sys.exit(1)
    _rename("devbox-debugger")
    for name in (MODE_VAR, PATH_VAR):
        os.environ.pop(name, None)
    os.makedirs(SITE_DIR, exist_ok=True)
    with open(os.path.join(SITE_DIR, "sitecustomize.py"), "w") as f:
        f.write(SITECUSTOMIZE % os.path.abspath(__file__))
    # the adapter debugpy.listen starts inherits this environment: its sitecustomize sets TCP_NODELAY
    # (debugpy writes a message's header and body in two sends: Nagle and a delayed ACK make that
    # ~40 ms a message) and names it in `ps`
    was = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = SITE_DIR + (os.pathsep + was if was else "")
    os.environ[ROLE_VAR] = "adapter %d" % os.getpid()  # in its /proc environ: how the hub finds it
    os.environ[PATH_VAR] = was if was is not None else "-"
    try:
        pydevd = _import_pydevd(root)
        import debugpy
    except ImportError as e:
        say("off", "debugpy does not import here (%s)" % e)
        sys.exit(1)
    try:
        debugpy.listen(("0.0.0.0", port))
    except Exception as e:
        say("off", "debugpy cannot listen on port %d in the container (%s)" % (port, e))
        sys.exit(1)
    take_environ(os.environ)
    os.environ.pop(ROLE_VAR, None)
    setup = pydevd.SetupHolder.setup
    token = setup["access-token"]
    adapter = _find_adapter()
    record = {"pid": os.getpid(), "host": setup["client"], "port": setup["port"], "token": token, "root": root}
    import json

    temporary = RECORD + ".%d" % os.getpid()
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(record, f)
    os.replace(temporary, RECORD)
    say("ready", "%d %s" % (adapter or 0, debugpy.__version__))
    _serve(adapter, pydevd)


def _serve(adapter: int, pydevd) -> None:
    """Live until devbox lets go (stdin closes) or the adapter dies. Meanwhile CLIENT_MARK says whether
    a client is attached (a start with `wait: true` waits for it)."""
    import select
    import signal

    attached = False
    while True:
        readable, _, _ = select.select([sys.stdin], [], [], 0.05)
        if readable and not os.read(sys.stdin.fileno(), 4096):
            break
        if adapter and not _alive(adapter):
            say("lost", "the debug adapter exited")
            _drop_record()
            os._exit(1)
        if pydevd._is_attached() != attached:
            attached = not attached
            if attached:
                open(CLIENT_MARK, "w").close()
            else:
                _unlink(CLIENT_MARK)
    _drop_record()
    if adapter:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.kill(adapter, sig)
            except OSError:
                break
            for _ in range(100):
                if not _alive(adapter):
                    break
                select.select([], [], [], 0.01)
    os._exit(0)  # pydevd's threads are daemons; nothing of this process needs to end cleanly


def _find_adapter() -> int:
    """The adapter's pid: debugpy.listen daemonizes it (a double fork), so it is no child of ours; its
    environment names this hub."""
    needle = ("\0%s=adapter %d\0" % (ROLE_VAR, os.getpid())).encode()
    for name in os.listdir("/proc"):
        if name.isdigit() and name != str(os.getpid()):
            try:
                with open("/proc/%s/environ" % name, "rb") as f:
                    if needle in b"\0" + f.read():
                        return int(name)
            except OSError:
                pass
    return 0


def _alive(pid: int) -> bool:
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _drop_record() -> None:
    _unlink(RECORD)
    _unlink(CLIENT_MARK)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


# -- a server's side -------------------------------------------------------------------------------

def on_site() -> None:
    """Run as the sitecustomize of a process started with SITE_DIR on PYTHONPATH: the adapter (debugpy's
    process: TCP_NODELAY, a name in `ps`), or a cold server (attach). PYTHONPATH goes back first, so the
    program and what it starts see their own; then the image's own sitecustomize runs, if it has one."""
    role = os.environ.pop(ROLE_VAR, "")
    mode = take_environ(os.environ)
    if SITE_DIR in sys.path:
        sys.path.remove(SITE_DIR)
    mine = sys.modules.pop("sitecustomize", None)
    import importlib

    try:
        importlib.import_module("sitecustomize")  # the image's, as site.py would have run it
    except ImportError as e:
        if e.name != "sitecustomize":
            raise
    finally:
        if "sitecustomize" not in sys.modules and mine is not None:
            sys.modules["sitecustomize"] = mine
    if role.startswith("adapter"):
        _no_delay_everywhere()
        _rename("devbox-debug-adapter")
    elif mode:
        attach(mode)


def attach(mode: str) -> None:
    """Connect this server to the adapter as a child session of the hub; never the server's problem."""
    import json

    try:
        with open(RECORD) as f:
            record = json.load(f)
    except (OSError, ValueError):
        _warn("the debugger is not running; serving without it")
        return
    if mode == "wait" and not os.path.exists(CLIENT_MARK):
        _wait_for_client()
    try:
        pydevd = _import_pydevd(record["root"])
        _quick_network(pydevd)
        pydevd.settrace(host=record["host"], port=record["port"], suspend=False, trace_only_current_thread=False,
                        patch_multiprocessing=True, access_token=record["token"], ppid=record["pid"],
                        notify_stdin=False)
    except Exception as e:
        _warn("cannot attach to the debugger (%s: %s); serving without it" % (type(e).__name__, e))


def _import_pydevd(root: str):
    """debugpy's pydevd, configured as debugpy configures it (the DAP protocol, debugpy's mode)."""
    import importlib

    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # Python 3.11's frozen-modules warning
    if not _speedups(root):  # pydevd would say it runs without them on every start
        os.environ.setdefault("PYDEVD_USE_CYTHON", "NO")
    sys.path.insert(0, root)
    try:
        importlib.import_module("debugpy.server.api")  # it sets up its vendored pydevd
        import pydevd
    finally:
        sys.path.remove(root)
    return pydevd


def _speedups(root: str) -> bool:
    """Whether pydevd's compiled tracer was built for this Python (devbox copies the host's debugpy)."""
    import importlib.machinery

    base = os.path.join(root, "debugpy", "_vendored", "pydevd", "_pydevd_bundle", "pydevd_cython")
    return any(os.path.exists(base + suffix) for suffix in importlib.machinery.EXTENSION_SUFFIXES)


def _quick_network(pydevd) -> None:
    """pydevd sleeps 0.1 s after starting its threads (a wait nothing needs: its reader and writer queue
    what comes before they run), and its socket waits for ACKs (Nagle): both cost every start."""
    import socket

    original_connect = pydevd.start_client

    def start_client(host, port):
        sock = original_connect(host, port)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    pydevd.start_client = start_client
    real_time = pydevd.time

    class _Time:
        def __getattr__(self, name):
            return getattr(real_time, name)

        @staticmethod
        def sleep(seconds):
            if seconds != 0.1:
                real_time.sleep(seconds)

    pydevd.time = _Time()


def _wait_for_client() -> None:
    """`wait: true`: this start runs once a client is attached (the adapter then has it open this
    server's session, breakpoints set, before the server goes on). Waits for the user: no bound but
    the stop that ends this start."""
    import time

    _warn("waiting for a debug client to attach (debugger.wait)")
    while not os.path.exists(CLIENT_MARK):
        time.sleep(0.02)


def _no_delay_everywhere() -> None:
    """In the adapter's own process: every TCP socket it makes or accepts sends at once."""
    import socket

    original_accept, original_connect = socket.socket.accept, socket.socket.connect

    def nodelay(sock):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        return sock

    def accept(self):
        conn, address = original_accept(self)
        return nodelay(conn), address

    def connect(self, address):
        original_connect(self, address)
        nodelay(self)

    socket.socket.accept, socket.socket.connect = accept, connect


def take_environ(env) -> str:
    """Take the debugger's variables out of `env` (a dict, or os.environ) and put PYTHONPATH back as
    it was; the mode ("attach", "wait") or ""."""
    mode = env.pop(MODE_VAR, "")
    was = env.pop(PATH_VAR, None)
    if was == "-":
        env.pop("PYTHONPATH", None)
    elif was is not None:
        env["PYTHONPATH"] = was
    return mode


def _rename(name: str) -> None:
    """How `ps` shows this process (argv and comm), as the preloader names itself."""
    import importlib.util

    global _preloader
    spec = importlib.util.spec_from_file_location("_devbox_preloader", os.path.join(STATE_DIR, "preloader.py"))
    try:
        _preloader = importlib.util.module_from_spec(spec)  # kept: it holds the memory `ps` now reads
        spec.loader.exec_module(_preloader)
        _preloader.rename(name, name[:15])
    except Exception:  # a name in `ps` is not worth failing for
        pass


def _warn(text: str) -> None:
    try:
        sys.stderr.write("devbox: debugger: %s\n" % text)
        sys.stderr.flush()
    except Exception:
        pass


def say(kind: str, text: str) -> None:
    sys.stdout.write("%s %s %s\n" % (PREFIX, kind, text))
    sys.stdout.flush()


if __name__ == "__main__":
    hub(sys.argv[2], int(sys.argv[3]))
