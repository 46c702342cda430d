"""Escape attempts against the python tool's sandbox; every one must fail.

Each attack runs under both isolation modes: ``bwrap`` (namespaces + rlimits; skipped
with its reason when bubblewrap cannot start here) and ``rlimits`` (no namespaces:
rlimits, scrubbed env, temp dir, privilege drop when root, audit-hook guard). After
each attack the same tool must still answer a normal call.
"""

from __future__ import annotations

import os
import signal
import socket
import time
import uuid
from pathlib import Path

import pytest

from stepgym.errors import InvalidArgument
from stepgym.tools.base import Tool, validate_arguments
from stepgym.tools.python import PythonTool
from stepgym.tools.sandbox import Limits, Sandbox, _bwrap_problem

BWRAP_PROBLEM = _bwrap_problem()

MODES = [
    pytest.param(
        "bwrap",
        marks=pytest.mark.skipif(BWRAP_PROBLEM is not None, reason=f"bubblewrap unavailable: {BWRAP_PROBLEM}"),
    ),
    "rlimits",
]


@pytest.fixture(scope="module", params=MODES)
def tool(request) -> PythonTool:
    # Small limits keep the whole file fast: loops die after 1 CPU second.
    return PythonTool(timeout_s=2.0, cpu_s=1, memory_mb=256, max_output_chars=2000, isolation=request.param)


@pytest.fixture
def usr1():
    """Counts SIGUSR1 deliveries to this (the env's) process during the test."""
    got: list[int] = []
    old = signal.signal(signal.SIGUSR1, lambda *_: got.append(1))
    yield got
    signal.signal(signal.SIGUSR1, old)


def still_works(tool: PythonTool) -> None:
    out = tool(code="print(sum(i * i for i in range(10)))")
    assert out.ok and out.text == "285", out


def test_normal_code_runs(tool):
    out = tool(code="import math, fractions, statistics\nprint(math.comb(10, 3), fractions.Fraction(1, 3) * 3)")
    assert out.ok, out.text
    assert out.text == "120 1"
    assert isinstance(tool, Tool)
    assert tool.name == "python" and tool.parameters["required"] == ["code"]


def test_exceptions_and_syntax_errors_are_observations(tool):
    out = tool(code="print('before')\nraise ValueError('bad value 17')")
    assert not out.ok
    assert "ValueError: bad value 17" in out.text and "before" in out.text
    out = tool(code="print(")
    assert not out.ok and "SyntaxError" in out.text
    still_works(tool)


def test_read_etc_shadow_fails(tool):
    out = tool(code="print(open('/etc/shadow').read())")
    assert not out.ok
    assert "root:" not in out.text
    assert any(w in out.text for w in ("PermissionError", "FileNotFoundError", "not allowed")), out.text
    still_works(tool)


def test_read_user_home_fails(tool):
    home = Path.home()
    canary = home / f".stepgym-canary-{uuid.uuid4().hex}"
    secret = uuid.uuid4().hex
    try:
        canary.write_text(secret)
    except OSError:
        pytest.skip(f"cannot write a canary file in {home}")
    try:
        out = tool(code=f"print(open({str(canary)!r}).read())")
        assert not out.ok and secret not in out.text, out.text
        listing = tool(code=f"import os; print(os.listdir({str(home)!r}))")
        assert canary.name not in listing.text
    finally:
        canary.unlink()
    still_works(tool)


@pytest.mark.parametrize("where", ["tmp_path", "cwd", "home"])
def test_write_outside_sandbox_fails(tool, tmp_path, where):
    base = {"tmp_path": tmp_path, "cwd": Path.cwd(), "home": Path.home()}[where]
    target = base / f"stepgym-pwned-{uuid.uuid4().hex}"
    try:
        out = tool(code=f"open({str(target)!r}, 'w').write('pwned'); print('wrote')")
        assert not out.ok, out.text
        assert not target.exists()
    finally:
        if target.exists():
            target.unlink()
    still_works(tool)


def test_open_socket_fails(tool):
    # A listener on the host's loopback: even localhost must be out of reach.
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.setblocking(False)
    port = srv.getsockname()[1]
    try:
        code = (
            "import socket\n"
            f"s = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
            "s.sendall(b'hello')\nprint('connected')"
        )
        out = tool(code=code)
        assert not out.ok and "connected" not in out.text, out.text
        with pytest.raises(BlockingIOError):
            srv.accept()
    finally:
        srv.close()
    still_works(tool)


def test_fork_bomb_is_contained(tool):
    t0 = time.monotonic()
    out = tool(code="import os\nwhile True:\n    os.fork()")
    assert not out.ok
    assert time.monotonic() - t0 < tool.timeout_s + 2
    still_works(tool)


