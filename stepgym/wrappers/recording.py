"""Record every step as JSON Lines, safely; read the file back.

Each line is one step::

    {"run": "3f2a9c1b", "episode": 0, "step": 0, "env_id": "stepgym/ToolUse-v0", "seed": 0,
     "prompt": "...", "action": "...", "observation": "...", "reward": 0.0,
     "terminated": false, "truncated": false, "info": {"action_valid": true, ...}}

``prompt`` is the observation the action was taken from (the state s_t), ``observation``
the one the env returned. ``run`` tells apart wrappers writing to the same file (e.g. the
sub-envs of a vector env), ``episode`` counts episodes within a run.

Safety: lines of an episode are kept in memory and written with a single ``os.write``
on an ``O_APPEND`` descriptor when the episode ends (or at the next ``reset``/``close``),
so a process killed mid-episode (while the model generates, where rollouts spend their
time) loses that episode but leaves no half-written line behind, and several processes
can append to one file. A write can still be cut short when the kill lands inside that one
``write`` call of a large episode (Linux stops a write to a file page by page on SIGKILL)
or the disk fills up; the next open by this wrapper removes such a partial tail, a writer
that finds the file ending in one starts its own lines on a fresh line (so a torn line never
swallows another writer's episode), and :func:`read_trajectories` skips it. Any text a model emits is recorded: lone surrogates become ``\\udXXX`` escapes
instead of crashing the writer, and values JSON cannot hold are written as their ``repr``.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import gymnasium as gym

from stepgym.errors import InvalidArgument

__all__ = ["RecordTrajectories", "read_trajectories", "read_recording", "encode_line", "DEFAULT_INFO_KEYS"]

#: Info keys recorded by default (when present).
DEFAULT_INFO_KEYS: tuple[str, ...] = (
    "action_valid",
    "error",
    "success",
    "reward_components",
    "context",
    "action_format",
    "malformed",
    "action_replaced",
)


def _jsonable(value: Any) -> Any:
    # numpy scalars and arrays become numbers and lists; anything else its repr.
    if hasattr(value, "tolist"):
        try:
            return value.tolist()
        except Exception:  # noqa: BLE001 - fall back to repr for exotic objects
            pass
    return repr(value)


def encode_line(record: dict[str, Any]) -> bytes:
    """One JSON line as UTF-8 bytes; lone surrogates escaped as ``\\udXXX``.

    Example:
        >>> encode_line({"a": "x\\udc80é"})
        b'{"a": "x\\\\udc80\\xc3\\xa9"}\\n'
        >>> json.loads(encode_line({"a": "x\\udc80"}))["a"] == "x\\udc80"
        True
    """
    text = json.dumps(record, ensure_ascii=False, default=_jsonable)
    # ensure_ascii=False keeps the file readable; "backslashreplace" turns an unencodable
    # lone surrogate into the same \\udXXX escape JSON uses, so it round-trips.
    return text.encode("utf-8", errors="backslashreplace") + b"\n"


def _repair_tail(path: Path) -> None:
    """Cut a partial last line (a write cut short) so new lines start clean."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    if size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        # walk back to the last newline
        pos = size
        chunk = 65536
        while pos > 0:
            start = max(0, pos - chunk)
            f.seek(start)
            data = f.read(pos - start)
            i = data.rfind(b"\n")
            if i != -1:
                f.truncate(start + i + 1)
                return
            pos = start
        f.truncate(0)


