"""Run untrusted Python code in a child process with layered isolation.

LLM agents emit anything, so the ``python`` tool never runs code in the env's process.
Each call starts a fresh child interpreter (``python -I -S -B``: no site-packages, no
user site, no ``PYTHONPATH``, no bytecode writes) and applies these layers:

* **bubblewrap** (``bwrap``) when it is installed and works on this kernel: new PID,
  network, IPC and UTS namespaces (no network at all), a read-only view of ``/usr`` and
  of the Python installation only (no ``$HOME``, no project dir, no ``/etc`` apart from
  the loader cache), a private size-bounded ``/tmp`` as working dir, ``--die-with-parent``
  and ``--new-session`` (no terminal injection). When the env runs as root, bwrap runs
  without a user namespace and the child drops to ``nobody`` before any user code runs,
  so the process limit is enforced (the kernel exempts uid 0 from ``RLIMIT_NPROC``).
* **resource limits**, always, set by a small bootstrap in the child before the user's
  code is compiled: CPU seconds, address space, file size, number of processes, open
  files, no core dumps.
* **a wall-clock timeout** that kills the whole process group with ``SIGKILL``.
* **a scrubbed environment** (no inherited variables: no tokens, proxies or paths) and a
  fresh temporary working dir removed after the call.
* without bwrap only: privileges dropped to ``nobody`` when running as root and the
  interpreter is reachable by ``nobody``, and an audit-hook **guard** (PEP 578) that
  refuses file access outside the working dir and the standard library, sockets, new
  processes, signals, ``ctypes`` and similar. The guard is a best-effort layer, not a
  security boundary; docs/security.md says what it does not stop.

stdout and stderr are captured and cut to a bound; a child that keeps printing past a
hard cap is killed.

Example:
    >>> from stepgym.tools.sandbox import Sandbox, Limits
    >>> box = Sandbox(Limits(wall_s=5))
    >>> box.run("print(6 * 7)").stdout
    '42\\n'
"""

from __future__ import annotations

import os
import pwd
import selectors
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass

from stepgym.errors import DependencyNotInstalled, InvalidArgument

__all__ = ["Limits", "RunResult", "Sandbox", "bwrap_available", "ISOLATIONS"]

#: Accepted values of ``Sandbox(isolation=...)``.
ISOLATIONS = ("auto", "bwrap", "rlimits")

_BWRAP_APT = "apt-get install -y bubblewrap"