def test_subprocess_cannot_escape_the_timeout(tool):
    code = "import subprocess\nsubprocess.Popen(['sleep', '30'])\nprint('started')"
    out = tool(code=code)
    # bwrap: the sleep starts inside the namespace and dies with it; rlimits: refused.
    if out.ok:
        assert tool.isolation == "bwrap"
    still_works(tool)


def test_memory_bomb_fails(tool):
    out = tool(code="chunks = []\nwhile True:\n    chunks.append(bytearray(50 * 2**20))")
    assert not out.ok
    assert "MemoryError" in out.text or "memory" in out.text, out.text
    still_works(tool)


def test_infinite_loop_is_stopped(tool):
    t0 = time.monotonic()
    out = tool(code="while True:\n    pass")
    took = time.monotonic() - t0
    assert not out.ok and ("CPU" in out.text or "time limit" in out.text), out.text
    assert took < tool.timeout_s + 1.5
    still_works(tool)


def test_sleeping_code_hits_the_wall_clock(tool):
    quick = PythonTool(timeout_s=0.8, cpu_s=1, isolation=tool.isolation)
    t0 = time.monotonic()
    out = quick(code="import time\ntime.sleep(60)")
    assert not out.ok and "time limit" in out.text, out.text
    assert time.monotonic() - t0 < quick.timeout_s + 1.5
    still_works(quick)


def test_kill_parent_and_env_process_fails(tool, usr1):
    code = (
        "import os, signal\n"
        "errors = []\n"
        f"for pid in (os.getppid(), {os.getpid()}):\n"
        "    try:\n"
        "        os.kill(pid, signal.SIGUSR1)\n"
        "    except Exception as e:\n"
        "        errors.append(type(e).__name__)\n"
        "if errors:\n"
        "    raise PermissionError('denied: ' + ','.join(errors))\n"
    )
    out = tool(code=code)
    time.sleep(0.05)
    assert usr1 == [], "a signal from the sandbox reached the env process"
    assert not out.ok, out.text
    still_works(tool)


def test_ctypes_fails(tool, usr1):
    code = (
        "import ctypes\n"
        "libc = ctypes.CDLL(None)\n"
        f"libc.kill({os.getpid()}, 10)\n"
        "fd = libc.open(b'/etc/shadow', 0)\n"
        "assert fd >= 0, 'open of /etc/shadow failed'\n"
        "buf = ctypes.create_string_buffer(64)\n"
        "libc.read(fd, buf, 64)\nprint(buf.value)"
    )
    out = tool(code=code)
    time.sleep(0.05)
    assert usr1 == []
    assert not out.ok and "root:" not in out.text, out.text
    crash = tool(code="import ctypes\nctypes.string_at(0)")
    assert not crash.ok
    still_works(tool)


GUARD_BYPASSES = {
    # realpath is Python code reading module globals: patch it to say "inside".
    "patched posixpath": "import os, posixpath\nwd = os.getcwd()\nposixpath._joinrealpath = lambda *a: (wd, True)\n"
                         "print(open('/etc/shadow').read())",
    "symlink out": "import os\nos.symlink('/etc/shadow', 'link')\nprint(open('link').read())",
    "dot-dot": "print(open('../../../../../../etc/shadow').read())",
    "PathLike": "class P:\n    def __fspath__(self):\n        return '/etc/shadow'\nprint(open(P()).read())",
    "str subclass": "class S(str):\n    def __str__(self):\n        return 'ok.txt'\nprint(open(S('/etc/shadow')).read())",
}


@pytest.mark.parametrize("attack", sorted(GUARD_BYPASSES))
def test_known_guard_bypasses_fail(tool, attack):
    out = tool(code=GUARD_BYPASSES[attack])
    assert not out.ok and "root:" not in out.text, out.text
    still_works(tool)


@pytest.mark.parametrize("code", [
    "class S(str):\n    def __str__(self):\n        return 'json'\n    def split(self, *a):\n        return ['json']\n"
    "print(__import__(S('_ctypes')))",
    "import importlib.util, os, sys\nd = sys.base_prefix + '/lib/python3.11/lib-dynload'\n"
    "so = d + '/' + [f for f in os.listdir(d) if f.startswith('_ctypes.')][0]\n"
    "spec = importlib.util.spec_from_file_location('x._ctypes', so)\nprint(importlib.util.module_from_spec(spec))",
    "def f():\n    pass\nf.__code__ = (lambda: 1).__code__",
    "import gc\nprint(len(gc.get_objects()))",
    # A directory fd makes *at() calls resolve paths the audit events do not show.
    "import os, sysconfig\nfd = os.open(sysconfig.get_paths()['stdlib'], os.O_RDONLY)\n"
    "open('stepgym-planted.py', 'w', opener=lambda p, f: os.open(p, f, dir_fd=fd)).write('x')",
    "import os, sysconfig\nfd = os.open(sysconfig.get_paths()['stdlib'], os.O_RDONLY)\n"
    "os.symlink('x', 'stepgym-planted.py', dir_fd=fd)",
])
def test_guard_refuses_its_known_escape_hatches(code):
    """Without bwrap the audit hook is the only wall: its own weak spots stay closed."""
    import sysconfig

    out = PythonTool(timeout_s=2, isolation="rlimits")(code=code)
    assert not out.ok and "not allowed" in out.text, out.text
    assert not os.path.lexists(os.path.join(sysconfig.get_paths()["stdlib"], "stepgym-planted.py"))


