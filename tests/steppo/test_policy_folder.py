"""stepgym.policy_folder: the folder the trainer saves and `checkpoint:` agents load, and one action decoding."""

from __future__ import annotations

import json
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from stepgym.agents import CheckpointAgent  # noqa: E402
from stepgym.models import load_model  # noqa: E402
from stepgym.policy_folder import (  # noqa: E402
    CONFIG_FILE,
    VALUE_HEAD_FILE,
    PolicySettings,
    decode_action,
    end_of_turn_ids,
    read_policy_config,
    read_policy_settings,
    write_policy_folder,
)

from steppo.sampling import Sampler  # noqa: E402
from steppo.policy import Policy  # noqa: E402

STOP = ("</tool_call>",)
MAX_NEW = 16


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny", seed=0)


@pytest.fixture(scope="module")
def run_dir(tiny, tmp_path_factory):
    lm, tok = tiny
    out = tmp_path_factory.mktemp("run")
    settings = PolicySettings(max_history_turns=2, history_stride=2, max_prompt_tokens=512, stop_strings=STOP,
                              max_new_tokens=MAX_NEW, temperature=0.7)
    write_policy_folder(out / "policy", lm, tok, settings, extra={"algo": "steppo", "lr": 1e-5},
                        state_dicts={VALUE_HEAD_FILE: {"w": torch.zeros(2)}})
    return out


def test_settings_round_trip_and_extra(run_dir):
    s = read_policy_settings(run_dir)
    assert s == read_policy_settings(run_dir / "policy")
    assert (s.max_history_turns, s.history_stride, s.max_prompt_tokens, s.stop_strings, s.max_new_tokens,
            s.temperature) == (2, 2, 512, STOP, MAX_NEW, 0.7)
    cfg = read_policy_config(run_dir)
    assert cfg["algo"] == "steppo" and cfg["prompt"]["stop_strings"] == list(STOP)
    assert torch.load(run_dir / "policy" / VALUE_HEAD_FILE)["w"].shape == (2,)
    agent = CheckpointAgent(run_dir, temperature=0.0)
    assert (agent.history_turns, agent.history_stride, agent.stop, agent.max_new_tokens) == (2, 2, STOP, MAX_NEW)


def test_folders_written_before_this_module_still_load(tmp_path, tiny):
    lm, tok = tiny
    folder = tmp_path / "policy"
    lm.save_pretrained(folder)
    tok.save_pretrained(folder)
    # what the trainer and `stepgym sft` wrote: the run config, and the prompt settings under "prompt"
    prompt = {"max_history_turns": 3, "history_stride": 1, "max_prompt_tokens": 1024,
              "stop_strings": ["</tool_call>"], "max_new_tokens": 40}
    (folder / CONFIG_FILE).write_text(json.dumps({"algo": "grpo", "max_history_turns": 3, "prompt": prompt}))
    s = read_policy_settings(tmp_path)
    assert s.to_dict() == prompt and s.temperature is None
    assert s.agent_kwargs() == {"history_turns": 3, "history_stride": 1, "stop": STOP, "max_new_tokens": 40}
    (folder / CONFIG_FILE).write_text(json.dumps({"algo": "grpo"}))  # no "prompt": nothing recorded
    assert read_policy_settings(folder) == PolicySettings() and PolicySettings().agent_kwargs() == {}


def test_write_is_atomic_and_replaces(tmp_path, tiny):
    lm, tok = tiny
    target = tmp_path / "policy"
    write_policy_folder(target, lm, tok, PolicySettings(max_new_tokens=5))
    (target / "stale.txt").write_text("from the previous save")
    (tmp_path / "policy.old").mkdir()  # left by a write killed during the swap
    write_policy_folder(target, lm, tok, PolicySettings(max_new_tokens=7))
    assert read_policy_settings(target).max_new_tokens == 7
    assert not (target / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy"]
    write_policy_folder(target, lm, tok)  # neither settings nor extra: no settings file
    assert not (target / CONFIG_FILE).exists() and read_policy_settings(target) == PolicySettings()


def _script_sampler(monkeypatch, script: list[int]) -> None:
    """Make the sampler draw ``script``'s tokens in order (one row)."""
    it = iter(script)

    def draw(probs, generator=None):
        return torch.tensor([next(it) for _ in range(probs.shape[0])], device=probs.device)

    patched = 0
    for name, mod in list(sys.modules.items()):
        if not name.startswith("steppo") or mod is None:
            continue
        for attr in ("sample_inverse_cdf", "_sample_inverse_cdf"):
            if callable(getattr(mod, attr, None)):
                monkeypatch.setattr(mod, attr, draw)
                patched += 1
    assert patched, "the sampler's token draw was not found"


def _cases(tok):
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    im_end, eot = tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")
    return {
        # a stop string, then text the env must not see
        "stop_string": enc('<tool_call>{"name": "calculator"}</tool_call> and more') + [im_end],
        # a special token inside the action, then the end-of-turn token
        "special_then_eos": enc("<|im_start|>answer 4") + [im_end] + enc(" after"),
        # an end-of-turn token that is not the tokenizer's EOS
        "endoftext": enc("answer: 42") + [eot] + enc(" junk"),
        # no end: cut by the token limit
        "length": enc("x = 1 + 2; " * 10),
    }


@pytest.mark.parametrize("case", ["stop_string", "special_then_eos", "endoftext", "length"])
def test_sampler_and_checkpoint_agent_decode_the_same_text(case, run_dir, tiny, monkeypatch):
    lm, tok = tiny
    script = _cases(tok)[case]
    settings = read_policy_settings(run_dir)
    prompt_text = tok.apply_chat_template([{"role": "user", "content": "Task: 2+2?"}], tokenize=False,
                                          add_generation_prompt=True)
    prompt_ids = tok(prompt_text, add_special_tokens=False)["input_ids"]

    # the trainer's side: the sampler draws the scripted ids
    _script_sampler(monkeypatch, script)
    sampler = Sampler(Policy(lm, tok, critic="none"), stop_strings=settings.stop_strings)
    gen = sampler.generate([prompt_ids], max_new_tokens=settings.max_new_tokens)[0]
    assert gen.response_ids == script[: len(gen.response_ids)]

    # the evaluation side: a checkpoint agent whose model generates the same ids
    agent = CheckpointAgent(run_dir, temperature=0.0)

    def fake_generate(input_ids, attention_mask, max_new_tokens, **kw):
        new = torch.tensor([script[:max_new_tokens]], dtype=input_ids.dtype)
        return torch.cat([input_ids, new], dim=1)

    monkeypatch.setattr(agent.model, "generate", fake_generate)
    out = agent.generate([prompt_text])[0]

    assert out.text == gen.text
    assert out.text == decode_action(tok, gen.response_ids, stop_strings=STOP, eos_ids=end_of_turn_ids(tok, lm))
    if case == "stop_string":
        assert out.text.endswith("</tool_call>") and "more" not in out.text
    if case == "special_then_eos":
        assert out.text == "<|im_start|>answer 4"  # special tokens are kept, the end-of-turn token is not
    if case == "endoftext":
        assert out.text == "answer: 42" and out.finish_reason == "stop"
    if case == "length":
        assert len(gen.response_ids) == MAX_NEW and out.finish_reason == "length"
