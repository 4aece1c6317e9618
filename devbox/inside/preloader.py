"""The preloader and its client: this file runs inside the container, under the project's Python.

It is copied into the container's state folder and never imported by devbox on the host, so it uses
the standard library only and the Python 3.8 language.

    python3 preloader.py serve SOCKET PROJECT_DIR -- ARGV...
        Re-execute under ARGV's interpreter with ARGV's interpreter options, so that the flags, the
        paths and the locale a forked server inherits are those of a cold start. Import what the
        server imported last time from outside PROJECT_DIR, then wait on SOCKET. For each client:
        fork; the child becomes ARGV as `python` would have started it. Lines for devbox on stdout
        start with `devbox-preload:` (ready, more, off, restart); anything on stderr is for devbox to
        show when the preloader fails. After `off` or `restart` it takes no more starts and ends with
        the server it forked. `ps` shows it as `devbox-preloader`.
    python3 -I -S preloader.py client SOCKET        (ARGV in DEVBOX_ARGV)
        One start: hand stdin, stdout, stderr, the environment, the folder and the umask to the
        preloader, wait for the child's exit status and exit with it. If there is no preloader, or it
        cannot run ARGV, become ARGV (`exec`): the cold start, in the same process. `ps` shows it as
        `devbox-preload-client`.

Why a client exec at all: each start stays one `docker exec`, so the server's output stream, its
exit code and the pid record the stop path reads all work as for a cold start.

What the child does so that the server cannot tell it was forked (see `become`): a session of its
own; the client's fds 0-2 and nothing else; every signal disposition and the mask as a fresh
`python` has them; the client's umask and folder; /proc/self/cmdline, /proc/self/environ and comm
rewritten (prctl PR_SET_MM_MAP, which needs no privilege) to what the kernel shows for the cold exec,
so `ps` shows the server's own command line once and the stop path finds the start's token in its
environment; sys.argv, sys.orig_argv, sys.executable, sys.path and a fresh `__main__` as `python`
sets them; stdio objects made the way CPython makes them; the garbage collector unfrozen; and
tracebacks without this file's frames. Anything it cannot do exactly makes the child exec ARGV: a
real cold start.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import sys

MODULES_FILE = "preload-modules"  # next to SOCKET: the child's sys.modules, outside the project
SETTINGS_LINE = "@django-settings "  # a line of MODULES_FILE: the Django settings module the server used
SKIP_FILE = "preload-skip"  # modules found to start a thread or keep a file open at import
PREFIX = "devbox-preload:"
ARGV_VAR = "DEVBOX_ARGV"  # the client's: the server's argv, joined by SEP (argv has no place for it)
SEP = "\x1f"
REEXEC_VAR = "DEVBOX_PRELOAD_REEXEC"
DEBUG_MODE = "DEVBOX_DEBUGGER"  # debugger.py's MODE_VAR: this start attaches to the debugger
# what a stop sends to the client's group: the stop reaches the server itself by its token, so the
# client only has to outlive the signal, and must not pass it on (the server would get it twice)
ABSORBED = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM")
RECORD_QUIET = 0.2  # seconds without an import before the child writes what it imported
RECORD_EVERY = 0.5  # seconds between writes during a burst of imports
_HEADER = struct.Struct("!I")
_HERE = os.path.abspath(__file__)


# -- the client ----------------------------------------------------------------------------------

def client(sock_path: str) -> None:
    for name in ABSORBED:
        signal.signal(getattr(signal, name), _absorb)
    env = pristine_environ()
    argv = env.pop(ARGV_VAR, "").split(SEP)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(sock_path)
        umask = os.umask(0)
        os.umask(umask)
        import marshal

        payload = marshal.dumps((argv, env, os.getcwd(), umask))
        conn.sendmsg([_HEADER.pack(len(payload)), payload],
                      [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("3i", 0, 1, 2))])
        rename("devbox-preload-client", "devbox-client")  # while the preloader forks: off the critical path
        # buffered: "pid N" and "exit N" may come in one read (a stop right after the start)
        lines = conn.makefile("rb")
        answer = _read_line(lines)
    except OSError as e:
        answer = "cold no preloader (%s)" % (e.strerror or e)
    if not answer.startswith("pid "):
        conn.close()
        why = answer.partition(" ")[2] or "the preloader went away"
        sys.stderr.write("devbox: preload: %s; cold start\n" % why)
        sys.stderr.flush()
        exec_cold(argv, env)
    child = int(answer.split()[1])
    status = _read_line(lines)  # "exit N"; blocks until the child has gone
    if not status.startswith("exit "):  # the preloader died: the child must not outlive this start
        _killpg(child, signal.SIGKILL)
        sys.stderr.write("devbox: the preloader went away; the server was ended\n")
        os._exit(1)
    # the child is gone; what it started in its group goes with it before this start counts as ended
    import time

    deadline = time.monotonic() + 10
    while _group_alive(child) and time.monotonic() < deadline:
        time.sleep(0.002)
    os._exit(int(status.split()[1]))


def _absorb(signum, frame) -> None:
    pass


def _read_line(lines) -> str:
    """One line from the preloader ("" once it has gone)."""
    try:
        return lines.readline().decode().strip()
    except (OSError, ValueError):
        return ""


def exec_cold(argv: list, env: dict) -> None:
    """Become ARGV as the shell would have run it: the cold start, never returns."""
    for name in ("SIGPIPE", "SIGXFSZ"):  # Python ignores these; an exec would pass that on
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as e:
        sys.stderr.write("devbox: cannot run %s: %s\n" % (argv[0], e.strerror))
        sys.stderr.flush()
        os._exit(127)


def pristine_environ() -> dict:
    """The environment this process was started with, in its order: Python itself may have added to
    os.environ since (LC_CTYPE, when it coerces the C locale), /proc/self/environ it never changes."""
    try:
        with open("/proc/self/environ", "rb") as f:
            items = f.read().split(b"\0")
    except OSError:
        return dict(os.environ)
    env = {}
    for item in items:
        key, sep, value = item.partition(b"=")
        if sep:
            env[os.fsdecode(key)] = os.fsdecode(value)
    return env


# -- what the kernel would show: /proc/self/cmdline, environ and comm ------------------------------------

_kept_blocks = []  # the memory /proc/self/cmdline and environ now point at: never freed


def rename(cmdline: str, comm: str) -> bool:
    """Show as devbox's own process in `ps` (the environment stays as it is)."""
    return set_process_view([cmdline], None, comm)


