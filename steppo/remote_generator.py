"""Generation on an OpenAI-compatible inference server: token ids in, token ids and log-probs out.

``stepgym train --generator openai:MODEL@URL`` collects rollouts with
:class:`OpenAIServerGenerator` instead of the in-process sampler: each prompt's token ids go
to ``URL/completions`` (vLLM's ``/v1/completions``: ``prompt`` as token ids, ``logprobs``,
``return_tokens_as_token_ids``), one request per prompt, sent concurrently so the server
batches them. The answer's ``"token_id:123"`` tokens (or ``token_ids``) are the response ids,
used as they are (nothing is re-tokenised); their log-probs come from the same answer. The
action text is decoded locally from those ids, exactly as the local sampler decodes it.

After each update the trainer calls :meth:`OpenAIServerGenerator.sync_weights`:

* LoRA runs (``--lora-r``): the adapter is written to ``OUT/served/adapter`` and loaded with
  vLLM's ``POST /v1/unload_lora_adapter`` + ``POST /v1/load_lora_adapter``; requests then ask
  for the adapter's model id (vLLM needs ``--enable-lora`` and
  ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``).
* full fine-tuning: the weights are written (atomically) to ``OUT/served/weights`` and loaded
  with SGLang's ``POST /update_weights_from_disk`` (``{"model_path": ...}``).

``stepgym serve`` implements all of these endpoints. The server reads the folders from its own
disk, so it must see the run directory (same machine or a shared file system).

The server's log-probs come from another engine (another kernel, batch, precision), so they
are not exactly the learner's: :attr:`OpenAIServerGenerator.logprobs_exact` is False and the
trainer recomputes the old log-probs with its own weights. The generator reads no values (a
critic's values are computed by the trainer).

Example:
    >>> parse_generator_spec("openai:tiny@http://127.0.0.1:8000/v1")
    GeneratorSpec(kind='openai', model='tiny', url='http://127.0.0.1:8000/v1')
    >>> parse_generator_spec("vllm")
    Traceback (most recent call last):
    ...
    stepgym.errors.InvalidConfig: invalid value for 'generator': expected 'local' or 'openai:MODEL@URL' (e.g. openai:tiny@http://127.0.0.1:8000/v1), got 'vllm'
"""

from __future__ import annotations

import os
import random
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from stepgym.errors import InvalidConfig, StepgymError
from steppo.rollout import Generator, SamplingParams

__all__ = ["GeneratorSpec", "parse_generator_spec", "OpenAIServerGenerator", "ServerError"]

_EXPECTED = "'local' or 'openai:MODEL@URL' (e.g. openai:tiny@http://127.0.0.1:8000/v1)"


class ServerError(StepgymError):
    """The generation server could not be reached or refused a request."""


@dataclass(frozen=True)
class GeneratorSpec:
    """A parsed ``--generator``: ``kind`` ``"local"``, or ``"openai"`` with the served model id and base URL."""

    kind: str
    model: str = ""
    url: str = ""


def parse_generator_spec(spec: str) -> GeneratorSpec:
    """Parse ``local`` or ``openai:MODEL@URL`` (URL: the OpenAI base URL, ``http(s)://HOST:PORT/v1``).

    Raises:
        InvalidConfig: anything else, with what is expected.
    """
    if spec == "local":
        return GeneratorSpec("local")
    kind, sep, rest = str(spec).partition(":")
    model, at, url = rest.rpartition("@")
    if kind != "openai" or not sep or not at or not model:
        raise InvalidConfig("generator", spec, _EXPECTED)
    if not url.startswith(("http://", "https://")) or len(url.split("://", 1)[1].strip("/")) == 0:
        raise InvalidConfig("generator", spec, _EXPECTED + "; the URL must start with http:// or https://")
    return GeneratorSpec("openai", model, url.rstrip("/"))