def test_guard_allows_ordinary_code():
    code = (
        "import fractions, statistics, decimal, json, re, datetime, collections, itertools, heapq, math\n"
        "from dataclasses import dataclass\nfrom pathlib import Path\nimport tempfile, glob\n"
        "@dataclass\nclass A:\n    x: int = 1\n"
        "Path('z.txt').write_text('q')\n"
        "with tempfile.NamedTemporaryFile('w', delete=False) as f:\n    f.write('t')\n"
        "print(A().x, Path('z.txt').read_text(), sorted(glob.glob('*.txt')), statistics.mean([1, 2, 3]))"
    )
    out = PythonTool(timeout_s=5, isolation="rlimits")(code=code)
    assert out.ok and out.text == "1 q ['z.txt'] 2", out.text


def test_huge_output_is_cut(tool):
    t0 = time.monotonic()
    out = tool(code="print('x' * 10**8)")
    assert len(out.text) <= tool.max_output_chars + 200
    assert time.monotonic() - t0 < tool.timeout_s + 1
    flood = tool(code="while True:\n    print('y' * 1000)")
    assert not flood.ok and "printed more than" in flood.text
    big = tool(code="print('z' * 5000)")
    assert big.ok and len(big.text) <= tool.max_output_chars
    still_works(tool)


def test_control_characters_are_made_visible(tool):
    out = tool(code="print('a\\x1b[2J\\x07b\\r\\tc\\x9b')")
    assert out.ok and out.text == "a\\x1b[2J\\x07b\\x0d\tc\\x9b", out.text


def test_environment_is_scrubbed(tool, monkeypatch):
    secret = uuid.uuid4().hex
    monkeypatch.setenv("STEPGYM_TEST_API_KEY", secret)
    out = tool(code="import os\nprint(sorted(os.environ.items()))")
    assert out.ok, out.text
    assert secret not in out.text and "STEPGYM_TEST_API_KEY" not in out.text


def test_hostile_text_never_raises(tool):
    for code in ["\ud800print(1)", "\x00\x01", "x" * (tool.max_code_chars + 1), "   "]:
        out = tool(code=code)
        assert isinstance(out.text, str) and not out.ok, (code[:20], out)
    # A lone surrogate inside a string literal is replaced, not fatal.
    out = tool(code="print('a\udcffb')")
    assert out.ok and out.text.startswith("a") and out.text.endswith("b")
    out.text.encode("utf-8")
    assert not tool(code=123).ok  # type: ignore[arg-type]
    assert not tool().ok
    still_works(tool)


def test_tool_argument_validation():
    tool = PythonTool(timeout_s=1, isolation="rlimits")
    assert validate_arguments(tool, {"code": "print(1)"}) == {"code": "print(1)"}
    assert isinstance(validate_arguments(tool, {"script": "x"}), str)
    for bad in ({"timeout_s": 0}, {"timeout_s": "5"}, {"isolation": "docker"}, {"max_output_chars": 1}):
        with pytest.raises(InvalidArgument):
            PythonTool(**bad)
    with pytest.raises(InvalidArgument):
        Limits(memory_mb=1)
    with pytest.raises(InvalidArgument):
        Sandbox(isolation="none")


def test_bwrap_required_but_missing_says_how_to_install(monkeypatch):
    import stepgym.tools.sandbox as sb

    monkeypatch.setattr(sb, "_bwrap_problem", lambda: "bwrap is not installed")
    from stepgym.errors import DependencyNotInstalled

    with pytest.raises(DependencyNotInstalled, match="apt-get install -y bubblewrap"):
        Sandbox(isolation="bwrap")
    assert Sandbox(isolation="auto").isolation == "rlimits"