def set_process_view(argv: list, env, comm: str) -> bool:
    """Point /proc/self/cmdline (and, with `env`, /proc/self/environ) at new strings, and set comm.
    prctl(PR_SET_MM, PR_SET_MM_MAP) needs no privilege as long as the executable is not changed."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()

        def stat(n: int) -> int:  # field n of proc(5), counted from 1; the list starts at field 3
            return int(fields[n - 3])

        args = b"".join(os.fsencode(a) + b"\0" for a in argv)
        block = args
        if env is not None:
            block += b"".join(os.fsencode(k) + b"=" + os.fsencode(v) + b"\0" for k, v in env.items())
        buf = ctypes.create_string_buffer(block, len(block))
        base = ctypes.addressof(buf)
        env_start, env_end = (base + len(args), base + len(block)) if env is not None else (stat(50), stat(51))

        class MmMap(ctypes.Structure):
            _fields_ = [(name, ctypes.c_uint64) for name in (
                "start_code", "end_code", "start_data", "end_data", "start_brk", "brk", "start_stack",
                "arg_start", "arg_end", "env_start", "env_end")] + [
                ("auxv", ctypes.c_void_p), ("auxv_size", ctypes.c_uint32), ("exe_fd", ctypes.c_uint32)]

        libc.sbrk.restype = ctypes.c_void_p
        mm = MmMap(stat(26), stat(27), stat(45), stat(46), stat(47), 0, stat(28), base, base + len(args),
                   env_start, env_end, None, 0, 0xFFFFFFFF)
        mm.brk = libc.sbrk(0) or stat(47)  # the current break: brk() must go on working
        if libc.prctl(35, 14, ctypes.byref(mm), ctypes.sizeof(mm), 0) != 0:  # PR_SET_MM, PR_SET_MM_MAP
            return False
        _kept_blocks.append(buf)
        libc.prctl(15, os.fsencode(comm)[:15], 0, 0, 0)  # PR_SET_NAME
        return True
    except Exception:  # no ctypes, no /proc, an odd libc: the caller falls back
        return False


# -- what to run, as `python` would --------------------------------------------------------------

_PYTHON = "python" + r"(\d+(\.\d+)?)?"
_FLAGS = "bBdEIOqsSuvRP"  # one-letter options without a value


class Target:
    """ARGV as the Python program the kernel and CPython would make of it.

    interpreter: the executable (sys.executable); options: the interpreter's own options, as given;
    script or module: what runs; orig_argv: the process's argv (sys.orig_argv, /proc/self/cmdline);
    argv: sys.argv before a `-m` module is found; comm: the kernel's name for the process."""

    def __init__(self, interpreter: str, options: list, orig_argv: list, comm: str,
                 script: str = "", module: str = "", argv: list = ()):
        self.interpreter, self.options, self.orig_argv, self.comm = interpreter, options, orig_argv, comm
        self.script, self.module, self.argv = script, module, list(argv)