class RecordTrajectories(gym.Wrapper):
    """Append one JSON line per step to ``path``; each episode is written whole when it ends.

    Args:
        env: any text env.
        path: the ``.jsonl`` file (created with its folder; appended to if it exists).
        info_keys: info keys to record (present ones only), or ``"all"``.
        record_prompt: record the observation each action was taken from.
        fsync: also ``os.fsync`` after each episode (survives a machine crash, slower).

    Example:
        >>> import gymnasium as gym, stepgym, tempfile, os
        >>> from stepgym.wrappers import RecordTrajectories, read_trajectories
        >>> path = os.path.join(tempfile.mkdtemp(), "run.jsonl")
        >>> env = RecordTrajectories(gym.make("stepgym/ToolUse-v0"), path)
        >>> _ = env.reset(seed=0)
        >>> done = False
        >>> while not done:
        ...     _, _, term, trunc, _ = env.step(env.unwrapped.expert_action())
        ...     done = term or trunc
        >>> env.close()
        >>> [len(ep["steps"]) for ep in read_trajectories(path)]
        [2]
    """

    def __init__(
        self,
        env: gym.Env,
        path: str | os.PathLike[str],
        *,
        info_keys: Iterable[str] | str = DEFAULT_INFO_KEYS,
        record_prompt: bool = True,
        fsync: bool = False,
    ) -> None:
        super().__init__(env)
        if info_keys != "all" and (isinstance(info_keys, str) or not all(isinstance(k, str) for k in info_keys)):
            raise InvalidArgument(f"info_keys must be an iterable of str or 'all', got {info_keys!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _repair_tail(self.path)
        self.info_keys = "all" if info_keys == "all" else tuple(info_keys)
        self.record_prompt = bool(record_prompt)
        self.fsync = bool(fsync)
        self.run_id = uuid.uuid4().hex[:8]
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        self._buffer: list[bytes] = []
        self._episode = -1
        self._t = 0
        self._prompt: Any = None
        self._seed: int | None = None
        spec = getattr(env, "spec", None)
        self._env_id = getattr(spec, "id", None)

    @property
    def episode_count(self) -> int:
        """Episodes started so far."""
        return self._episode + 1

    def _info(self, info: dict[str, Any]) -> dict[str, Any]:
        if self.info_keys == "all":
            return dict(info)
        return {k: info[k] for k in self.info_keys if k in info}

    def flush(self) -> None:
        """Write the buffered steps (one ``os.write``) and empty the buffer."""
        if not self._buffer or self._fd is None:
            self._buffer = []
            return
        data = b"".join(self._buffer)
        self._buffer = []
        size = os.fstat(self._fd).st_size
        if size and os.pread(self._fd, 1, size - 1) != b"\n":
            data = b"\n" + data  # another writer was killed mid-write: keep our lines whole
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        if self.fsync:
            os.fsync(self._fd)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self.flush()  # an unfinished episode is kept, with the steps it had
        obs, info = self.env.reset(seed=seed, options=options)
        self._episode += 1
        self._t = 0
        self._seed = seed
        self._prompt = obs
        return obs, info

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        record: dict[str, Any] = {
            "run": self.run_id,
            "episode": self._episode,
            "step": self._t,
            "env_id": self._env_id,
            "seed": self._seed,
        }
        if self.record_prompt:
            record["prompt"] = self._prompt
        record.update(
            action=action,
            observation=obs,
            reward=float(reward),
            terminated=bool(terminated),
            truncated=bool(truncated),
            info=self._info(info),
        )
        self._buffer.append(encode_line(record))
        self._t += 1
        self._prompt = obs
        if terminated or truncated:
            self.flush()
        return obs, reward, terminated, truncated, info

    def close(self) -> None:
        try:
            self.flush()
        finally:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            super().close()


def read_trajectories(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Episodes of a recording, in file order: ``[{"run", "episode", "steps": [...]}, ...]``.

    Lines that do not parse (a partial tail) are skipped; :func:`read_recording` also
    says how many.
    """
    return read_recording(path)[0]


def read_recording(path: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], int]:
    """``(episodes, skipped_lines)`` of a recording; see :func:`read_trajectories`."""
    episodes: dict[tuple[Any, Any], dict[str, Any]] = {}
    skipped = 0
    with open(path, "rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                skipped += 1
                continue
            try:
                rec = json.loads(raw.decode("utf-8", errors="surrogateescape"))
            except ValueError:
                skipped += 1
                continue
            if not isinstance(rec, dict):
                skipped += 1
                continue
            key = (rec.get("run"), rec.get("episode"))
            ep = episodes.get(key)
            if ep is None:
                ep = episodes[key] = {"run": key[0], "episode": key[1], "steps": []}
            ep["steps"].append(rec)
    return list(episodes.values()), skipped