def test_tooluse_env_runs_python_tool_calls_end_to_end():
    """ToolUse-v0 with the python tool: the expert's code step runs sandboxed and succeeds."""
    import gymnasium as gym

    import stepgym  # noqa: F401
    from stepgym.actions import format_tool_call

    env = gym.make("stepgym/ToolUse-v0", tools=("search", "lookup", "calculator", "python"), difficulty="medium")
    assert env.unwrapped.tools["python"].name == "python"
    used_python = False
    for seed in range(30):
        obs, info = env.reset(seed=seed)
        if seed == 0:
            assert "python(code: string)" in obs
        done = False
        actions = []
        while not done:
            action = env.unwrapped.expert_action()
            actions.append(action)
            obs, reward, te, tr, info = env.step(action)
            if '"name": "python"' in action:
                assert info["action_valid"] and info["error"] is None, obs
                assert obs.strip().lstrip("-").isdigit(), obs
            done = te or tr
        assert info["success"] is True
        if any('"name": "python"' in a for a in actions):
            used_python = True
            break
    assert used_python, "no task in 30 seeds used the python tool"
    # A hostile call in the middle of an episode: error observation, episode goes on.
    env.reset(seed=0)
    obs, reward, te, tr, info = env.step(format_tool_call("python", {"code": "import os\nos.kill(os.getppid(), 9)"}))
    assert not te and not tr and info["error"] and obs.startswith("Error")
    obs, *_ = env.step(format_tool_call("python", {"code": "print(2 ** 10)"}))
    assert obs == "1024"


@pytest.mark.parametrize("isolation", [p.values[0] if hasattr(p, "values") else p for p in MODES])
def test_prestart_keeps_every_call_isolated(isolation):
    if isolation == "bwrap" and BWRAP_PROBLEM is not None:
        pytest.skip(f"bubblewrap unavailable: {BWRAP_PROBLEM}")
    import copy
    import pickle

    tool = PythonTool(timeout_s=2, cpu_s=1, isolation=isolation, prestart=True)
    try:
        first = tool(code="open('marker', 'w').write('x')\nimport os\nprint(os.path.exists('marker'))")
        spare = tool.sandbox._spare[0]
        assert spare.poll() is None, "no child was started ahead of the next call"
        second = tool(code="import os\nprint(os.path.exists('marker'))")
        assert (first.text, second.text) == ("True", "False"), "a pre-started child ran two programs"
        assert spare.poll() is not None, "the spare child was not the one used"
        # A hostile call does not poison the spare that follows it.
        assert not tool(code="while True:\n    pass").ok
        still_works(tool)
        # Copies (deepcopy, pickle to a worker) start their own children.
        for clone in (copy.deepcopy(tool), pickle.loads(pickle.dumps(tool))):
            still_works(clone)
            clone.close()
        last = tool.sandbox._spare[0]
    finally:
        tool.close()
    assert tool.sandbox._spare == [] and last.poll() is not None, "close() left the spare child running"
    still_works(tool)
    tool.close()


def test_root_runs_bwrap_as_nobody_when_nobody_reaches_the_interpreter(monkeypatch):
    """The containers-as-root path: bwrap itself runs as nobody, no nested user namespaces."""
    import json
    import shutil
    import subprocess

    import stepgym.tools.sandbox as sb

    system_python = shutil.which("python3", path="/usr/bin:/usr/local/bin")
    if os.geteuid() != 0 or BWRAP_PROBLEM is not None or system_python is None:
        pytest.skip("needs root, working bubblewrap and a system python3 (this path is for containers run as root)")
    paths = json.loads(subprocess.run(
        [system_python, "-I", "-S", "-c",
         "import sys, sysconfig, json; p = sysconfig.get_paths(); "
         "print(json.dumps([sys.base_prefix, p['stdlib'], p['platstdlib']]))"],
        capture_output=True, text=True, check=True).stdout)
    monkeypatch.setattr(sb, "_interpreter", lambda: os.path.realpath(system_python))
    monkeypatch.setattr(sb, "_prefixes", lambda: [os.path.realpath(paths[0])])
    monkeypatch.setattr(sb, "_stdlib_roots", lambda: sorted({os.path.realpath(p) for p in paths[1:]}))
    monkeypatch.setattr(sb, "_PROBE", {})
    if not all(sb._reachable_by_other(p) for p in [sb._interpreter(), *sb._stdlib_roots()]):
        pytest.skip(f"{system_python} is not reachable by nobody here")
    box = Sandbox(Limits(wall_s=3, cpu_s=1, memory_mb=256), isolation="bwrap")
    assert box._bwrap_mode == "nobody"
    assert box.run("import os\nprint(os.getuid())").stdout.strip() == str(sb._nobody()[0])
    bomb = box.run("import os\nwhile True:\n    os.fork()")
    assert not bomb.ok and "BlockingIOError" in bomb.stderr
    if shutil.which("unshare", path="/usr/bin:/bin"):
        nested = box.run("import subprocess\nr = subprocess.run(['unshare', '-U', '-r', 'id'], capture_output=True)\n"
                         "print(r.returncode)")
        assert nested.stdout.strip() not in ("", "0"), "a nested user namespace was created"
    assert not box.run("print(open('/etc/shadow').read())").ok