def resolve(argv: list, path_env: str) -> Target:
    """ARGV as a Python program (`python[3[.x]] [options] script|-m module ...`, or a script whose first
    line names a Python); ValueError saying why not."""
    import re
    import shutil

    first = argv[0]
    found = first if "/" in first else shutil.which(first, path=path_env)
    if found is None:
        raise ValueError("%s is not on PATH" % first)
    if re.fullmatch(_PYTHON, os.path.basename(first)):
        options, mode, what, rest = _split_options(argv[1:])
        return _target(os.path.abspath(found), options, argv, os.path.basename(found), mode, what, rest)
    # a script run by its first line: the kernel runs INTERPRETER [ARG] SCRIPT-PATH ARGS
    with open(found, "rb") as f:
        line = f.readline(256)
    if not line.startswith(b"#!"):
        raise ValueError("%s is not a Python program" % first)
    words = line[2:].decode().strip().split(None, 1)
    if not words:
        raise ValueError("%s is not a Python program" % first)
    if os.path.basename(words[0]) == "env":
        name = words[1].strip() if len(words) > 1 else ""
        interpreter = shutil.which(name, path=path_env) if re.fullmatch(_PYTHON, name) else None
        if interpreter is None:
            raise ValueError("the interpreter of %s is not a Python on PATH" % first)
        orig, comm, options = [name, found] + argv[1:], os.path.basename(interpreter), []
    else:
        interpreter = words[0]
        if not re.fullmatch(_PYTHON, os.path.basename(interpreter)):
            raise ValueError("%s is not a Python program" % first)
        options = words[1:]
        orig, comm = [interpreter] + options + [found] + argv[1:], os.path.basename(found)
        _split_options(options + [found])  # refuses options we cannot reproduce
    return _target(interpreter, options, orig, comm, "script", found, argv[1:])


def _target(interpreter, options, orig_argv, comm, mode, what, rest) -> Target:
    if mode == "module":
        return Target(interpreter, options, orig_argv, comm[:15], module=what, argv=["-m"] + rest)
    return Target(interpreter, options, orig_argv, comm[:15], script=what, argv=[what] + rest)


def _split_options(args: list) -> tuple:
    """(interpreter options as given, "script" or "module", the script or module, the program's args)."""
    options = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        if arg == "--check-hash-based-pycs" and i + 1 < len(args):
            options += args[i:i + 2]
            i += 2
            continue
        if arg.startswith("--"):
            raise ValueError("python option %s is not supported" % arg)
        j = 1
        while j < len(arg):
            letter = arg[j]
            if letter in _FLAGS:
                j += 1
                continue
            if letter == "m":
                if j > 1:
                    options.append(arg[:j])
                if arg[j + 1:]:
                    return options, "module", arg[j + 1:], args[i + 1:]
                if i + 1 >= len(args):
                    raise ValueError("python -m needs a module")
                return options, "module", args[i + 1], args[i + 2:]
            if letter in "WX":
                if not arg[j + 1:]:  # the value is the next word
                    if i + 1 >= len(args):
                        raise ValueError("python -%s needs a value" % letter)
                    options += [arg, args[i + 1]]
                    i += 1
                else:
                    options.append(arg)
                break
            raise ValueError("python option -%s is not supported" % letter)
        else:
            options.append(arg)
        i += 1
    if i >= len(args) or args[i] == "-":
        raise ValueError("python runs no script")
    return options, "script", args[i], args[i + 1:]


# -- the preloader -------------------------------------------------------------------------------

class Retire(Exception):
    """This preloader must not fork again: a module it imported started a thread or kept a file open
    (a new preloader leaves it out)."""

    kind = "restart"


