"""Training configs: one dataclass per algorithm family, shared base, CLI generated from the fields.

Every field carries its documentation (``metadata["help"]``) and its allowed values
(``choices``, ``min``/``max``); ``__post_init__`` walks the fields and raises
:class:`~stepgym.errors.InvalidConfig` naming the field, the allowed values and the value
given. ``stepgym train`` / ``stepgym sft`` build their argparse options from these fields
(:func:`add_config_arguments`), so the CLI and the Python API never drift apart.

This module must stay importable without torch (the CLI imports it to build ``--help``).

Example:
    >>> from steppo.config import StepPOConfig, config_class_for
    >>> cfg = StepPOConfig(algo="steppo", iterations=3, model="tiny")
    >>> cfg.gamma, config_class_for("grpo").__name__
    (1.0, 'GRPOConfig')
    >>> StepPOConfig(gamma=2.0)
    Traceback (most recent call last):
    ...
    stepgym.errors.InvalidConfig: invalid value for 'gamma': expected a number in [0.0, 1.0], got 2.0
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from stepgym.errors import InvalidConfig

__all__ = [
    "ALGOS",
    "ACTOR_CRITIC_ALGOS",
    "GROUP_ALGOS",
    "PRESETS",
    "CommonConfig",
    "TrainConfig",
    "StepPOConfig",
    "GRPOConfig",
    "SFTConfig",
    "config_class_for",
    "make_train_config",
    "add_config_arguments",
    "config_from_args",
    "config_to_dict",
]

#: The built-in algorithms with a critic (StepPOConfig) and without (GRPOConfig); their
#: definitions are in :mod:`steppo.algos` (a test keeps these names in step with it). Kept here
#: so that ``--help`` needs no torch.
ACTOR_CRITIC_ALGOS: tuple[str, ...] = ("steppo", "ppo", "steppo_no_step_gae", "steppo_no_step_ratio")
GROUP_ALGOS: tuple[str, ...] = ("grpo", "rloo", "reinforce_pp", "gspo", "gigpo")
ALGOS: tuple[str, ...] = ACTOR_CRITIC_ALGOS + GROUP_ALGOS


def _f(default: Any = dataclasses.MISSING, help: str = "", *, choices: tuple | None = None,
       min: float | None = None, max: float | None = None, factory: Any = None,
       cli: bool = True, nargs: str | None = None) -> Any:
    """A dataclass field with its help text and allowed values (read by validation and the CLI)."""
    meta = {"help": help, "choices": choices, "min": min, "max": max, "cli": cli, "nargs": nargs}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _describe(meta: dict[str, Any], typ: type) -> str:
    if meta.get("choices"):
        return "one of " + ", ".join(repr(c) for c in meta["choices"])
    lo, hi = meta.get("min"), meta.get("max")
    kind = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(typ, typ.__name__)
    if lo is not None and hi is not None:
        return f"{kind} in [{lo}, {hi}]"
    if lo is not None:
        return f"{kind} >= {lo}"
    if hi is not None:
        return f"{kind} <= {hi}"
    return kind


_TYPES: dict[str, type] = {"int": int, "float": float, "str": str, "bool": bool, "dict": dict, "tuple": tuple}


def _field_type(f: dataclasses.Field) -> type:
    t = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    t = t.split("[")[0].split("|")[0].strip()
    return _TYPES.get(t, str)


@dataclass
class CommonConfig:
    """Fields shared by behaviour cloning and RL: env, model, prompts, output, device.

    Subclasses add their own fields; every field is validated in ``__post_init__``.
    """

    env: str = _f("stepgym/ToolUse-v0", "env id; third-party envs as 'module:ns/Name-v0'")
    env_kwargs: dict = _f(help="JSON object of keyword arguments for the env constructor, e.g. "
                               "'{\"difficulty\": \"easy\"}' (default: none, the env's own defaults)", factory=dict)
    model: str = _f("smollm2-135m", "'tiny', 'smollm2-135m', or any Hugging Face model id / local path")
    init: str = _f("", "start from this checkpoint (a `stepgym sft`/`train` output dir or its policy/ folder)")
    out: str = _f("runs/steppo", "output directory (metrics, checkpoints, policy/, plots)")
    seed: int = _f(0, "random seed (model init for 'tiny', sampling, task seeds)", min=0)
    max_prompt_tokens: int = _f(1024, "prompts longer than this drop their oldest history turns", min=16)
    max_history_turns: int = _f(4, "previous (action, observation) turns kept in the prompt", min=0)
    history_stride: int = _f(1, "once the history is longer than max_history_turns, drop old turns this many at a "
                                "time (1 = a sliding window). K > 1 keeps between max_history_turns-K+1 and "
                                "max_history_turns turns, and the start of the prompt stays the same for K steps, "
                                "so the KV cache and packing keep working in long episodes", min=1)
    max_new_tokens: int = _f(64, "token limit of one step (one generated action)", min=1)
    stop_strings: tuple = _f(help="generation of a step stops after any of these strings (and at EOS)",
                             factory=lambda: ("</tool_call>",), nargs="*")
    lr: float = _f(1e-5, "AdamW learning rate", min=0.0)
    weight_decay: float = _f(0.0, "AdamW weight decay", min=0.0)
    max_grad_norm: float = _f(1.0, "gradient clipping norm (0 disables it)", min=0.0)
    micro_batch_size: int = _f(8, "steps per forward/backward chunk (gradient accumulation inside a minibatch)", min=1)
    micro_batch_tokens: int = _f(1024, "most padded tokens (sequences x longest sequence) in one forward/backward "
                                       "chunk; chunks hold sequences of similar length (0 = no token limit, "
                                       "micro_batch_size only). Raise it on a GPU", min=0)
    train_layers: int = _f(0, "train only the last K transformer blocks (0 = all parameters); cheap on CPU", min=0)
    lora_r: int = _f(0, "LoRA rank (0 = full fine-tuning; needs the 'lora' extra: peft)", min=0)
    lora_alpha: int = _f(16, "LoRA alpha", min=1)
    device: str = _f("auto", "torch device: 'auto' (cuda if available), 'cpu', 'cuda', 'cuda:N', 'mps'")
    dtype: str = _f("float32", "compute dtype: 'bfloat16' keeps float32 weights and optimizer state and runs the "
                               "forward/backward passes and sampling under torch.autocast (mixed precision; "
                               "docs/scaling.md); 'auto' = bfloat16 where the device computes it natively (a "
                               "CUDA GPU with bf16, a CPU with AVX512-BF16/AMX), float32 elsewhere",
                    choices=("float32", "bfloat16", "float16", "auto"))
    threads: int = _f(0, "torch CPU threads (0 = torch's default)", min=0)
    progress: bool = _f(True, "show the rich progress bar and live metrics")

    #: Keys ``--preset`` may set; see :data:`PRESETS`.
    family: ClassVar[str] = "common"

    def __post_init__(self) -> None:
        self._coerce_and_check()
        if self.device not in ("auto", "cpu", "cuda", "mps") and not self.device.startswith("cuda:"):
            raise InvalidConfig("device", self.device, "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
        if not self.env:
            raise InvalidConfig("env", self.env, "an env id such as 'stepgym/ToolUse-v0' (see `stepgym list`)")
        if self.history_stride > max(1, self.max_history_turns):
            raise InvalidConfig("history_stride", self.history_stride,
                                f"an integer from 1 to max_history_turns={self.max_history_turns}")
        if not self.model:
            raise InvalidConfig("model", self.model, "'tiny', 'smollm2-135m' or a Hugging Face id/path")

    def _coerce_and_check(self) -> None:
        """Check every field against its type, ``choices`` and ``min``/``max`` metadata."""
        for f in fields(self):
            meta = f.metadata
            typ = _field_type(f)
            v = getattr(self, f.name)
            if typ is dict:
                if isinstance(v, str):
                    try:
                        v = json.loads(v) if v.strip() else {}
                    except ValueError:
                        raise InvalidConfig(f.name, v, "a JSON object such as '{\"difficulty\": \"easy\"}'") from None
                if not isinstance(v, dict):
                    raise InvalidConfig(f.name, v, "a JSON object such as '{\"difficulty\": \"easy\"}'")
            elif typ is tuple:
                if isinstance(v, str):
                    v = (v,)
                if not isinstance(v, (list, tuple)) or not all(isinstance(s, str) for s in v):
                    raise InvalidConfig(f.name, v, "a list of strings")
                v = tuple(v)
            elif typ is bool:
                if not isinstance(v, bool):
                    raise InvalidConfig(f.name, v, "true or false")
            elif typ is int:
                if isinstance(v, bool) or not isinstance(v, int):
                    if isinstance(v, float) and v.is_integer():
                        v = int(v)
                    else:
                        raise InvalidConfig(f.name, v, _describe(meta, int))
            elif typ is float:
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise InvalidConfig(f.name, v, _describe(meta, float))
                v = float(v)
                if v != v:  # NaN passes every comparison below
                    raise InvalidConfig(f.name, v, _describe(meta, float))
            elif typ is str:
                if not isinstance(v, str):
                    raise InvalidConfig(f.name, v, _describe(meta, str))
            if meta.get("choices") is not None and v not in meta["choices"]:
                raise InvalidConfig(f.name, v, _describe(meta, typ))
            if typ in (int, float):
                if meta.get("min") is not None and v < meta["min"]:
                    raise InvalidConfig(f.name, v, _describe(meta, typ))
                if meta.get("max") is not None and v > meta["max"]:
                    raise InvalidConfig(f.name, v, _describe(meta, typ))
            setattr(self, f.name, v)


@dataclass
class TrainConfig(CommonConfig):
    """Fields shared by every RL algorithm: rollouts, PPO-style epochs, logging, checkpoints."""

    algo: str = _f("", "training algorithm: " + ", ".join(ALGOS) + ", or 'module:name' for one registered with "
                       "steppo.algos.register_algorithm (default: steppo; grpo for GRPOConfig)")
    iterations: int = _f(20, "training iterations (rollout + update)", min=1)
    episodes_per_iteration: int = _f(8, "episodes collected per iteration", min=1)
    max_env_steps: int = _f(0, "stop once this many env steps were collected (0 = no limit; equal-budget comparisons)",
                            min=0)
    group_size: int = _f(0, "episodes per task seed (GRPO-style groups); must divide episodes_per_iteration "
                            "(0 = the algorithm's default: 8 for group algorithms, 1 otherwise)", min=0)
    num_envs: int = _f(8, "environments stepped side by side (the generation batch)", min=1)
    kv_reuse: bool = _f(True, "keep each episode's KV cache from one step to the next (prefill only the new tokens)")
    rollout_workers: int = _f(0, "Ray actors that own envs and a policy replica and collect the episodes (0 = in this "
                                 "process; needs the 'ray' extra; see docs/training.md)", min=0)
    ray_address: str = _f("", "Ray cluster for --rollout-workers (empty = start a local one; 'auto' or "
                              "'ray://host:port' joins a running cluster)")
    generator: str = _f("local", "where rollouts are generated: 'local' (the in-process sampler) or "
                                 "'openai:MODEL@URL', an OpenAI-compatible server (vLLM, SGLang, `stepgym serve`) "
                                 "given token ids, synced after each update (docs/training.md)")
    async_rollout: bool = _f(False, "collect iteration k+1's episodes in a background thread, with a copy of the "
                                    "weights, while iteration k updates (one policy version of lag; the update "
                                    "uses the learner's recomputed old log-probs; docs/training.md)")
    recompute_logprobs: bool = _f(False, "always recompute the rollout's old log-probs with the learner's weights "
                                         "(one no-grad pass before the first epoch); done anyway when the "
                                         "generator's log-probs are not exact (bfloat16, --async-rollout)")
    speculate: int = _f(0, "prompt-lookup speculative decoding: up to K draft tokens per forward pass, copied from "
                           "the prompt (same sampling distribution, exact log-probs; 0 = off)", min=0, max=16)
    temperature: float = _f(1.0, "sampling temperature of rollouts (log-probs are of the tempered policy)", min=1e-3)
    top_p: float = _f(1.0, "nucleus sampling of rollouts (1 = off)", min=1e-3, max=1.0)
    epochs: int = _f(2, "passes over each iteration's steps", min=1)
    minibatch_size: int = _f(16, "steps per optimizer step", min=1)
    pack_trajectories: bool = _f(True, "minibatches hold whole episodes, and steps that continue one another are "
                                        "scored as one sequence (same values, fewer tokens)")
    clip_low: float = _f(-1.0, "lower ratio clip eps_low (-1 = the algorithm's default: 0.2, GSPO 3e-4)", min=-1.0)
    clip_high: float = _f(-1.0, "upper ratio clip eps_high (-1 = the algorithm's default: 0.2, GSPO 4e-4)", min=-1.0)
    token_guard: float = _f(-1.0, "StepPO's per-token guard g: inside a step, a token whose own ratio left [1-g, 1+g] "
                                  "in the advantage's direction gets no more gradient (-1 = the algorithm's default; "
                                  "0 = off, the paper's StepPO; docs/algorithm.md)", min=-1.0, max=0.99)
    kl_coef: float = _f(0.0, "KL penalty to the initial policy (k3 estimator; 0.001 is the reference value, 0 = off)",
                        min=0.0)
    entropy_coef: float = _f(0.0, "entropy bonus coefficient", min=0.0)
    gamma: float = _f(1.0, "discount over steps (0.99 for long horizons)", min=0.0, max=1.0)
    eval_every: int = _f(5, "evaluate on held-out seeds every K iterations (0 = never; always at the end)", min=0)
    eval_episodes: int = _f(16, "episodes per evaluation", min=1)
    eval_seed: int = _f(1_000_000, "first held-out task seed (training seeds are drawn below it)", min=1)
    eval_temperature: float = _f(0.0, "sampling temperature of evaluation (0 = greedy)", min=0.0)
    save_every: int = _f(5, "checkpoint every K iterations (0 = only at the end)", min=0)
    keep_checkpoints: int = _f(2, "checkpoints kept on disk", min=1)
    eval_before: bool = _f(True, "evaluate before the first iteration too (row 0 of metrics.jsonl)")
    resume: bool = _f(False, "continue the run in --out from its latest checkpoint")
    overwrite: bool = _f(False, "start over in an --out that already holds a run (its files are replaced)")
    tensorboard: bool = _f(True, "write TensorBoard event files into OUT/tb")
    dist_timeout: int = _f(1800, "under torchrun (WORLD_SIZE > 1): seconds a process waits for the others in a "
                                 "collective before the run stops with an error (docs/training.md)", min=1)

    family: ClassVar[str] = "train"
    #: the algorithm when ``algo`` is not given
    default_algo: ClassVar[str] = "steppo"
    #: the critics this config family has fields for (None = any)
    critics: ClassVar[tuple[str, ...] | None] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self.algo = self.algo or self.default_algo
        spec = self.algorithm()
        if self.critics is not None and spec.critic not in self.critics:
            fits = [a for a in ALGOS if (a in ACTOR_CRITIC_ALGOS) == ("none" not in self.critics)]
            raise InvalidConfig("algo", self.algo, "one of " + ", ".join(repr(a) for a in fits)
                                + f" for {type(self).__name__} (use config_class_for(algo))")
        self.group_size = self.group_size or spec.default_group_size
        if self.async_rollout and self.rollout_workers:
            raise InvalidConfig("async_rollout", True, "false with --rollout-workers (Ray workers collect with the "
                                                       "driver's weights); use one of the two")
        from steppo.remote_generator import parse_generator_spec

        if parse_generator_spec(self.generator).kind != "local":
            if self.rollout_workers:
                raise InvalidConfig("rollout_workers", self.rollout_workers,
                                    "0 with --generator openai:... (the server generates every rollout)")
            if getattr(self, "async_rollout", False):
                raise InvalidConfig("async_rollout", True, "false with --generator openai:... (the server "
                                                           "generates with the synced weights)")
        if self.episodes_per_iteration % self.group_size:
            raise InvalidConfig("episodes_per_iteration", self.episodes_per_iteration,
                                f"a multiple of group_size={self.group_size}")

    def algorithm(self) -> Any:
        """The :class:`steppo.algos.Algorithm` of ``algo`` (imports torch)."""
        from steppo.algos import get_algorithm

        return get_algorithm(self.algo or self.default_algo)

    def clip_range(self) -> tuple[float, float]:
        """The (eps_low, eps_high) in force, with the algorithm's defaults filled in."""
        lo_d, hi_d = self.algorithm().clip
        return (lo_d if self.clip_low < 0 else self.clip_low, hi_d if self.clip_high < 0 else self.clip_high)

    def token_guard_value(self) -> float:
        """The token guard in force (``token_guard``, or the algorithm's default when -1)."""
        return self.algorithm().token_guard if self.token_guard < 0 else self.token_guard


