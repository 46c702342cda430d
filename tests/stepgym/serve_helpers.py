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
    """A `stepgym serve` subprocess; its output lines are collected by a reader thread."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stepgym.cli", "serve", "--port", "0", "--threads", "1", *args],
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
            m = re.search(r"^serving (\S+) at (http://127\.0\.0\.1:\d+/v1)", line)
            if m and self.url is None:
                self.name, self.url = m.group(1), m.group(2)
                self._started.set()
        self._started.set()

    def wait(self, timeout: float = 120) -> Server:
        self._started.wait(timeout)
        assert self.url, "server did not start:\n" + "\n".join(self.lines)
        for _ in range(200):  # the socket is bound before uvicorn starts accepting
            try:
                urllib.request.urlopen(self.url.replace("/v1", "/health"), timeout=5)
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
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
