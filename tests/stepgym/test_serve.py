"""`stepgym serve` as a real process on 127.0.0.1, queried by the OpenAI agent and raw HTTP."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

import stepgym
from stepgym.agents import OpenAIAgent
from stepgym.cli import main

pytest.importorskip("torch")
pytest.importorskip("uvicorn")


def test_serve_command_answers_chat_completions_and_errors():
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stepgym.cli",
            "serve",
            "--model",
            "tiny",
            "--port",
            "0",
            "--name",
            "tiny-policy",
            "--threads",
            "1",
            "--max-new-tokens",
            "6",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = None
        deadline = time.monotonic() + 90
        lines = []
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r"at (http://127\.0\.0\.1:\d+/v1)", line)
            url = m.group(1) if m else None
        assert url, "server did not start:\n" + "".join(lines)
        for _ in range(100):  # the socket is bound before uvicorn starts accepting
            try:
                urllib.request.urlopen(url.replace("/v1", "/health"), timeout=5)
                break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        agent = OpenAIAgent("tiny-policy", url, temperature=0.0, max_tokens=None)  # the server's --max-new-tokens
        assert agent.list_models() == ["tiny-policy"]
        env = stepgym.make("stepgym/ToolUse-v0")
        obs, info = env.reset(seed=0)
        action = agent.act(obs, info)
        assert isinstance(action, str) and 1 <= agent.last_token_counts[0] <= 6
        env.step(action)
        req = urllib.request.Request(
            url + "/chat/completions",
            data=json.dumps({"model": "tiny-policy", "messages": [{"role": "user"}], "top_p": 5}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(req, timeout=10)
        assert exc.value.code == 400
        assert json.loads(exc.value.read())["error"]["param"] == "top_p"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_serve_rejects_bad_ports(capsys):
    assert main(["serve", "--model", "tiny", "--port", "70000"]) == 2
    assert "--port" in capsys.readouterr().err