@dataclass
class StepPOConfig(TrainConfig):
    """StepPO, token-PPO and the two StepPO ablations (actor-critic family).

    ``steppo``: step GAE + step ratio. ``ppo``: token GAE + token ratio.
    ``steppo_no_step_gae``: token GAE + step ratio. ``steppo_no_step_ratio``: step GAE + token ratio.
    """

    lam: float = _f(1.0, "GAE lambda", min=0.0, max=1.0)
    critic: str = _f("shared", "value function: a head on the policy trunk, or a separate model copied from it",
                     choices=("shared", "separate"))
    critic_lr: float = _f(0.0, "learning rate of the value head / critic (0 = 10x lr)", min=0.0)
    vf_coef: float = _f(0.5, "value-loss coefficient", min=0.0)
    value_clip: float = _f(0.5, "value clipping eps_v (0 disables it)", min=0.0)
    normalize_advantages: bool = _f(True, "normalise advantages over the batch's step rows (token rows for ppo)")
    bootstrap_truncated: bool = _f(True, "an episode cut by the env's step limit (truncated) ends with the critic's "
                                         "V(s_T+1); off: the step limit is part of the task and such an episode "
                                         "ends with value 0, like a terminated one")

    family: ClassVar[str] = "actor_critic"
    critics: ClassVar[tuple[str, ...] | None] = ("step", "token")