class Preloader:
    def __init__(self, sock_path: str, project: str, argv: list, target: Target):
        self.sock_path, self.project, self.argv, self.target = sock_path, project.rstrip("/") + "/", argv, target
        state = os.path.dirname(sock_path)
        self.modules_file = os.path.join(state, MODULES_FILE)
        self.skip_file = os.path.join(state, SKIP_FILE)
        self.modules_seen = None  # (mtime, size) of the modules file when last read
        self.failed = set()  # names that did not import here: not tried again
        self.files = {}  # path -> (mtime, size) of every preloaded module's file, to notice a change
        self.read = {}  # path -> (mtime, size) of the other files the project's preloaded modules read
        self.project_modules = ()  # the project's own modules this process holds (its settings, say)
        self.children = {}  # pid -> the client's connection
        self.ended = []  # children reaped since the last fork: their groups may still hold members
        self.stale = ""  # why this preloader must not fork again (a preloaded file changed)
        self.sys_path = list(sys.path)  # as the child must see it, but for the script's folder
        # sys.path[0] is this file's folder, where the child's is the script's (none under -P or -I)
        self.path0 = bool(sys.path) and not getattr(sys.flags, "safe_path", False) and not sys.flags.isolated
        # what CPython added to its environment at start (LC_CTYPE when it coerced the C locale): a cold
        # start adds the same
        pristine = pristine_environ()
        self.startup_env = {k: v for k, v in os.environ.items() if pristine.get(k) != v and not k.startswith("DEVBOX_")}

    # imports

    def project_file(self, path: str) -> bool:
        return os.path.abspath(path).startswith(self.project)

    def preload(self) -> int:
        """Import the recorded modules not imported yet; the number imported."""
        import importlib

        self.preload_debugger()
        try:
            st = os.stat(self.modules_file)
        except OSError:
            return 0
        if self.modules_seen == (st.st_mtime, st.st_size):
            return 0
        self.modules_seen = (st.st_mtime, st.st_size)
        with open(self.modules_file) as f:
            lines = [n.strip() for n in f if n.strip()]
        names = [n for n in lines if not n.startswith(SETTINGS_LINE)]
        settings = next((n[len(SETTINGS_LINE):] for n in lines if n.startswith(SETTINGS_LINE)), "")
        skip = set()
        if os.path.exists(self.skip_file):
            with open(self.skip_file) as f:
                skip = {n.strip() for n in f}
        # the project is not importable while preloading: a module that reaches for project code
        # (Django's settings, say) fails here and is left to the child
        sys.path[:] = [p for p in self.sys_path[1 if self.path0 else 0:] if not self.project_file(p or ".")]
        count = 0
        try:
            for name in names:
                if name in sys.modules or name in self.failed or name in skip:
                    continue
                threads, fds = _threads(), _fds()
                try:
                    importlib.import_module(name)
                except BaseException:  # SystemExit and KeyboardInterrupt from an import, too
                    self.failed.add(name)
                    continue
                count += 1
                trap = ("started a thread" if _threads() > threads else
                        "kept a file or socket open" if _fds() - fds else "")
                if trap:  # this process is no longer safe to fork from
                    with open(self.skip_file, "a") as f:
                        f.write(name + "\n")
                    raise Retire("%s %s at import" % (name, trap))
        finally:
            sys.path[:] = self.sys_path
        if settings and "django" in sys.modules:
            count += self.preload_settings(settings)
        # the project's own modules here (the settings; or reached by a library through a path that is not
        # the project's own): each file is stamped, so a change to one makes the next start cold and this
        # preloader retire for a fresh one; nothing of the project is ever served stale
        project = []
        for name, module in list(sys.modules.items()):
            path = getattr(module, "__file__", None) or ""
            if path and path not in self.files:
                self.files[path] = _stamp(path)
            if path and self.project_file(path):
                project.append(name)
        if tuple(sorted(project)) != self.project_modules:
            self.project_modules = tuple(sorted(project))
            say("project", " ".join(self.project_modules))
        return count

    def preload_settings(self, name: str) -> int:
        """Django's settings module, imported here with the project on sys.path as the server has it: what
        it imports (and the files it reads: a .env through django-environ, say) is warm in every child.
        The files it opened are stamped like its modules. Its AppConfig.ready() code is not run here:
        that belongs to each server start (django.setup() runs in the child, as cold)."""
        import builtins
        import importlib
        import io

        if name in sys.modules or name in self.failed or self._skipped(name):
            return 0
        opened = []
        real_open = builtins.open

        def watching_open(file, *args, **kwargs):
            if isinstance(file, (str, bytes, os.PathLike)):
                opened.append(os.fsdecode(os.path.abspath(file)))
            return real_open(file, *args, **kwargs)

        # sys.path as the server has it: the script's folder first (`python -m`: the working folder)
        first = os.path.dirname(os.path.abspath(self.target.script)) if self.target.script else os.getcwd()
        sys.path[:] = ([first] if self.path0 else []) + self.sys_path[1 if self.path0 else 0:]
        threads, fds = _threads(), _fds()
        builtins.open = io.open = watching_open
        try:
            importlib.import_module(name)
        except BaseException:
            self.failed.add(name)
            return 0
        finally:
            builtins.open = io.open = real_open
            sys.path[:] = self.sys_path
        trap = "started a thread" if _threads() > threads else "kept a file or socket open" if _fds() - fds else ""
        if trap:
            with open(self.skip_file, "a") as f:
                f.write(name + "\n")
            raise Retire("%s %s at import" % (name, trap))
        for path in opened:
            if not path.endswith(".pyc") and os.path.isfile(path):
                self.read[path] = _stamp(path)
        return 1

    def preload_debugger(self) -> None:
        """With devbox's debugger on (its hub's record is there), every child attaches to it: import
        debugpy once here (a tenth of a second) rather than in each child."""
        record = os.path.join(os.path.dirname(self.sock_path), "debugger.json")
        if "pydevd" in sys.modules or "pydevd" in self.failed or not os.path.exists(record) or self._skipped("pydevd"):
            return
        threads, fds = _threads(), _fds()
        try:
            import json

            with open(record) as f:
                root = json.load(f)["root"]
            _load_sibling("debugger")._import_pydevd(root)
        except Exception:  # the child imports it then (and says so if it cannot)
            self.failed.add("pydevd")
            return
        if _threads() > threads or _fds() - fds:  # not safe to fork from: the children import it themselves
            with open(self.skip_file, "a") as f:
                f.write("pydevd\n")
            raise Retire("debugpy started a thread or kept a file open at import")

    def _skipped(self, name: str) -> bool:
        try:
            with open(self.skip_file) as f:
                return name in {n.strip() for n in f}
        except OSError:
            return False

    def changed_file(self) -> str:
        for stamps in (self.files, self.read):
            for path, stamp in stamps.items():
                if _stamp(path) != stamp:
                    return path
        return ""

    # serving

    def serve(self) -> tuple:
        """Accept starts until stdin closes (devbox let go), then end with the last child; in a forked
        child, return what to run."""
        import gc
        import select
        import time

        began = time.monotonic()
        try:
            self.preload()
        except Retire as e:  # nothing forked yet: simply end (devbox starts a new one without that module)
            say(e.kind, str(e))
            sys.exit(1)
        gc.collect()
        gc.freeze()  # what is preloaded stays shared with the children instead of being copied
        try:
            os.unlink(self.sock_path)
        except FileNotFoundError:
            pass
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.sock_path)
        listener.listen(4)
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda s, f: None)  # wakes select() through the wakeup fd
        say("ready", "%d %.0f %s" % (len(sys.modules), 1000 * (time.monotonic() - began), sys.executable))
        last_look = time.monotonic()
        accepting = True

        def retire(why: str, kind: str = "restart") -> None:
            # take no more starts; a server forked already runs on until it is stopped as usual
            nonlocal accepting
            if why:
                say(kind, why)  # devbox starts a new preloader now, beside this one (or leaves it off)
            accepting = False
            listener.close()

        while True:
            waits = [wake_r, *self.children.values()] + ([listener, sys.stdin] if accepting else [])
            readable, _, _ = select.select(waits, [], [], 1.0)
            if wake_r in readable:
                os.read(wake_r, 4096)
            self.reap()
            for pid, conn in list(self.children.items()):
                if conn in readable and not _recv_some(conn):  # the client was killed: end its child now
                    _killpg(pid, signal.SIGKILL)
            if accepting and sys.stdin in readable and not os.read(sys.stdin.fileno(), 4096):
                retire("")  # devbox let go of this preloader: a newer one replaces it, or devbox went away
            if not accepting:
                if not self.children:
                    return ()
                continue
            if listener in readable:
                conn, _ = listener.accept()
                job = self.start(conn)
                if job:
                    listener.close()
                    os.close(wake_r)
                    os.close(wake_w)
                    return job
                if self.stale:
                    retire(self.stale, "stale")
                    continue
            if time.monotonic() - last_look > 1.0:  # between starts: take in what the child recorded
                last_look = time.monotonic()
                changed = self.changed_file()
                if changed:
                    retire("%s changed" % changed, "stale")
                    continue
                gc.unfreeze()
                try:
                    if self.preload():
                        say("more", "%d" % len(sys.modules))
                except Retire as e:
                    retire(str(e), e.kind)
                gc.freeze()

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            self.ended.append(pid)
            if conn is not None:
                code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
                _send(conn, "exit %d" % code)
                conn.close()

    def wait_children(self) -> None:
        """Only then the next fork: the stop path has ended the previous tree, but a client killed
        with SIGKILL cannot wait for its child's group, so make sure here (bounded)."""
        import time

        deadline = time.monotonic() + 10
        while self.children or any(_group_alive(pid) for pid in self.ended):
            for pid in list(self.children) + self.ended:
                _killpg(pid, signal.SIGKILL)
            self.reap()
            if time.monotonic() > deadline:
                break
            time.sleep(0.002)
        self.ended = []

    def start(self, conn: socket.socket) -> tuple:
        """Fork a child for one client; in the child, return the client's request."""
        import marshal
        import select

        fds = []
        try:
            msg, ancdata, _, _ = conn.recvmsg(65536, socket.CMSG_SPACE(3 * 4))
            for level, kind, data in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.extend(struct.unpack("%di" % (len(data) // 4), data[:len(data) // 4 * 4]))
            (size,) = _HEADER.unpack(msg[:4])
            payload = msg[4:]
            while len(payload) < size:
                more = conn.recv(size - len(payload))
                if not more:
                    raise OSError("the client went away")
                payload += more
            argv, env, cwd, umask = marshal.loads(payload)
            why = self.refusal(argv, fds)
        except (OSError, ValueError, EOFError, TypeError, struct.error) as e:
            why = "a bad request (%s)" % e
        if why:
            for fd in fds:
                os.close(fd)
            _send(conn, "cold " + why)
            conn.close()
            return ()
        self.wait_children()
        settled_r, settled_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            for other in self.children.values():
                other.close()
            conn.close()
            os.close(settled_r)
            return (fds, settled_w, argv, env, cwd, umask)
        os.close(settled_w)
        for fd in fds:
            os.close(fd)
        # the child shows its start's token in /proc before the client learns its pid: a stop from
        # then on finds it by that token
        select.select([settled_r], [], [], 2.0)
        os.close(settled_r)
        self.children[pid] = conn
        _send(conn, "pid %d" % pid)
        return ()

    def refusal(self, argv: list, fds: list) -> str:
        """Why this start must be cold, or ""."""
        if len(fds) != 3:
            return "no standard streams were passed"
        if argv != self.argv:
            return "the command changed"
        changed = self.changed_file()
        if changed:
            self.stale = "%s changed" % changed
            return self.stale
        if _threads() != 1:
            return "a preloaded module left a thread running"
        return ""


# -- in the child ----------------------------------------------------------------------------------

def become(preloader: Preloader, fds: list, settled: int, argv: list, env: dict, cwd: str, umask: int) -> None:
    """Turn this forked process into ARGV as `python` would have started it, then run it (never returns).
    The process's side first (what `ps` and /proc show); where that cannot be made the same, exec ARGV."""
    import gc

    os.setsid()  # a session and group of its own, as `docker exec` gives the cold start
    for i, fd in enumerate(fds):
        os.dup2(fd, i)
    _close_fds_from(3, keep=settled)
    _default_signals()
    os.umask(umask)
    target = preloader.target
    cold_env = dict(env)  # a cold start of this child attaches to the debugger by its sitecustomize
    try:
        debugger, debug_mode = _debugger_for(env)
    except Exception:
        os.write(settled, b"1")
        exec_cold(argv, cold_env)
    shown = set_process_view(target.orig_argv, env, target.comm)
    try:
        os.chdir(cwd)
        script_ok = not target.script or os.path.isfile(target.script) and os.access(target.script, os.R_OK)
    except OSError:
        script_ok = False
    os.write(settled, b"1")
    os.close(settled)
    if not shown or not script_ok:
        # a missing script: Python's own one line; a process view we cannot set: exactly cold all the same
        if not shown:
            sys.stderr.write("devbox: preload: cannot set the server's command line here; cold start\n")
            sys.stderr.flush()
        exec_cold(argv, cold_env)
    try:
        os.environ.clear()
        os.environ.update(env)
        os.environ.update(preloader.startup_env)
        gc.unfreeze()  # a cold server collects what its imports made; so must this one
        _python_view(preloader)
        _new_stdio()
        if debugger is not None:
            debugger.attach(debug_mode)
        _record_modules(preloader)
    except Exception as e:  # a bug of ours must not be the server's: run it cold, and say so
        os.write(2, b"devbox: preload: cannot set up the server (%s: %s); cold start\n"
                 % (type(e).__name__.encode(), str(e).encode(errors="replace")))
        exec_cold(argv, cold_env)
    run_main(target)


def _debugger_for(env: dict) -> tuple:
    """(debugger.py, the mode) when this start attaches to the debugger (debugger.py is beside this
    file), with the debugger's variables out of env as a cold start's sitecustomize takes them out;
    (None, "") when it does not."""
    if DEBUG_MODE not in env:
        return None, ""
    module = _load_sibling("debugger")
    return module, module.take_environ(env)


def _load_sibling(name: str):
    """NAME.py beside this file, as a module of devbox's own name (never one the server could import)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_devbox_" + name, os.path.join(os.path.dirname(_HERE), name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _close_fds_from(low: int, keep: int) -> None:
    try:
        open_fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        open_fds = list(range(low, 1024))
    for fd in open_fds:
        if fd >= low and fd != keep:
            try:
                os.close(fd)
            except OSError:
                pass


def _default_signals() -> None:
    """Dispositions and mask as CPython sets them at start: SIGINT raises KeyboardInterrupt, SIGPIPE and
    SIGXFSZ are ignored, everything else is the default (the preloader's SIGCHLD handler, and any a
    preloaded module set, are undone)."""
    signal.set_wakeup_fd(-1)
    for signum in signal.valid_signals():
        if signum in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            wanted = signal.SIG_DFL
            if signum == signal.SIGINT:
                wanted = signal.default_int_handler
            elif signum in (getattr(signal, "SIGPIPE", 0), getattr(signal, "SIGXFSZ", 0)):
                wanted = signal.SIG_IGN
            current = signal.getsignal(signum)
            # None: a handler set from C at start (faulthandler under -X dev), as a cold start has it
            if current is not None and current != wanted:
                signal.signal(signum, wanted)
        except (OSError, ValueError):  # the C library's own real-time signals
            pass
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def _python_view(preloader: Preloader) -> None:
    """sys.argv, sys.orig_argv, sys.executable, sys.path and a fresh __main__, as CPython sets them."""
    import types

    target = preloader.target
    sys.argv = list(target.argv)
    if hasattr(sys, "orig_argv"):
        sys.orig_argv = list(target.orig_argv)
    sys.executable = target.interpreter
    sys.path[:] = preloader.sys_path
    if preloader.path0:
        # a script: its real folder; -m: the current folder
        sys.path[0] = os.path.dirname(os.path.realpath(target.script)) if target.script else os.getcwd()
    import importlib.machinery

    main = types.ModuleType("__main__")  # as pylifecycle's add_main_module makes it
    main.__loader__ = importlib.machinery.BuiltinImporter
    main.__annotations__ = {}
    main.__builtins__ = sys.modules["builtins"]
    sys.modules["__main__"] = main


def _new_stdio() -> None:
    """sys.stdin, stdout and stderr on fds 0-2, made as CPython's create_stdio makes them."""
    import io

    unbuffered = bool(getattr(sys.__stdout__, "write_through", False))  # -u or PYTHONUNBUFFERED, as started
    for fd, name, write in ((0, "stdin", False), (1, "stdout", True), (2, "stderr", True)):
        old = getattr(sys, name)
        buffering = 0 if unbuffered and write else -1
        buf = io.open(fd, "wb" if write else "rb", buffering, None, None, None, False)
        raw = buf.raw if buffering else buf
        raw.name = "<%s>" % name
        isatty = raw.isatty()
        line_buffering = not unbuffered and (isatty or fd == 2)
        stream = io.TextIOWrapper(buf, old.encoding, old.errors, "\n", line_buffering, unbuffered)
        stream.mode = "w" if write else "r"
        setattr(sys, name, stream)
        setattr(sys, "__%s__" % name, stream)


def run_main(target: Target) -> None:
    """Run the script or module in __main__; an uncaught exception prints as it would cold (without this
    file's frames) and ends the interpreter the same way."""
    try:
        if target.module:
            import runpy

            runpy._run_module_as_main(target.module, alter_argv=True)  # what `python -m` runs
        else:
            _run_script(target)
    except SystemExit:
        raise  # the interpreter handles it as it would have: the code, or the message and 1
    except BaseException as e:
        tb = e.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename == _HERE:
            tb = tb.tb_next
        sys.excepthook(type(e), e.with_traceback(tb), tb)  # CPython prints the exception's own traceback
        # end as an uncaught exception would (1, or SIGINT for KeyboardInterrupt), without printing again
        sys.excepthook = lambda *exc_info: None
        raise
    finally:
        _write_modules()


def _run_script(target: Target) -> None:
    import importlib.machinery

    main = sys.modules["__main__"]
    filename = target.script if os.path.isabs(target.script) else os.path.join(os.getcwd(), target.script)
    with open(filename, "rb") as f:
        source = f.read()
    main.__file__ = filename
    main.__cached__ = None
    main.__loader__ = importlib.machinery.SourceFileLoader("__main__", filename)
    code = compile(source, filename, "exec", dont_inherit=True)
    exec(code, main.__dict__)
    del main.__file__, main.__cached__  # as CPython does once the script ends


# -- recording what the server imported, without a thread of its own -------------------------------------

_recording = {}


def _record_modules(preloader: Preloader) -> None:
    """An audit hook notes each import, and writes the modules imported from outside the project for
    the next preloader: when the server binds its socket (it has imported what it serves with), at
    the first event RECORD_QUIET seconds after the last import (a request, say), and every
    RECORD_EVERY seconds of a long burst of imports. A hook, not a thread: the server's thread count
    and its signals stay its own."""
    import time

    state = _recording
    clock = time.monotonic
    state.update(preloader=preloader, last=clock(), written=clock(), dirty=True, busy=False, clock=clock)

    def hook(event, args):
        try:
            if event == "import":
                now = clock()
                state["last"], state["dirty"] = now, True
                if now - state["written"] > RECORD_EVERY:
                    _write_modules()
            elif state["dirty"] and (event == "socket.bind" or clock() - state["last"] > RECORD_QUIET):
                _write_modules()
        except Exception:  # never the server's problem
            pass

    sys.addaudithook(hook)


def _write_modules() -> None:
    state = _recording
    preloader = state.get("preloader")
    if preloader is None or state["busy"]:
        return
    state["busy"], state["dirty"] = True, False
    state["written"] = state["clock"]()
    try:
        names = []
        for name, module in list(sys.modules.items()):
            path = getattr(module, "__file__", None)
            if name != "__main__" and isinstance(path, str) and not preloader.project_file(path):
                names.append(name)
        settings = os.environ.get("DJANGO_SETTINGS_MODULE", "")
        if settings in sys.modules and "django" in sys.modules:  # a Django server: its settings, by name
            names.append(SETTINGS_LINE + settings)
        temporary = "%s.%d" % (preloader.modules_file, os.getpid())
        with open(temporary, "w") as f:
            f.write("\n".join(names) + "\n")
        os.replace(temporary, preloader.modules_file)
    except Exception:
        pass
    finally:
        state["busy"] = False


# -- small things ------------------------------------------------------------------------------------

def say(kind: str, text: str) -> None:
    sys.stdout.write("%s %s %s\n" % (PREFIX, kind, text))
    sys.stdout.flush()


def _send(conn: socket.socket, line: str) -> None:
    try:
        conn.sendall(line.encode() + b"\n")
    except OSError:
        pass


def _recv_some(conn: socket.socket) -> bytes:
    """What the client sent; b"" once it has gone (closed or reset: killed)."""
    try:
        return conn.recv(1)
    except OSError:
        return b""


def _killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except OSError:
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except OSError:
        return False


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))  # native threads too, not only Python's
    except OSError:
        import threading

        return threading.active_count()


def _fds() -> set:
    try:
        return set(os.listdir("/proc/self/fd")) - {"0", "1", "2"}
    except OSError:
        return set()


def _stamp(path: str) -> tuple:
    try:
        st = os.stat(path)
        return (st.st_mtime_ns, st.st_size)
    except OSError:
        return (0, 0)


def serve_main(sock_path: str, project: str, argv: list) -> tuple:
    """Become the preloader; in a forked child, return (the preloader, the client's request)."""
    try:
        target = resolve(argv, os.environ.get("PATH", os.defpath))
    except (ValueError, OSError) as e:
        say("off", str(e))
        sys.exit(1)
    if not os.environ.get(REEXEC_VAR):
        # the server's own interpreter and options: its flags, sys.path and locale are then the preloader's
        # (with the environment this process was given: not the one CPython changed when it started)
        os.execve(target.interpreter, [target.interpreter, *target.options, _HERE, *sys.argv[1:]],
                  {**pristine_environ(), REEXEC_VAR: "1"})
    os.environ.pop(REEXEC_VAR, None)
    if os.path.abspath(sys.executable) != os.path.abspath(target.interpreter):
        say("off", "%s runs as %s, not %s" % (argv[0], sys.executable, target.interpreter))
        sys.exit(1)
    if not rename("devbox-preloader", "devbox-preload"):
        say("off", "this container does not let a process set its command line (prctl PR_SET_MM_MAP)")
        sys.exit(1)
    preloader = Preloader(sock_path, project, argv, target)
    return preloader, preloader.serve()


def main() -> None:
    mode, sock_path = sys.argv[1], sys.argv[2]
    if mode == "client":
        client(sock_path)
        return
    try:
        preloader, job = serve_main(sock_path, sys.argv[3], sys.argv[5:])
    except SystemExit:
        raise
    except BaseException as e:  # one line for devbox, never a traceback it throws away
        say("off", "the preloader failed: %s: %s" % (type(e).__name__, e))
        sys.exit(1)
    if job:  # in a forked child, outside the handler above: the server's exceptions are its own
        become(preloader, *job)


if __name__ == "__main__":
    main()
