"""Train with TRL's GRPOTrainer on a stepgym env through TRL's environment API.

TRL (>= 1.x, tested with 1.16) trains multi-turn tool use with
``GRPOTrainer(environment_factory=...)``: the factory returns an object whose public
methods are the tools the model may call, whose ``reset(**row)`` returns the first
observation, and whose ``get_reward()`` scores the finished rollout. ``trl_environment``
below builds such a class from ANY stepgym env with tools: one method per tool listed in
the env's first observation, each sending a ``<tool_call>`` action to the env and returning
its observation; the reward is the env's episode return. Rows of the dataset carry the
task seed, so the ``num_generations`` completions of a GRPO group solve the same task.

Needs ``pip install "stepgym[trl]"`` (TRL, datasets) and transformers >= 5.2.

Limitations, measured with TRL 1.16 on CPU:
* TRL parses tool calls only for chat templates it knows (Qwen2.5/3, Llama 3.1/3.2,
  GLM-4-MoE, GPT-OSS, ...): we give the tokenizer TRL's Qwen2.5 template, whose
  ``<tool_call>`` format is the canonical stepgym action format.
* It runs on CPU (``use_cpu=True``), generating with ``transformers.generate`` (no vLLM),
  so it is slow beyond toy sizes; the randomly initialised ``tiny`` model used with
  ``--budget small`` never writes a valid tool call, so its rewards are 0 and the run only
  shows the plumbing works. Use ``--model`` with a real instruct model (and a GPU) to learn.
* TRL's trainer sees one whole conversation as one sequence (token-level GRPO), not
  stepgym's step-level MDP; for step-level credit assignment use ``stepgym train``.

    python examples/trl_grpo.py --budget small
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import tempfile
from typing import Any

import gymnasium as gym

import stepgym  # noqa: F401  (registers the stepgym/ envs)
from stepgym.actions import format_tool_call
from stepgym.agents import parse_tools

_PY_TYPES = {"string": str, "number": float, "integer": int, "boolean": bool}


def trl_environment(env_id: str, **env_kwargs: Any) -> type:
    """A TRL environment class over a stepgym tool env (one method per tool)."""
    probe = gym.make(env_id, **env_kwargs)
    first_obs, _ = probe.reset(seed=0)
    tools = parse_tools(first_obs)
    probe.close()
    if not tools:
        raise ValueError(f"{env_id} lists no tools in its first observation; TRL's environment API needs tools")

    def __init__(self) -> None:
        self.env = gym.make(env_id, **env_kwargs)
        self.total, self.done = 0.0, True

    def reset(self, seed: int | None = None, **row: Any) -> str:
        obs, _ = self.env.reset(seed=None if seed is None else int(seed))
        self.total, self.done = 0.0, False
        return obs

    def get_reward(self) -> float:
        return self.total

    def _act(self, name: str, arguments: dict[str, Any]) -> str:
        if self.done:
            return "The episode is over; no more tool calls are needed."
        obs, reward, terminated, truncated, _ = self.env.step(format_tool_call(name, arguments))
        self.total += float(reward)
        self.done = terminated or truncated
        return obs

    namespace: dict[str, Any] = {"__init__": __init__, "reset": reset, "get_reward": get_reward, "_act": _act}
    for tool in tools:
        namespace[tool.name] = _tool_method(tool)
    return type(f"TRL_{env_id.split('/')[-1].replace('-', '_')}", (), namespace)


def _tool_method(tool: Any):
    props: dict[str, Any] = tool.parameters.get("properties", {})

    def method(self, **arguments: Any) -> str:
        return self._act(tool.name, arguments)

    # TRL reads each tool's JSON schema from its signature, type hints and Google docstring.
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    annotations: dict[str, Any] = {"return": str}
    doc_args = []
    for arg, schema in props.items():
        typ = _PY_TYPES.get(schema.get("type", "string"), str)
        params.append(inspect.Parameter(arg, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typ))
        annotations[arg] = typ
        doc_args.append(f"    {arg}: {schema.get('description') or arg}")
    method.__name__ = method.__qualname__ = tool.name
    method.__signature__ = inspect.Signature(params, return_annotation=str)
    method.__annotations__ = annotations
    method.__doc__ = (
        (tool.description or tool.name)
        + "\n\nArgs:\n"
        + "\n".join(doc_args)
        + "\n\nReturns:\n    The environment's observation after the call."
    )
    return method


def check_adapter(env_cls: type, env_id: str) -> None:
    """Play one episode through the adapter's tool methods with the env's expert; it must earn the reward."""
    from transformers.utils import get_json_schema

    from stepgym.actions import parse_tool_call

    env = env_cls()
    schemas = {
        m: get_json_schema(getattr(env, m))
        for m in vars(env_cls)
        if not m.startswith("_") and m not in ("reset", "get_reward")
    }
    env.reset(seed=0)
    while not env.done:
        call = parse_tool_call(env.env.unwrapped.expert_action())
        getattr(env, call.name)(**call.arguments)
    if env.get_reward() <= 0:
        raise SystemExit(f"adapter check failed: the expert earned {env.get_reward()} on {env_id}")
    print(f"adapter check: tools {sorted(schemas)}; the expert earned reward {env.get_reward()} through them")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", choices=["small", "full"], default="full")
    parser.add_argument("--model", default=None, help="model spec (default: tiny for small, smollm2-135m for full)")
    parser.add_argument("--env", default="stepgym/ToolUse-v0")
    args = parser.parse_args()
    small = args.budget == "small"
    try:
        import trl
        from datasets import Dataset
        from trl import GRPOConfig, GRPOTrainer
        from trl.chat_template_utils import qwen2_5_chat_template
    except ImportError as exc:
        print(f'skipping: TRL is not installed ({exc}); install it with pip install "stepgym[trl]"')
        return 0
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from stepgym.models import load_model

    model, tok = load_model(args.model or ("tiny" if small else "smollm2-135m"))
    tok.chat_template = qwen2_5_chat_template  # a template TRL can parse tool calls from
    tok.padding_side = "left"

    env_cls = trl_environment(args.env, difficulty="easy")
    check_adapter(env_cls, args.env)
    n_tasks = 4 if small else 256
    dataset = Dataset.from_dict({"prompt": [[{"role": "user", "content": ""}]] * n_tasks, "seed": list(range(n_tasks))})
    config = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="trl_grpo_") if small else "runs/trl_grpo",
        use_cpu=True,
        max_steps=1 if small else 200,
        per_device_train_batch_size=2 if small else 8,
        num_generations=2 if small else 8,
        max_completion_length=12 if small else 256,
        max_tool_calling_iterations=2 if small else 6,
        learning_rate=1e-5,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        bf16=False,
        disable_tqdm=small,
    )
    trainer = GRPOTrainer(
        model=model, processing_class=tok, args=config, train_dataset=dataset, environment_factory=env_cls
    )
    trainer.train()
    rewards = [row[k] for row in trainer.state.log_history for k in row if k.endswith("reward")]
    print(
        f"TRL {trl.__version__} GRPO on {args.env}: {trainer.state.global_step} step(s), logged rewards {rewards[:4]}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