@dataclass
class GRPOConfig(TrainConfig):
    """Critic-free family: GRPO, RLOO, REINFORCE++, GSPO, GiGPO."""

    std_normalize: bool = _f(True, "divide group-centred scores by the group std (GRPO)")
    gigpo_step_weight: float = _f(1.0, "weight of GiGPO's anchor-state step advantage", min=0.0)

    family: ClassVar[str] = "group"
    default_algo: ClassVar[str] = "grpo"
    critics: ClassVar[tuple[str, ...] | None] = ("none",)


@dataclass
class SFTConfig(CommonConfig):
    """Behaviour cloning from the env's expert (``env.unwrapped.expert_action()``)."""

    out: str = _f("runs/sft", "output directory (policy/ + metrics)")
    episodes: int = _f(64, "expert episodes to record", min=1)
    epochs: int = _f(2, "passes over the recorded steps", min=1)
    batch_size: int = _f(16, "steps per optimizer step", min=1)
    lr: float = _f(1e-4, "AdamW learning rate", min=0.0)
    demo_noise: float = _f(0.0, "share of demonstration steps where a random action (stepgym's random agent) "
                           "replaces the expert's and is cloned too: a weaker, epsilon-noisy warm start", min=0.0, max=1.0)

    family: ClassVar[str] = "sft"

    @classmethod
    def for_warm_start(cls, train: TrainConfig, **overrides: Any) -> SFTConfig:
        """The behaviour-cloning warm start of ``train``: its env, model, prompt and device settings.

        Writes to ``OUT/sft`` unless ``overrides`` say otherwise; LoRA and ``init`` are not carried
        over (the warm start is a full fine-tune of the base model's trainable layers).

        Example:
            >>> rl = StepPOConfig(model="tiny", max_history_turns=2, out="runs/x")
            >>> sft = SFTConfig.for_warm_start(rl, episodes=8)
            >>> sft.max_history_turns, sft.out, sft.episodes
            (2, 'runs/x/sft', 8)
        """
        skip = {"init", "out", "lr", "lora_r", "lora_alpha"}
        values = {f.name: getattr(train, f.name) for f in fields(CommonConfig) if f.name not in skip}
        values["out"] = os.path.join(train.out, "sft")
        values.update(overrides)
        return cls(**values)


