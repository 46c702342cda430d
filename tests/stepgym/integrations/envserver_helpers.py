"""A `stepgym serve-env` process for tests: started on a free port of 127.0.0.1, its output collected."""

from __future__ import annotations

from tests.stepgym.serve_helpers import Server


class EnvServer(Server):
    """A `stepgym serve-env` subprocess on a free port; its output lines are collected."""

    command = ("serve-env",)
    url_pattern = r"^serving (\S+) at (http://127\.0\.0\.1:\d+)"

    @property
    def ws(self) -> str:
        return self.url.replace("http://", "ws://") + "/ws"
