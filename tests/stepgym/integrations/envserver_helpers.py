"""A `stepgym serve-env` process for tests: started on a free port of 127.0.0.1, its output collected."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request


class EnvServer:
    """A `stepgym serve-env` subprocess on a free port; its output lines are collected."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stepgym.cli", "serve-env", "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.lines: list[str] = []
        self.url: str | None = None
        self._started = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            m = re.search(r"^serving \S+ at (http://127\.0\.0\.1:\d+)", line)
            if m and self.url is None:
                self.url = m.group(1)
                self._started.set()
        self._started.set()

    def wait(self, timeout: float = 60) -> "EnvServer":
        self._started.wait(timeout)
        assert self.url, "serve-env did not start:\n" + "\n".join(self.lines)
        for _ in range(400):
            try:
                urllib.request.urlopen(self.url + "/health", timeout=5)
                return self
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.02)
        raise AssertionError("no /health answer:\n" + "\n".join(self.lines))

    @property
    def ws(self) -> str:
        return self.url.replace("http://", "ws://") + "/ws"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
