"""`stepgym serve`'s token-in/token-out /v1/completions (as vLLM serves it), token-by-token chat
streaming, and the runtime weight updates (vLLM's LoRA adapter endpoints, SGLang's
update_weights_from_disk), queried with the official `openai` client and raw HTTP."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from tests.stepgym.serve_helpers import Server

openai = pytest.importorskip("openai")
torch = pytest.importorskip("torch")
pytest.importorskip("uvicorn")

PROMPT = [5, 17, 99, 300, 42, 7]


@pytest.fixture(scope="module")
def server():
    srv = Server("--model", "tiny", "--name", "tiny", "--max-new-tokens", "8")
    try:
        yield srv.wait()
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def tiny():
    from stepgym.models import load_model

    return load_model("tiny")


def _teacher_forced(model, prompt: list[int], response: list[int], temperature: float) -> list[float]:
    """log softmax(logits / T) of each response token, from one plain forward pass of the model."""
    ids = torch.tensor([prompt + response])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt) - 1: -1].float() / temperature
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(response)[:, None])[:, 0].tolist()


def _post(url: str, body) -> tuple[int, object]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            raw = r.read().decode()
            return r.status, json.loads(raw) if raw.startswith("{") else raw
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_token_ids_in_token_ids_and_model_logprobs_out(server, tiny):
    model, tok = tiny
    client = server.client()
    kw = dict(model="tiny", prompt=PROMPT, logprobs=1, max_tokens=12, temperature=0.7, seed=3,
              extra_body={"return_tokens_as_token_ids": True, "return_token_ids": True})
    r = client.completions.create(**kw)
    (choice,) = r.choices
    assert r.object == "text_completion" and choice.finish_reason in ("stop", "length")
    tokens = choice.logprobs.tokens
    assert all(t.startswith("token_id:") for t in tokens)
    ids = [int(t.split(":")[1]) for t in tokens]
    assert ids == choice.model_extra["token_ids"] and 1 <= len(ids) <= 12
    assert r.usage.prompt_tokens == len(PROMPT) and r.usage.completion_tokens == len(ids)
    # the served log-probs are the model's own, at the request's temperature (float32 round-off)
    want = _teacher_forced(model, PROMPT, ids, 0.7)
    got = choice.logprobs.token_logprobs
    assert max(abs(a - b) for a, b in zip(got, want)) < 1e-4
    assert max(abs(a - b) for a, b in zip(got, _teacher_forced(model, PROMPT, ids, 1.0))) > 1e-3
    # the sampled token is always among the top log-probs
    assert all(f"token_id:{t}" in top for t, top in zip(ids, choice.logprobs.top_logprobs))
    assert choice.text == tok.decode(ids, skip_special_tokens=True)
    # a seed makes the sample reproducible; another seed samples another completion
    again = client.completions.create(**kw).choices[0].model_extra["token_ids"]
    other = client.completions.create(**{**kw, "seed": 4}).choices[0].model_extra["token_ids"]
    assert again == ids and other != ids


def test_prompt_lists_strings_n_and_stop(server, tiny):
    _, tok = tiny
    client = server.client()
    r = client.completions.create(model="tiny", prompt=["hello world", PROMPT], n=2, max_tokens=4, seed=0)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    assert r.usage.prompt_tokens == len(tok("hello world")["input_ids"]) + len(PROMPT)
    assert all(c.logprobs is None for c in r.choices)
    # greedy (temperature 0), then the same with a stop string taken from its own text
    greedy = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=10, temperature=0,
                                       extra_body={"return_token_ids": True}).choices[0]
    ids = greedy.model_extra["token_ids"]
    stop = tok.decode(ids[3:5])
    cut = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=10, temperature=0, stop=[stop],
                                    extra_body={"return_token_ids": True}).choices[0]
    assert cut.finish_reason == "stop" and cut.model_extra["stop_reason"] == stop
    assert greedy.text.startswith(cut.text) and stop not in cut.text
    assert ids[: len(cut.model_extra["token_ids"])] == cut.model_extra["token_ids"]


@pytest.mark.parametrize(
    "body, param, words",
    [
        ({"prompt": [1, 99999]}, "prompt", "token id 99999 is out of vocabulary"),
        ({"prompt": []}, "prompt", "expected a string, an array of token ids"),
        ({"prompt": [[1, 2], [3.5]]}, "prompt", "expected a string"),
        ({}, "prompt", "Missing required parameter: 'prompt'"),
        ({"prompt": [1], "logprobs": "yes"}, "logprobs", "expected an integer"),
        ({"prompt": [1], "max_tokens": 0}, "max_tokens", "below minimum"),
        ({"prompt": [1], "max_tokens": 5000}, "prompt", "maximum context length is 4096 tokens"),
        ({"prompt": [1], "stream": True}, "stream", "streaming is served on /v1/chat/completions"),
        ({"prompt": [1], "return_tokens_as_token_ids": "yes"}, "return_tokens_as_token_ids", "expected a boolean"),
        ({"prompt": [1], "stop_token_ids": ["a"]}, "stop_token_ids", "array of token ids"),
    ],
)
def test_bad_completion_requests_are_400s_that_say_what_to_fix(server, body, param, words):
    status, err = _post(server.url + "/completions", {"model": "tiny", **body})
    assert status == 400, err
    assert err["error"]["param"] == param and words in err["error"]["message"], err


def test_unknown_model_is_a_404_naming_the_served_ones(server):
    with pytest.raises(openai.NotFoundError) as exc:
        server.client().completions.create(model="nope", prompt=[1])
    assert "`nope` does not exist" in exc.value.message and "`tiny`" in exc.value.message


def test_chat_content_streams_token_by_token(server):
    client = server.client()
    msgs = [{"role": "user", "content": "Tell me a long story."}]
    t0 = time.monotonic()
    arrivals, parts, finish = [], [], None
    for chunk in client.chat.completions.create(model="tiny", messages=msgs, max_tokens=160, temperature=1.0,
                                                seed=1, stream=True):
        delta = chunk.choices[0].delta
        if delta.content:
            arrivals.append(time.monotonic() - t0)
            parts.append(delta.content)
        finish = chunk.choices[0].finish_reason or finish
    total = time.monotonic() - t0
    # many content chunks, spread over the generation: the first came long before the end
    assert len(parts) >= 20, parts
    assert arrivals[0] < 0.5 * total and arrivals[-1] - arrivals[0] > 0.3 * total, (arrivals[:3], total)
    # the same request, not streamed, gives the same text (the seed fixes the sample)
    plain = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=160, temperature=1.0, seed=1)
    assert "".join(parts) == plain.choices[0].message.content and finish == plain.choices[0].finish_reason


def test_streaming_holds_back_text_that_may_become_a_stop_or_a_tool_call():
    from stepgym.serving import _streamable

    assert _streamable("The answer <tool_", 0, True) == "The answer"
    assert _streamable('ok <tool_call>{"name": "x"}', 0, True) == "ok"
    assert _streamable("ok <tool_", 0, False) == "ok <tool_"
    assert _streamable("abcdef", 3, False) == "abc"
    assert _streamable("caf\ufffd", 0, False) == "caf"


# -- weight updates (in-process server: the test reads the served model directly) -------------------


@pytest.fixture
def weights_server(tiny):
    import copy

    from stepgym.agents import TransformersAgent
    from stepgym.serving import TransformersBackend, create_app, serve_in_thread

    model, tok = tiny
    backend = TransformersBackend(TransformersAgent(copy.deepcopy(model), tok, max_new_tokens=8, stop=()))
    with serve_in_thread(create_app(backend, "base")) as handle:
        yield handle, backend


def _served_logprobs(url: str, model: str) -> tuple[list[int], list[float]]:
    status, r = _post(url + "/completions", {"model": model, "prompt": PROMPT, "max_tokens": 6, "temperature": 0,
                                             "logprobs": 0, "return_token_ids": True})
    assert status == 200, r
    return r["choices"][0]["token_ids"], r["choices"][0]["logprobs"]["token_logprobs"]


def test_update_weights_from_disk_serves_the_new_weights(weights_server, tmp_path):
    from stepgym.models import load_model
    from stepgym.policy_folder import write_policy_folder

    handle, backend = weights_server
    root = handle.base_url[: -len("/v1")]
    ids0, lps0 = _served_logprobs(handle.base_url, "base")
    other, tok = load_model("tiny", seed=1)
    folder = write_policy_folder(str(tmp_path / "w"), other, tok)
    status, answer = _post(root + "/update_weights_from_disk", {"model_path": folder})
    assert status == 200 and answer["success"] is True, answer
    ids1, lps1 = _served_logprobs(handle.base_url, "base")
    assert max(abs(a - b) for a, b in zip(lps1, _teacher_forced(other, PROMPT, ids1, 1.0))) < 1e-4
    assert (ids1, lps1) != (ids0, lps0)
    status, answer = _post(root + "/update_weights_from_disk", {"model_path": str(tmp_path / "missing")})
    assert status == 400 and answer["success"] is False and "is not a folder" in answer["message"]


def test_lora_adapters_load_serve_and_unload(weights_server, tmp_path, tiny):
    pytest.importorskip("peft")
    import copy

    from stepgym.models import apply_lora

    handle, backend = weights_server
    model, _ = tiny
    lora = apply_lora(copy.deepcopy(model), r=4, alpha=8)
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)  # a trained adapter: not the zero update of a fresh one
    lora.save_pretrained(tmp_path / "adapter")
    status, text = _post(handle.base_url + "/load_lora_adapter",
                         {"lora_name": "policy", "lora_path": str(tmp_path / "adapter")})
    assert status == 200 and "added successfully" in text
    models = json.loads(urllib.request.urlopen(handle.base_url + "/models", timeout=10).read())
    assert [m["id"] for m in models["data"]] == ["base", "policy"] and models["data"][1]["parent"] == "base"
    ids, lps = _served_logprobs(handle.base_url, "policy")
    merged = copy.deepcopy(lora).merge_and_unload()
    assert max(abs(a - b) for a, b in zip(lps, _teacher_forced(merged, PROMPT, ids, 1.0))) < 1e-4
    base_ids, base_lps = _served_logprobs(handle.base_url, "base")  # the base model is still served as it was
    assert max(abs(a - b) for a, b in zip(base_lps, _teacher_forced(model, PROMPT, base_ids, 1.0))) < 1e-4
    again = _post(handle.base_url + "/load_lora_adapter", {"lora_name": "policy", "lora_path": str(tmp_path / "adapter")})
    assert again[0] == 400 and "already been loaded" in again[1]["error"]["message"]
    assert _post(handle.base_url + "/load_lora_adapter", {"lora_name": "x", "lora_path": str(tmp_path)})[0] == 400
    assert _post(handle.base_url + "/unload_lora_adapter", {"lora_name": "policy"})[0] == 200
    gone = _post(handle.base_url + "/unload_lora_adapter", {"lora_name": "policy"})
    assert gone[0] == 404 and "cannot be found" in gone[1]["error"]["message"]
    assert _post(handle.base_url + "/completions", {"model": "policy", "prompt": [1]})[0] == 404
