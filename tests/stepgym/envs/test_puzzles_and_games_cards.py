"""Every puzzle and game env has a card with the sections the suite promises."""

from __future__ import annotations

from pathlib import Path

import pytest

import stepgym

DOCS = Path(__file__).resolve().parents[3] / "docs" / "envs"
NAMES = ["Sokoban", "FrozenLake", "Wordle", "Countdown", "TicTacToe", "ConnectFour", "Negotiation"]


@pytest.mark.parametrize("name", NAMES)
def test_card_exists_and_covers_the_contract(name):
    env_id = f"stepgym/{name}-v0"
    assert env_id in [e.id for e in stepgym.list_envs("stepgym")]
    text = (DOCS / f"{name}.md").read_text()
    assert text.startswith(f"# {env_id}")
    for section in ("## Example", "## Actions", "## Reward and info", "## Knobs (kwargs)", "## Expert", "## Cost"):
        assert section in text, f"{name}.md lacks {section!r}"
    assert "<answer>" in text  # the answer-tag action format is documented
    assert "bench/env_step.py" in text