def config_class_for(algo: str) -> type[TrainConfig]:
    """The config dataclass of an algorithm's family.

    Example:
        >>> config_class_for("ppo").__name__
        'StepPOConfig'
    """
    if algo in ACTOR_CRITIC_ALGOS:
        return StepPOConfig
    if algo in GROUP_ALGOS:
        return GRPOConfig
    from steppo.algos import get_algorithm  # a user algorithm: its critic decides

    return StepPOConfig if get_algorithm(algo).critic != "none" else GRPOConfig


#: Named starting points for ``--preset``; explicit options override them.
PRESETS: dict[str, dict[str, Any]] = {
    # The README's main job: SmolLM2-135M on ToolUse-v0 easy, 2 CPU cores, about 6 minutes.
    # The warm start (when --init is not given) clones an expert that acts at random on 20% of
    # its steps; the clone copies those mistakes too, and 4 StepPO iterations remove enough of
    # them to double held-out success sampled at T=1 (0.18 -> 0.38 on 128 seeds; with lr 0 no
    # seed changes outcome). A clean 32-episode warm start left RL nothing common to learn from
    # (docs/benchmarks.md, "README main job: RL's own gain").
    "demo": {
        "model": "smollm2-135m",
        "env": "stepgym/ToolUse-v0",
        # the compact observation (short tool list) keeps prompts ~150 tokens: 3x cheaper on CPU
        # max_steps=4: failing episodes end early instead of burning 10 generations each
        "env_kwargs": {"difficulty": "easy", "tools": ["lookup"], "compact": True, "max_steps": 4},
        "algo": "steppo",
        # 4 iterations of 48 episodes: as fast as 6 of 32 (bigger generation batches) and steadier;
        # with 32 an iteration could hold 2 successes (seed 1: +0.08, inside the noise)
        "iterations": 4,
        "episodes_per_iteration": 48,
        "num_envs": 48,
        "max_new_tokens": 40,
        "max_history_turns": 2,
        "lr": 2e-4,  # 1e-4: +0.06, inside the noise; 3e-4 (96-episode warm start): invalid calls 0.20 -> 0.64
        "critic_lr": 1e-3,
        "epochs": 1,
        "minibatch_size": 16,
        "train_layers": 4,
        "eval_every": 0,
        # 128 held-out seeds sampled at T=1 like the rollouts: a 95% interval of about +-0.08
        "eval_episodes": 128,
        "eval_temperature": 1.0,
        "save_every": 0,
        "temperature": 1.0,
        # bfloat16 where the CPU/GPU has native kernels (AVX512-BF16/AMX, CUDA): 2-3x faster here
        "dtype": "auto",
        "out": "runs/demo",
        "sft_episodes": 128,
        "sft_epochs": 2,
        "sft_lr": 3e-4,
        "sft_demo_noise": 0.2,
        "base_eval_episodes": 8,  # the base model never writes a valid call: 8 seeds show it
    },
    # RL's own gain in a few minutes on 2 CPU cores: the tiny model clones an epsilon-noisy
    # expert (20% random actions, which it copies too), then StepPO removes the clone's mistakes
    # until 6,000 env steps; held-out success sampled at T=1 on 128 seeds every 4 iterations
    # (docs/benchmarks.md, "README recipe: a tiny model that learns" and "Two families").
    "learn": {
        "model": "tiny",
        "env": "stepgym/ToolUse-v0",
        "env_kwargs": {"difficulty": "easy", "tools": ["lookup"], "compact": True},
        "algo": "steppo",
        "iterations": 200,
        "max_env_steps": 6000,
        "episodes_per_iteration": 32,
        "num_envs": 16,
        "max_new_tokens": 48,
        "max_history_turns": 2,
        "lr": 5e-5,
        "temperature": 1.0,
        "eval_every": 4,
        "eval_episodes": 128,
        "eval_temperature": 1.0,
        "save_every": 20,
        "out": "runs/learn",
        "sft_episodes": 2048,
        "sft_epochs": 8,
        "sft_lr": 3e-3,
        "sft_demo_noise": 0.2,
        "base_eval_episodes": 16,  # the untrained tiny model writes no valid call
    },
    # A quick tiny-model smoke run (tests, CI, laptops): it exercises everything in about a
    # minute; the tiny model does not learn ToolUse-v0 at this budget (docs/benchmarks.md).
    "tiny": {
        "model": "tiny",
        "env_kwargs": {"difficulty": "easy", "tools": ["lookup"], "compact": True, "max_steps": 4},
        "iterations": 5,
        "episodes_per_iteration": 16,
        "num_envs": 16,
        "lr": 5e-5,
        "max_new_tokens": 48,
        "max_history_turns": 2,
        "temperature": 0.7,
        "out": "runs/tiny",
        "sft_episodes": 64,
        "sft_epochs": 3,
        "sft_lr": 3e-3,
    },
}