@dataclass(frozen=True)
class Limits:
    """Resource bounds of one sandboxed run.

    Attributes:
        wall_s: wall-clock seconds before the whole process group is killed.
        cpu_s: CPU seconds (``RLIMIT_CPU``; ``SIGXCPU`` then ``SIGKILL`` one second later).
        memory_mb: address space in MiB (``RLIMIT_AS``); allocations past it raise
            ``MemoryError`` in the child.
        file_mb: largest file the code may write, in MiB (``RLIMIT_FSIZE``); also the
            size of the private ``/tmp`` under bwrap (four times this).
        processes: processes the code may start on top of those its user already runs
            (``RLIMIT_NPROC``).
        open_files: file descriptors (``RLIMIT_NOFILE``).
        output_bytes: bytes of stdout and of stderr kept each; the rest is cut.
        kill_output_bytes: total output after which the child is killed (a flood of
            prints must not keep the env busy).
    """

    wall_s: float = 10.0
    cpu_s: int = 5
    memory_mb: int = 512
    file_mb: int = 16
    processes: int = 16
    open_files: int = 64
    output_bytes: int = 16_384
    kill_output_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        checks = {
            "wall_s": self.wall_s > 0,
            "cpu_s": isinstance(self.cpu_s, int) and self.cpu_s >= 1,
            "memory_mb": isinstance(self.memory_mb, int) and self.memory_mb >= 64,
            "file_mb": isinstance(self.file_mb, int) and self.file_mb >= 1,
            "processes": isinstance(self.processes, int) and self.processes >= 1,
            "open_files": isinstance(self.open_files, int) and self.open_files >= 16,
            "output_bytes": isinstance(self.output_bytes, int) and self.output_bytes >= 64,
            "kill_output_bytes": isinstance(self.kill_output_bytes, int)
            and self.kill_output_bytes >= self.output_bytes,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise InvalidArgument(
                f"invalid sandbox limit(s) {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)}: expected "
                "wall_s > 0, integers cpu_s >= 1, memory_mb >= 64, file_mb >= 1, processes >= 1, "
                "open_files >= 16, output_bytes >= 64, kill_output_bytes >= output_bytes"
            )


@dataclass
class RunResult:
    """What one sandboxed run produced.

    Attributes:
        stdout / stderr: decoded output (UTF-8, invalid bytes replaced), cut to the bound.
        exit_code: the child's exit status, ``None`` when it was killed by a signal.
        signal: the signal that ended the child, if any.
        timed_out: the wall-clock limit was hit.
        output_cut: some output was dropped (``output_bytes``) or the child was killed
            for printing too much (``output_killed``).
        output_killed: the child was killed because output passed ``kill_output_bytes``.
        isolation: ``"bwrap"`` or ``"rlimits"``: the layers that were in force.
        wall_s: seconds the run took, start-up included.
        error: set when the sandbox itself failed (the code did not run).
        stdout_bytes / stderr_bytes: bytes the child wrote to each stream (before cutting).
    """

    stdout: str = ""
    stderr: str = ""
    exit_code: int | None = None
    signal: int | None = None
    timed_out: bool = False
    output_cut: bool = False
    output_killed: bool = False
    isolation: str = ""
    wall_s: float = 0.0
    error: str | None = None
    stdout_bytes: int = 0
    stderr_bytes: int = 0

    @property
    def ok(self) -> bool:
        """True when the code ran to completion with exit status 0 inside every limit."""
        return self.error is None and not self.timed_out and not self.output_killed and self.exit_code == 0


# ----------------------------------------------------------------------------------
# The bootstrap: the first Python code the child runs. It reads the user's code from
# stdin, drops privileges, sets the rlimits, installs the guard (without bwrap), then
# runs the code. It lives in a string so that the child needs nothing from stepgym (the
# project dir is not visible inside the sandbox).
# ----------------------------------------------------------------------------------
_BOOTSTRAP = r'''
import sys, os, resource
# The parent wrote this literal (repr of plain values): eval without builtins, no json import.
cfg = eval(sys.argv[1], {"__builtins__": {}})
src = sys.stdin.buffer.read().decode("utf-8", "replace")
if cfg["uid"] is not None:
    os.setgroups([]); os.setgid(cfg["gid"]); os.setuid(cfg["uid"])
def _lim(res, soft, hard=None):
    hard = soft if hard is None else hard
    _, cur = resource.getrlimit(res)
    if cur != resource.RLIM_INFINITY:
        soft, hard = min(soft, cur), min(hard, cur)
    resource.setrlimit(res, (soft, hard))
_lim(resource.RLIMIT_CORE, 0)
_lim(resource.RLIMIT_CPU, cfg["cpu"], cfg["cpu"] + 1)
_lim(resource.RLIMIT_AS, cfg["mem"])
_lim(resource.RLIMIT_FSIZE, cfg["fsize"])
_lim(resource.RLIMIT_NPROC, cfg["nproc"])
_lim(resource.RLIMIT_NOFILE, cfg["nofile"])
if cfg["guard"]:
    # Imports compile from source: cached bytecode would need marshal, which the guard
    # refuses (crafted code objects are a known way around audit hooks).
    sys.pycache_prefix = cfg["pycache"]
    def _install(read_roots, write_roots, deny_mods):
        # Everything the hook calls is bound here, at install time: C functions and
        # builtin-type methods only. User code may monkeypatch modules (posixpath,
        # pathlib, os) and pass str subclasses; the hook never calls into either.
        lstat, stat, readlink, getcwd = os.lstat, os.stat, os.readlink, os.getcwd
        O_W = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
        str_t, bytes_t, int_t = str, bytes, int
        join_s, join_b, sub = "".join, b"".join, issubclass
        deny_events = frozenset((
            "socket.__new__", "socket.bind", "socket.connect", "socket.getaddrinfo", "socket.gethostbyname",
            "socket.gethostbyaddr", "socket.sendto", "os.fork", "os.forkpty", "os.system", "os.exec",
            "os.posix_spawn", "os.spawn", "os.kill", "os.killpg", "signal.pthread_kill", "os.setsid",
            "os.setpgid", "subprocess.Popen", "pty.spawn", "code.__new__", "marshal.loads", "marshal.load",
            "resource.setrlimit", "resource.prlimit", "sys.remote_exec", "sqlite3.connect",
            "sqlite3.enable_load_extension", "os.add_dll_directory", "os.startfile", "_posixsubprocess.fork_exec",
            "webbrowser.open", "urllib.Request", "ftplib.connect", "http.client.connect", "imaplib.open",
            "nntplib.connect", "poplib.connect", "smtplib.connect", "telnetlib.Telnet.open", "os.chroot",
            "os.mknod", "os.mkfifo", "os.setns", "os.unshare", "gc.get_objects", "gc.get_referrers",
            "gc.get_referents", "function.__new__", "sys._current_frames", "sys.setprofile", "sys.settrace",
        ))
        path_events = {
            "os.listdir": False, "os.scandir": False, "os.chdir": False, "os.remove": True, "os.rmdir": True,
            "os.mkdir": True, "os.chmod": True, "os.chown": True, "os.link": True, "os.symlink": True,
            "os.truncate": True, "os.utime": True, "os.rename": True, "shutil.rmtree": True,
            "shutil.copyfile": True, "shutil.move": True, "os.setxattr": True, "os.removexattr": True,
            "os.listxattr": False, "os.getxattr": False, "glob.glob": False,
        }
        def plain(x):
            # A str (or None) without calling any method of x: str/bytes subclasses are
            # copied by join, which reads their data directly.
            t = type(x)
            if t is str_t:
                return x
            if sub(t, str_t):
                return join_s((x,))
            if sub(t, bytes_t):
                return join_b((x,)).decode("utf-8", "surrogateescape")
            return None
        def resolve(p):
            # realpath with captured os.lstat/os.readlink (posixpath's may be patched).
            if not p.startswith("/"):
                p = getcwd() + "/" + p
            stack = [x for x in p.split("/") if x][::-1]
            path, links = "", 0
            while stack:
                name = stack.pop()
                if name == ".":
                    continue
                if name == "..":
                    path = path.rpartition("/")[0]
                    continue
                new = path + "/" + name
                try:
                    mode = lstat(new).st_mode
                except OSError:
                    path = new
                    continue
                if mode & 0o170000 == 0o120000:
                    links += 1
                    if links > 40:
                        return None
                    target = readlink(new)
                    if target.startswith("/"):
                        path = ""
                    stack.extend([x for x in target.split("/") if x][::-1])
                else:
                    path = new
            return path or "/"
        def inside(x, roots):
            p = plain(x)
            if p is None or "\x00" in p:
                return False, "<not a str path>"
            try:
                r = resolve(p)
            except Exception:
                return False, p
            if r is None:
                return False, p
            for root in roots:
                if r == root or r.startswith(root + "/"):
                    return True, p
            return False, p
        def hook(event, args):
            if event in deny_events or event.startswith("ctypes."):
                raise PermissionError("sandbox: " + event + " is not allowed")
            if event == "open":
                path, mode, flags = args[0], args[1], args[2]
                if type(path) is int_t:
                    return
                m = plain(mode)
                write = (m is not None and any(c in m for c in "wax+")) or (mode is None and bool(flags & O_W))
                ok, shown = inside(path, write_roots if write else read_roots)
                if not ok:
                    raise PermissionError("sandbox: " + ("writing " if write else "reading ") + repr(shown)
                                          + " is not allowed")
                if mode is None:
                    # os.open of a directory gives a dir_fd, and the audit events of
                    # *at() calls do not carry it: paths would resolve somewhere unchecked.
                    try:
                        is_dir = stat(plain(path)).st_mode & 0o170000 == 0o040000
                    except OSError:
                        is_dir = False
                    if is_dir:
                        raise PermissionError("sandbox: opening directories as file descriptors is not allowed")
                return
            if event in path_events:
                roots = write_roots if path_events[event] else read_roots
                for a in args[:2]:
                    if plain(a) is None:
                        continue  # fds, flags; os functions hand paths over as str/bytes
                    ok, shown = inside(a, roots)
                    if not ok:
                        raise PermissionError("sandbox: " + event + " on " + repr(shown) + " is not allowed")
                return
            if event == "import":
                name = plain(args[0]) or ""
                where = plain(args[1]) or ""
                base = where.rpartition("/")[2].partition(".")[0]
                if base in deny_mods or any(part in deny_mods for part in name.split(".")):
                    raise ImportError("sandbox: module " + repr(name) + " is not allowed")
                return
            if event == "object.__setattr__":
                name = plain(args[1])
                if name == "__code__":
                    raise PermissionError("sandbox: replacing a function's code is not allowed")
        sys.addaudithook(hook)
    _install(tuple(cfg["read_roots"]), tuple(cfg["write_roots"]), frozenset(cfg["deny_modules"]))
    del _install
g = {"__name__": "__main__", "__builtins__": __builtins__}
del cfg
try:
    exec(compile(src, "<code>", "exec"), g)
except SystemExit:
    raise
except BaseException as e:
    tb = e.__traceback__.tb_next if e.__traceback__ is not None else None
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except BaseException:
            pass
    import linecache, traceback
    linecache.cache["<code>"] = (len(src), None, src.splitlines(True), "<code>")
    traceback.print_exception(type(e), e, tb)
    sys.stderr.flush()
    os._exit(1)
'''

#: Modules the guard refuses to import (rlimits mode): foreign-function interfaces,
#: sub-interpreters (which would run without the audit hook), process and db helpers.
_DENY_MODULES = (
    "ctypes", "_ctypes", "cffi", "_cffi_backend", "_posixsubprocess", "multiprocessing", "_multiprocessing",
    "_xxsubinterpreters", "_xxinterpchannels", "_interpreters", "_interpchannels", "_interpqueues",
    "_testcapi", "_testinternalcapi", "_testbuffer", "_testmultiphase", "_testsinglephase",
    "_testimportmultiple", "_testclinic", "_sqlite3", "sqlite3", "dbm", "_dbm", "_gdbm", "readline",
    "_tkinter", "tkinter", "pty", "termios", "fcntl", "_socket", "socket", "ssl", "_ssl", "mmap",
    "_ctypes_test", "xxsubtype", "_lsprof", "faulthandler", "tracemalloc", "gc", "_xxtestfuzz",
)


def _stdlib_roots() -> list[str]:
    paths = sysconfig.get_paths()
    roots = {os.path.realpath(paths[k]) for k in ("stdlib", "platstdlib") if k in paths}
    dynload = os.path.join(os.path.realpath(paths.get("platstdlib", "")), "lib-dynload")
    roots.add(dynload)
    return sorted(roots)


def _interpreter() -> str:
    """The base interpreter (not a venv shim, whose pyvenv.cfg the sandbox may not see)."""
    exe = getattr(sys, "_base_executable", None) or sys.executable
    return os.path.realpath(exe)


def _prefixes() -> list[str]:
    """The Python installation the sandbox needs to see (read-only)."""
    return sorted({os.path.realpath(sys.base_prefix), os.path.realpath(os.path.dirname(os.path.dirname(_interpreter())))})


def _nobody() -> tuple[int, int]:
    try:
        pw = pwd.getpwnam("nobody")
        return pw.pw_uid, pw.pw_gid
    except KeyError:  # pragma: no cover - every Linux has nobody, containers included
        return 65534, 65534


def _processes_of(uid: int) -> int:
    """How many processes ``uid`` runs now (RLIMIT_NPROC counts them all)."""
    n = 0
    try:
        entries = os.listdir("/proc")
    except OSError:  # pragma: no cover - no procfs
        return 0
    for name in entries:
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}").st_uid == uid:
                    n += 1
            except OSError:
                pass
    return n


