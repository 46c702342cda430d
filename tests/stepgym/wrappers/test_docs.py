"""docs/wrappers.md: every python block runs as written, in order, in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[3] / "docs" / "wrappers.md"


def test_every_python_block_runs(smollm2_tokenizer, monkeypatch, capsys):
    import stepgym.models

    # The blocks load the SmolLM2 tokenizer; serve the session's already loaded one.
    real = stepgym.models.load_tokenizer
    monkeypatch.setattr(stepgym.models, "load_tokenizer",
                        lambda spec, **kw: smollm2_tokenizer if spec == "smollm2-135m" else real(spec, **kw))
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)
    assert len(blocks) >= 8
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{DOC.name} block {i}", "exec"), namespace)
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("-0.01 {'env': 0.0, 'step_penalty': -0.01")
    assert "step_penalty" in out and "'truncated': True" in out