#: Preset keys that are not config fields (handled by the train command itself).
PRESET_EXTRAS: tuple[str, ...] = ("sft_episodes", "sft_epochs", "sft_lr", "sft_demo_noise", "base_eval_episodes")


def _all_fields(classes: tuple[type, ...]) -> dict[str, dataclasses.Field]:
    out: dict[str, dataclasses.Field] = {}
    for cls in classes:
        for f in fields(cls):
            out.setdefault(f.name, f)
    return out


def add_config_arguments(parser: argparse.ArgumentParser, classes: tuple[type, ...]) -> None:
    """Add one ``--option`` per dataclass field of ``classes`` (the union, first wins).

    Options default to "not given" (``argparse.SUPPRESS``) so :func:`config_from_args`
    can tell explicit values from defaults (presets and per-family defaults apply).
    """
    for name, f in _all_fields(classes).items():
        meta = f.metadata
        if not meta.get("cli", True):
            continue
        typ = _field_type(f)
        flag = "--" + name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        help_text = meta.get("help", "")
        if isinstance(default, dict):
            shown = json.dumps(default)
        elif isinstance(default, tuple):
            shown = " ".join(default)
        else:
            shown = str(default)
        help_text = (f"{help_text} (default: {shown})" if shown else help_text).replace("%", "%%")
        if typ is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=help_text)
        elif typ is tuple:
            parser.add_argument(flag, dest=name, nargs="*", default=argparse.SUPPRESS, metavar="S", help=help_text)
        elif typ is dict:
            parser.add_argument(flag, dest=name, type=str, default=argparse.SUPPRESS, metavar="JSON", help=help_text)
        else:
            kw: dict[str, Any] = {}
            if meta.get("choices"):
                kw["choices"] = meta["choices"]
            parser.add_argument(flag, dest=name, type=_cli_type(name, typ), default=argparse.SUPPRESS,
                                metavar=name.upper() if not meta.get("choices") else None, help=help_text, **kw)