def _reachable_by_other(path: str) -> bool:
    """Whether a user other than the owner can traverse every parent dir and read ``path``."""
    p = os.path.realpath(path)
    parts = p.split("/")
    for i in range(2, len(parts) + 1):
        d = "/".join(parts[:i]) or "/"
        try:
            mode = os.stat(d).st_mode
        except OSError:
            return False
        need = 0o005 if i == len(parts) else 0o001
        if mode & need != need:
            return False
    return True


def _bwrap_argv(bwrap: str, privileged: bool, tmp_bytes: int) -> list[str]:
    """The bubblewrap command line: namespaces, a read-only system view, private /tmp.

    ``privileged``: bwrap runs as root (see :func:`_bwrap_mode`); otherwise it runs as an
    ordinary user and builds its namespaces from a user namespace.
    """
    argv = [bwrap]
    if privileged:
        # No user namespace: the bootstrap keeps CAP_SETUID/SETGID just long enough to
        # become nobody, so RLIMIT_NPROC applies (uid 0 is exempt from it).
        argv += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
                 "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        argv += ["--unshare-all"]
        if _bwrap_supports(bwrap, "--disable-userns"):
            # No nested user namespaces: they would hand the code a namespace root with
            # every capability, which is kernel attack surface.
            argv += ["--unshare-user", "--disable-userns"]
    argv += ["--die-with-parent", "--new-session", "--hostname", "sandbox"]
    argv += ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            argv += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            argv += ["--ro-bind", top, top]
    argv += ["--perms", "0755", "--dir", "/etc"]
    for f in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/localtime"):
        argv += ["--ro-bind-try", f, f]
    made: set[str] = {"/", "/usr", "/tmp", "/proc", "/dev", "/etc"}
    for prefix in _prefixes():
        if prefix == "/usr" or prefix.startswith("/usr/"):
            continue
        # Parent dirs the sandbox creates must be traversable by nobody (default 0700).
        parts = prefix.strip("/").split("/")
        for i in range(1, len(parts)):
            d = "/" + "/".join(parts[:i])
            if d not in made:
                argv += ["--perms", "0755", "--dir", d]
                made.add(d)
        argv += ["--ro-bind", prefix, prefix]
        made.add(prefix)
    argv += ["--proc", "/proc", "--dev", "/dev", "--size", str(tmp_bytes), "--perms", "1777", "--tmpfs", "/tmp",
             "--chdir", "/tmp", "--clearenv"]
    for k, v in _clean_env("/tmp").items():
        argv += ["--setenv", k, v]
    return argv