class OpenAIServerGenerator(Generator):
    """A :class:`~steppo.rollout.Generator` backed by an OpenAI-compatible server (see the module docstring).

    Args:
        model: the served model id (the base model; a LoRA run serves its adapter under
            ``MODEL-steppo`` after the first sync).
        base_url: the OpenAI base URL, e.g. ``http://127.0.0.1:8000/v1``.
        tokenizer: the policy's tokenizer (decodes the action text from the returned ids).
        stop_strings: a response ends after one of these (sent as ``stop``, kept in the ids).
        eos_ids: end-of-turn token ids (sent as vLLM's ``stop_token_ids``).
        concurrency: requests in flight at once (the server batches them).
        timeout_s: seconds one request may take.
        api_key: sent as ``Authorization: Bearer``.

    Example:
        >>> from stepgym.models import load_tokenizer
        >>> gen = OpenAIServerGenerator("tiny", "http://127.0.0.1:8000/v1", load_tokenizer("tiny"))
        >>> gen.logprobs_exact, gen.served_model
        (False, 'tiny')
    """

    logprobs_exact = False

    def __init__(self, model: str, base_url: str, tokenizer: Any, *, stop_strings: tuple[str, ...] | list[str] = (),
                 eos_ids: list[int] | None = None, concurrency: int = 8, timeout_s: float = 600.0,
                 api_key: str | None = None):
        try:
            import httpx
        except ImportError as exc:  # pragma: no cover - depends on the install
            from stepgym.errors import DependencyNotInstalled

            raise DependencyNotInstalled("--generator openai:...", 'pip install "stepgym[serve]"') from exc
        from stepgym.policy_folder import end_of_turn_ids

        self.model = model
        self.url = base_url.rstrip("/")
        #: the server's root (SGLang's /update_weights_from_disk is not under /v1)
        self.root = self.url[: -len("/v1")] if self.url.endswith("/v1") else self.url
        self.tokenizer = tokenizer
        self.stop_strings = tuple(s for s in stop_strings if s)
        self.eos_ids = list(eos_ids) if eos_ids is not None else end_of_turn_ids(tokenizer)
        #: the model id requests ask for: the base model, or the LoRA adapter once synced
        self.served_model = model
        self.adapter_name = f"{model}-steppo"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout_s, headers=headers)
        self._pool = ThreadPoolExecutor(max(1, int(concurrency)), thread_name_prefix="steppo-remote-gen")
        self._rng = random.Random(0)

    # -- generation ---------------------------------------------------------------------------
    def set_seed(self, seed: int) -> None:
        self._rng.seed(int(seed))

    def generate(self, prompts: list[list[int]], params: SamplingParams,
                 sessions: list[Any] | None = None) -> list[Any]:
        if params.seed is not None:
            self.set_seed(params.seed)
        # one seed per request, drawn here: a rerun with the same seeds asks for the same samples
        seeds = [self._rng.randrange(2**31) for _ in prompts]
        return list(self._pool.map(lambda job: self._complete(job[0], params, job[1]), zip(prompts, seeds)))

    def _complete(self, prompt: list[int], params: SamplingParams, seed: int) -> Any:
        from stepgym.policy_folder import decode_action
        from steppo.sampling import Generation

        body: dict[str, Any] = {
            "model": self.served_model,
            "prompt": list(prompt),
            "max_tokens": params.max_new_tokens,
            "temperature": 0.0 if params.greedy else params.temperature,
            "top_p": 1.0 if params.greedy else params.top_p,
            "seed": seed,
            "logprobs": 1,
            "return_tokens_as_token_ids": True,
            "stop_token_ids": self.eos_ids,
            "skip_special_tokens": False,  # stop strings such as "</tool_call>" may be special tokens
            "include_stop_str_in_output": True,
        }
        if self.stop_strings:
            body["stop"] = list(self.stop_strings)
        data = self._post(self.url + "/completions", body)
        ids, logprobs, finish = self._parse(data)
        if finish == "length":
            reason = "length"
        elif ids and ids[-1] in self.eos_ids:
            reason = "eos"
        else:
            reason = "stop_string"
        text = decode_action(self.tokenizer, ids, stop_strings=self.stop_strings, eos_ids=self.eos_ids)
        return Generation(response_ids=ids, logprobs=logprobs, text=text, stop_reason=reason)

    def _parse(self, data: Any) -> tuple[list[int], list[float], str]:
        """(token ids, their log-probs, finish reason) of a one-choice completion answer."""
        try:
            choice = data["choices"][0]
            lp = choice.get("logprobs") or {}
            tokens = lp.get("tokens") or []
            values = lp.get("token_logprobs") or []
        except (KeyError, IndexError, TypeError, AttributeError):
            raise ServerError(f"the generation server at {self.url} sent no completion choice: {str(data)[:200]}") \
                from None
        ids = choice.get("token_ids")
        if ids is None and all(isinstance(t, str) and t.startswith("token_id:") for t in tokens):
            ids = [int(t[len("token_id:"):]) for t in tokens]
        if ids is None:
            raise ServerError(f"the generation server at {self.url} returned no token ids; it must support vLLM's "
                              "return_tokens_as_token_ids (vLLM, stepgym serve)")
        if len(values) != len(ids) or any(v is None for v in values):
            raise ServerError(f"the generation server at {self.url} returned {len(values)} log-probs for {len(ids)} "
                              "tokens; it must return the sampled tokens' log-probs (\"logprobs\": 1)")
        return [int(t) for t in ids], [float(v) for v in values], str(choice.get("finish_reason") or "stop")

    def _post(self, url: str, body: dict[str, Any], ok_codes: tuple[int, ...] = ()) -> Any:
        import httpx

        try:
            r = self._client.post(url, json=body)
        except httpx.HTTPError as exc:
            raise ServerError(f"cannot reach the generation server at {url}: {exc}; start it (e.g. `stepgym serve "
                              f"--model tiny --port 8000`) or fix --generator") from None
        if r.status_code >= 400 and r.status_code not in ok_codes:
            try:
                msg = r.json()
                msg = (msg.get("error") or {}).get("message") or msg.get("message") or msg
            except ValueError:
                msg = r.text
            raise ServerError(f"the generation server answered {r.status_code} to POST {url}: {str(msg)[:300]}")
        try:
            return r.json()
        except ValueError:
            return r.text

    # -- weight sync ----------------------------------------------------------------------------
    def sync_weights(self, policy: Any, folder: str) -> bool:
        """Make the server generate with ``policy``'s current weights (see the module docstring)."""
        from stepgym.policy_folder import write_policy_folder

        folder = os.path.abspath(folder)
        os.makedirs(folder, exist_ok=True)
        lm = policy.lm
        if hasattr(lm, "peft_config"):  # LoRA: only the adapter travels
            path = os.path.join(folder, "adapter")
            tmp = path + ".tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            lm.save_pretrained(tmp)
            shutil.rmtree(path, ignore_errors=True)
            os.replace(tmp, path)
            self._post(self.url + "/unload_lora_adapter", {"lora_name": self.adapter_name}, ok_codes=(400, 404))
            self._post(self.url + "/load_lora_adapter", {"lora_name": self.adapter_name, "lora_path": path})
            self.served_model = self.adapter_name
            return True
        path = write_policy_folder(os.path.join(folder, "weights"), lm, policy.tokenizer)
        answer = self._post(self.root + "/update_weights_from_disk", {"model_path": path})
        if isinstance(answer, dict) and answer.get("success") is False:
            raise ServerError(f"the generation server did not load the weights in {path}: {answer.get('message')}")
        self.served_model = self.model
        return True

    def close(self) -> None:
        """Release the HTTP connections and threads."""
        self._pool.shutdown(wait=False)
        self._client.close()


def generator_from_spec(spec: str, tokenizer: Any, **kwargs: Any) -> OpenAIServerGenerator:
    """The server generator of an ``openai:MODEL@URL`` spec (``local`` is built by the trainer)."""
    parsed = parse_generator_spec(spec)
    if parsed.kind != "openai":
        raise InvalidConfig("generator", spec, "'openai:MODEL@URL' here (the local generator is the trainer's)")
    return OpenAIServerGenerator(parsed.model, parsed.url, tokenizer, **kwargs)