def _cli_type(name: str, typ: type):
    def conv(text: str):
        try:
            return typ(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--{name.replace('_', '-')} expects {typ.__name__}, got {text!r}") from None

    conv.__name__ = typ.__name__
    return conv


def make_train_config(values: dict[str, Any]) -> TrainConfig:
    """Build the config of ``values["algo"]``'s family from a dict, rejecting unknown keys.

    Example:
        >>> make_train_config({"algo": "gigpo", "model": "tiny"}).group_size
        8
    """
    algo = values.get("algo", "steppo")
    cls = config_class_for(algo)
    return _build(cls, values)


def _build(cls: type, values: dict[str, Any]):
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        others = [c.__name__ for c in (StepPOConfig, GRPOConfig, SFTConfig) if unknown[0] in {f.name for f in fields(c)}]
        where = f" (it belongs to {', '.join(others)})" if others else ""
        algo = values.get("algo")
        ctx = f" for --algo {algo}" if algo else ""
        raise InvalidConfig(unknown[0], values[unknown[0]],
                            f"no such option{ctx}{where}; allowed: " + ", ".join(sorted(names)))
    return cls(**values)


def config_from_args(args: argparse.Namespace, kind: str = "train", preset: dict[str, Any] | None = None):
    """Turn parsed CLI options (plus an optional preset) into a validated config.

    Only options the user gave (and preset keys) override the family's defaults.
    """
    given = {k: v for k, v in vars(args).items() if not k.startswith("_") and k not in ("command", "preset")
             and k not in PRESET_EXTRAS}
    values: dict[str, Any] = {}
    if kind == "sft":
        names = {f.name for f in fields(SFTConfig)}
        for k, v in (preset or {}).items():
            if k in names:
                values[k] = v
        values.update({k: v for k, v in given.items() if k in names})
        return SFTConfig(**values)
    algo = given.get("algo", (preset or {}).get("algo", "steppo"))
    cls = config_class_for(algo)
    names = {f.name for f in fields(cls)}
    for k, v in (preset or {}).items():
        if k in names:
            values[k] = v
    values.update(given)
    values["algo"] = algo
    return _build(cls, values)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config (tuples become lists), with its class name."""
    d = dataclasses.asdict(cfg)
    d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}
    d["config_class"] = type(cfg).__name__
    return d