_HELP_CACHE: dict[str, str] = {}


def _bwrap_supports(bwrap: str, option: str) -> bool:
    """Whether this bubblewrap knows ``option`` (older releases lack some)."""
    if bwrap not in _HELP_CACHE:
        try:
            r = subprocess.run([bwrap, "--help"], capture_output=True, timeout=10, stdin=subprocess.DEVNULL)
            _HELP_CACHE[bwrap] = (r.stdout + r.stderr).decode(errors="replace")
        except (OSError, subprocess.SubprocessError):
            _HELP_CACHE[bwrap] = ""
    return option in _HELP_CACHE[bwrap]


def _clean_env(home: str) -> dict[str, str]:
    """The only environment the child sees: nothing inherited (no tokens, no proxies)."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": home,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONIOENCODING": "utf-8",
        "PYTHONHASHSEED": "0",
    }


_PROBE_LOCK = threading.Lock()
_PROBE: dict[int, tuple[str, str | None]] = {}


def bwrap_available() -> bool:
    """Whether bubblewrap is installed and can start a sandbox here (cached per process).

    bwrap may be installed yet unusable (unprivileged user namespaces disabled, seccomp
    in a container); a real one-line sandboxed run decides.

    Example:
        >>> from stepgym.tools.sandbox import bwrap_available
        >>> isinstance(bwrap_available(), bool)
        True
    """
    return _bwrap_problem() is None


def _probe(mode: str) -> str | None:
    """Run ``print('ok')`` in a real sandbox of ``mode``; ``None`` when it works."""
    exe = shutil.which("bwrap")
    if exe is None:
        return f"bwrap is not installed (Debian/Ubuntu: {_BWRAP_APT})"
    argv = _bwrap_argv(exe, mode == "privileged", 1 << 20) + [_interpreter(), "-I", "-S", "-B", "-c", "print('ok')"]
    user: dict = {}
    if mode == "nobody":
        uid, gid = _nobody()
        user = {"user": uid, "group": gid, "extra_groups": []}
    try:
        r = subprocess.run(argv, capture_output=True, timeout=20, stdin=subprocess.DEVNULL, cwd="/", **user)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"bwrap cannot start a sandbox here: {exc}"
    if r.returncode == 0 and r.stdout.strip() == b"ok":
        return None
    return f"bwrap cannot start a sandbox here: {r.stderr.decode(errors='replace').strip()[:300]}"


def _bwrap_mode() -> tuple[str, str | None]:
    """How bubblewrap runs here, and what stops it (cached per process).

    * ``"user"``: not root; unprivileged bwrap (user namespace, no nested ones).
    * ``"nobody"``: root, and ``nobody`` can run the interpreter: bwrap is started as
      ``nobody`` and runs unprivileged, exactly as for an ordinary user.
    * ``"privileged"``: root, and the interpreter is not reachable by ``nobody`` (e.g.
      pyenv under ``/root``): bwrap runs as root without a user namespace and the child
      drops to ``nobody`` itself before running any code (``RLIMIT_NPROC`` does not bind
      uid 0); nested user namespaces stay possible (kernel attack surface).
    """
    key = os.geteuid()
    with _PROBE_LOCK:
        if key in _PROBE:
            return _PROBE[key]
        if key != 0:
            result = ("user", _probe("user"))
        else:
            result = ("privileged", None)
            if all(_reachable_by_other(p) for p in [_interpreter(), *_stdlib_roots(), *_prefixes()]):
                if _probe("nobody") is None:
                    result = ("nobody", None)
            if result[0] == "privileged":
                result = ("privileged", _probe("privileged"))
        _PROBE[key] = result
        return result


def _bwrap_problem() -> str | None:
    return _bwrap_mode()[1]


class Sandbox:
    """Runs Python source in an isolated child process; one fresh process per call.

    Args:
        limits: resource bounds (:class:`Limits`).
        isolation: ``"auto"`` (bwrap when it works here, else rlimits), ``"bwrap"``
            (require it; raises :class:`~stepgym.errors.DependencyNotInstalled`
            otherwise) or ``"rlimits"`` (no namespaces: rlimits, scrubbed env, temp
            dir, privilege drop when root, audit-hook guard).

    ``run`` never raises for anything the code does; sandbox failures come back in
    :attr:`RunResult.error`.

    Example:
        >>> from stepgym.tools.sandbox import Sandbox
        >>> r = Sandbox(isolation="rlimits").run("import socket")
        >>> r.ok, "not allowed" in r.stderr
        (False, True)
    """

    def __init__(self, limits: Limits | None = None, *, isolation: str = "auto", prestart: bool = False) -> None:
        if isolation not in ISOLATIONS:
            raise InvalidArgument(f"isolation must be one of {ISOLATIONS}, got {isolation!r}")
        self.limits = limits or Limits()
        if not isinstance(self.limits, Limits):
            raise InvalidArgument(f"limits must be a stepgym.tools.sandbox.Limits, got {type(limits).__name__}")
        if isolation == "bwrap":
            problem = _bwrap_problem()
            if problem is not None:
                raise DependencyNotInstalled(f"isolation='bwrap' ({problem})", _BWRAP_APT)
        elif isolation == "auto":
            isolation = "bwrap" if _bwrap_problem() is None else "rlimits"
        self.isolation = isolation
        self._bwrap_mode = _bwrap_mode()[0] if isolation == "bwrap" else ""
        self._python = _interpreter()
        self._as_root = os.geteuid() == 0
        self._nobody = _nobody()
        # Without bwrap, root drops to nobody only if nobody can still run the interpreter
        # and read the standard library (not so for a Python installed under /root).
        self._drop_in_rlimits = self._as_root and all(
            _reachable_by_other(p) for p in [self._python, *_stdlib_roots()]
        )
        self.prestart = bool(prestart)
        self._lock = threading.Lock()
        # The spare child (prestart=True): [proc, workdir, pid of the process that owns it].
        # A finalizer kills it when the sandbox is garbage-collected or the process exits.
        self._spare: list = []
        self._finalizer = weakref.finalize(self, _drop_spare, self._spare)

    def run(self, code: str) -> RunResult:
        """Run ``code`` (Python source) and return what it printed and how it ended."""
        t0 = time.monotonic()
        try:
            return self._run(code, t0)
        except Exception as exc:  # the sandbox must never take the env down
            return RunResult(isolation=self.isolation, error=f"sandbox failure: {type(exc).__name__}: {exc}",
                             wall_s=time.monotonic() - t0)
        finally:
            if self.prestart:
                self._refill()

    def close(self) -> None:
        """Kill the pre-started child, if any (``prestart=True``); ``run`` still works after."""
        with self._lock:
            _drop_spare(self._spare)

    def __getstate__(self) -> dict:
        # A copy (deepcopy, pickle to a worker) gets no child and no lock of ours.
        state = dict(self.__dict__)
        for k in ("_lock", "_spare", "_finalizer"):
            state.pop(k, None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._spare = []
        self._finalizer = weakref.finalize(self, _drop_spare, self._spare)

    def _take_spare(self) -> tuple[subprocess.Popen, str | None] | None:
        with self._lock:
            if not self._spare:
                return None
            proc, workdir, owner = self._spare
            if owner != os.getpid():
                # Inherited through fork: the child belongs to the parent process.
                self._spare.clear()
                return None
            self._spare.clear()
        if _has_exited(proc.pid):  # died while waiting (killed from outside): start fresh
            _finish_quietly(proc, workdir)
            return None
        return proc, workdir

    def _refill(self) -> None:
        """Start the child for the next call now, so its start-up overlaps the env's work."""
        with self._lock:
            if self._spare and self._spare[2] == os.getpid():
                return
            self._spare.clear()
        started = self._spawn(time.monotonic())
        if isinstance(started, RunResult):
            return
        with self._lock:
            if self._spare:  # another thread refilled first
                extra = started
            else:
                self._spare.extend([started[0], started[1], os.getpid()])
                return
        _finish_quietly(*extra)

    # -- internals ------------------------------------------------------------------
    def _run(self, code: str, t0: float) -> RunResult:
        if not isinstance(code, str):
            return RunResult(isolation=self.isolation, error=f"code must be a str, got {type(code).__name__}")
        started = (self._take_spare() if self.prestart else None) or self._spawn(t0)
        if isinstance(started, RunResult):
            return started
        return self._finish(started[0], started[1], code, t0)

    def _spawn(self, t0: float) -> tuple[subprocess.Popen, str | None] | RunResult:
        """Start a sandboxed child that waits for its code on stdin."""
        lim = self.limits
        workdir: str | None = None
        uid = gid = None
        if self.isolation == "bwrap":
            popen_user: dict = {}
            privileged = self._bwrap_mode == "privileged"
            if privileged:
                uid, gid = self._nobody  # the child drops to nobody itself
                runner_uid = uid
            elif self._bwrap_mode == "nobody":
                popen_user = {"user": self._nobody[0], "group": self._nobody[1], "extra_groups": []}
                runner_uid = self._nobody[0]
            else:
                runner_uid = os.getuid()
            argv = _bwrap_argv(shutil.which("bwrap") or "bwrap", privileged, 4 * lim.file_mb << 20)
            cwd, env, guard = "/", None, False
            real_wd = ""
            read_roots: list[str] = []
            write_roots: list[str] = []
        else:
            workdir = tempfile.mkdtemp(prefix="stepgym-sandbox-")
            if self._drop_in_rlimits:
                os.chown(workdir, *self._nobody)
                popen_user = {"user": self._nobody[0], "group": self._nobody[1], "extra_groups": []}
                runner_uid = self._nobody[0]
            else:
                popen_user = {}
                runner_uid = os.getuid()
            argv = []
            cwd, env, guard = workdir, _clean_env(workdir), True
            real_wd = os.path.realpath(workdir)
            read_roots = [real_wd, *_stdlib_roots(), "/dev/null", "/dev/zero", "/dev/urandom", "/dev/random",
                          "/usr/share/zoneinfo", "/etc/localtime"]
            write_roots = [real_wd, "/dev/null"]
        cfg = {
            "uid": uid, "gid": gid, "cpu": int(lim.cpu_s), "mem": int(lim.memory_mb) << 20,
            "fsize": int(lim.file_mb) << 20, "nofile": int(lim.open_files),
            # RLIMIT_NPROC counts every process of the user, so the bound is relative.
            "nproc": _processes_of(runner_uid) + int(lim.processes) + 2,
            "guard": guard, "pycache": os.path.join(real_wd, ".nopyc"),
            "read_roots": read_roots, "write_roots": write_roots,
            "deny_modules": list(_DENY_MODULES),
        }
        argv = argv + [self._python, "-I", "-S", "-B", "-c", _BOOTSTRAP, repr(cfg)]
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd, env=env,
                start_new_session=True, close_fds=True, **popen_user,
            )
        except OSError as exc:
            if workdir:
                shutil.rmtree(workdir, ignore_errors=True)
            return RunResult(isolation=self.isolation, error=f"could not start the sandbox: {exc}",
                             wall_s=time.monotonic() - t0)
        return proc, workdir

    def _finish(self, proc: subprocess.Popen, workdir: str | None, code: str, t0: float) -> RunResult:
        """Hand ``code`` to a started child, collect the result, clean up everything."""
        try:
            return self._communicate(proc, code.encode("utf-8", "replace"), t0)
        finally:
            _finish_quietly(proc, workdir)

    def _communicate(self, proc: subprocess.Popen, payload: bytes, t0: float) -> RunResult:
        lim = self.limits
        if proc.stdin is None or proc.stdout is None or proc.stderr is None:  # invariant, not user input
            raise RuntimeError('internal error: proc.stdin is not None and proc.stdout is not None and proc.stderr is not None')
        # The bootstrap reads all of stdin before anything else, so a blocking write cannot
        # deadlock; a child that died at start gives a broken pipe, reported below.
        try:
            proc.stdin.write(payload)
            proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        deadline = time.monotonic() + lim.wall_s
        bufs = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
        counts = dict.fromkeys(bufs, 0)
        sel = selectors.DefaultSelector()
        for fd in bufs:
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ)
        timed_out = killed_for_output = False
        exited_at: float | None = None
        while True:
            now = time.monotonic()
            if now >= deadline:
                timed_out = True
                break
            if sel.get_map():
                for key, _ in sel.select(timeout=min(0.05, deadline - now)):
                    fd = key.fd
                    try:
                        chunk = os.read(fd, 65536)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        sel.unregister(fd)
                        continue
                    counts[fd] += len(chunk)
                    room = lim.output_bytes - len(bufs[fd])
                    if room > 0:
                        bufs[fd] += chunk[:room]
                if sum(counts.values()) > lim.kill_output_bytes:
                    killed_for_output = True
                    break
            else:
                time.sleep(0.002)
            if _has_exited(proc.pid):
                if not sel.get_map():
                    break
                # Exited but something else holds the pipes: give it a moment, then stop.
                exited_at = exited_at or time.monotonic()
                if time.monotonic() - exited_at > 0.2:
                    break
        sel.close()
        # Always: the leader may be gone while children it started live on.
        _kill_group(proc)
        status = proc.wait()
        out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
        exit_code: int | None = status
        sig: int | None = None
        if status < 0:
            exit_code, sig = None, -status
        elif self.isolation == "bwrap" and status > 128 and status - 128 < 65:
            # bwrap reports a child killed by signal N as exit status 128 + N.
            exit_code, sig = None, status - 128
        return RunResult(
            stdout=bytes(bufs[out_fd]).decode("utf-8", "replace"),
            stderr=bytes(bufs[err_fd]).decode("utf-8", "replace"),
            exit_code=exit_code,
            signal=sig,
            timed_out=timed_out,
            output_cut=killed_for_output or counts[out_fd] > lim.output_bytes or counts[err_fd] > lim.output_bytes,
            output_killed=killed_for_output,
            isolation=self.isolation,
            wall_s=time.monotonic() - t0,
            stdout_bytes=counts[out_fd],
            stderr_bytes=counts[err_fd],
        )


def _finish_quietly(proc: subprocess.Popen, workdir: str | None) -> None:
    """Kill a child (used or not), close its pipes, reap it and remove its temp dir."""
    _kill_group(proc)
    for f in (proc.stdin, proc.stdout, proc.stderr):
        try:
            if f is not None:
                f.close()
        except OSError:
            pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not take that long
        pass
    if workdir:
        shutil.rmtree(workdir, ignore_errors=True)


def _drop_spare(spare: list) -> None:
    if spare:
        proc, workdir, owner = spare
        spare.clear()
        if owner == os.getpid():
            _finish_quietly(proc, workdir)


def _has_exited(pid: int) -> bool:
    """Exit check that leaves the child unreaped, so its process group id stays ours."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the child's whole process group (it leads it: start_new_session=True)."""
    if proc.returncode is not None:
        return  # reaped: the group id may already belong to someone else
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
