"""A `stepgym serve` process for tests: started on a free port of 127.0.0.1, its output collected."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any


class Server:
    """A `stepgym serve` subprocess; its output lines are collected by a reader thread.

    Subclasses start another serving command: they set ``command`` (the subcommand and its
    fixed options), ``url_pattern`` (the startup line: group 1 the name, group 2 the URL) and
    ``health_path``.
    """

    command: tuple[str, ...] = ("serve", "--threads", "1")
    url_pattern = r"^serving (\S+) at (http://127\.0\.0\.1:\d+/v1)"
    health_path = "/health"  # replaces the URL's path

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stepgym.cli", self.command[0], "--port", "0", *self.command[1:], *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self.url: str | None = None
        self._started = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            m = re.search(self.url_pattern, line)
            if m and self.url is None:
                self.name, self.url = m.group(1), m.group(2)
                self._started.set()
        self._started.set()

    def wait(self, timeout: float = 120) -> "Server":
        self._started.wait(timeout)
        assert self.url, f"stepgym {self.command[0]} did not start:\n" + "\n".join(self.lines)
        health = re.sub(r"(http://[^/]+).*", r"\1", self.url) + self.health_path
        for _ in range(400):  # the socket is bound before uvicorn starts accepting
            try:
                urllib.request.urlopen(health, timeout=5)
                return self
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.05)
        raise AssertionError("no /health answer:\n" + "\n".join(self.lines))

    def client(self, **kw: Any) -> Any:
        import openai

        return openai.OpenAI(base_url=self.url, api_key="unused", max_retries=0, timeout=60, **kw)

    def request_lines(self) -> list[str]:
        return [ln for ln in self.lines if re.match(r"\d\d:\d\d:\d\d (GET|POST) ", ln)]

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
