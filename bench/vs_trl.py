"""StepPO (``stepgym train``) side by side with TRL's ``GRPOTrainer`` multi-turn mode: episodes/s incl. the update.

Both trainers get the same model, the same env (ToolUse-v0 easy, ``lookup`` only, compact
observation), the same batch of episodes per update (8), the same torch thread count and
the same token budget; each runs in its own subprocess, does ``--warmup`` untimed
iterations, then ``--steps`` timed ones (rollout + one update each), and the table
reports episodes per second over the timed ones.

    python bench/vs_trl.py --model tiny --threads 2              # quick check (minutes)
    python bench/vs_trl.py --model smollm2-135m --threads 2      # the base model: no tool calls
    # a model that writes tool calls (the README demo's warm start), StepPO with speculation
    python bench/vs_trl.py --model runs/demo/sft/policy --threads 2 --speculate 4
    # a warm start that solves most episodes (its `stepgym sft` command: docs/benchmarks.md)
    python bench/vs_trl.py --model runs/sft_strong/policy --threads 2 --speculate 8

What is matched and what cannot be:
* stepgym: ``max_new_tokens`` tokens per step, at most ``--max-steps`` env steps per episode,
  StepPO (step-level PPO with a value head), one epoch, one optimizer step per iteration.
* TRL 1.16: ``GRPOTrainer(environment_factory=...)`` through the adapter of
  ``examples/trl_grpo.py`` (every tool call is an env step of the same env), ``num_generations``
  = batch (one GRPO group), ``max_tool_calling_iterations = max_steps - 1`` (so at most
  ``max_steps`` model turns), and ``max_completion_length = max_new_tokens * max_steps``: TRL
  has no per-turn limit, only one for the whole conversation, so the episode token budget
  is the same, not the per-step one. TRL gets one reward per conversation, generates with
  ``transformers.generate`` on CPU (no vLLM) and needs TRL's Qwen2.5 chat template to parse
  tool calls. The table also prints env steps and generated tokens per episode, because an
  untrained model that writes no tool call ends a TRL episode after one turn.

Needs ``pip install "stepgym[trl]"``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ENV_ID = "stepgym/ToolUse-v0"
RESULT = "VS_TRL_RESULT "


def _env_kwargs(args: argparse.Namespace) -> dict:
    return {"difficulty": "easy", "tools": ["lookup"], "compact": True, "max_steps": args.max_steps}


def _run_stepgym(args: argparse.Namespace) -> dict:
    from rich.console import Console

    from steppo.config import StepPOConfig
    from steppo.trainer import Trainer

    cfg = StepPOConfig(
        model=args.model, env=ENV_ID, env_kwargs=_env_kwargs(args), iterations=10_000,
        episodes_per_iteration=args.episodes, num_envs=args.episodes, max_new_tokens=args.max_new_tokens,
        epochs=1, minibatch_size=args.episodes * args.max_steps, micro_batch_size=8,
        out=tempfile.mkdtemp(prefix="vs_trl_steppo_"), overwrite=True, progress=False, tensorboard=False,
        eval_before=False, eval_every=0, save_every=0, threads=args.threads, speculate=args.speculate,
    )
    tr = Trainer(cfg, console=Console(quiet=True))
    tr.setup()
    for it in range(1, args.warmup + 1):
        tr.run_iteration(it)
    steps0, t0 = tr.env_steps, time.perf_counter()
    tokens = 0.0
    for it in range(args.warmup + 1, args.warmup + args.steps + 1):
        before = tr.env_steps
        row = tr.run_iteration(it)
        tokens += row["charts/response_tokens"] * (tr.env_steps - before)  # mean per step x steps
    seconds = time.perf_counter() - t0
    episodes = args.episodes * args.steps
    return {"episodes": episodes, "seconds": seconds, "env_steps": tr.env_steps - steps0,
            "generated_tokens_per_episode": tokens / episodes}


def _run_trl(args: argparse.Namespace) -> dict:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer
    from trl.chat_template_utils import qwen2_5_chat_template

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
    from trl_grpo import trl_environment

    from stepgym.models import load_model

    model, tok = load_model(args.model)
    tok.chat_template = qwen2_5_chat_template  # a template TRL can parse tool calls from
    tok.padding_side = "left"
    env_cls = trl_environment(ENV_ID, **_env_kwargs(args))
    calls = {"n": 0}
    act = env_cls._act

    def counting_act(self, name, arguments):  # counts env steps taken through tool calls
        calls["n"] += 0 if self.done else 1
        return act(self, name, arguments)

    env_cls._act = counting_act
    n = args.warmup + args.steps
    dataset = Dataset.from_dict({"prompt": [[{"role": "user", "content": ""}]] * n, "seed": list(range(n))})
    config = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="vs_trl_trl_"), use_cpu=True, max_steps=n,
        per_device_train_batch_size=args.episodes, num_generations=args.episodes, gradient_accumulation_steps=1,
        max_completion_length=args.max_new_tokens * args.max_steps, max_tool_calling_iterations=args.max_steps - 1,
        learning_rate=1e-5, logging_steps=1, save_strategy="no", report_to="none", bf16=False, disable_tqdm=True,
        seed=0, dataloader_num_workers=0,
    )
    marks: list[tuple[float, int]] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            marks.append((time.perf_counter(), calls["n"]))

        def on_step_end(self, a, state, control, **kw):
            marks.append((time.perf_counter(), calls["n"]))

    trainer = GRPOTrainer(model=model, processing_class=tok, args=config, train_dataset=dataset,
                          environment_factory=env_cls, callbacks=[Timer()])
    trainer.train()
    # marks = [begin1, end1, begin2, end2, ...]; time the last `steps` steps (rollout + update each)
    timed = [(marks[2 * i], marks[2 * i + 1]) for i in range(args.warmup, n)]
    seconds = sum(e[0] - b[0] for b, e in timed)
    env_steps = sum(e[1] - b[1] for b, e in timed)
    logs = [r for r in trainer.state.log_history if "completions/mean_length" in r][args.warmup:]
    # TRL's completion length counts the tool results spliced into the conversation too
    mean_len = sum(r["completions/mean_length"] for r in logs) / max(1, len(logs))
    return {"episodes": args.episodes * args.steps, "seconds": seconds, "env_steps": env_steps,
            "completion_tokens_per_episode": mean_len}


def _worker(args: argparse.Namespace) -> None:
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    res = _run_stepgym(args) if args.worker == "stepgym" else _run_trl(args)
    res["threads"] = torch.get_num_threads()
    print(RESULT + json.dumps(res), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", help="'tiny', 'smollm2-135m' or an HF id/path")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--episodes", type=int, default=8, help="episodes per update (TRL: num_generations)")
    ap.add_argument("--max-new-tokens", type=int, default=40, help="tokens per step (TRL: x max-steps per episode)")
    ap.add_argument("--max-steps", type=int, default=4, help="env steps per episode (TRL: model turns)")
    ap.add_argument("--steps", type=int, default=2, help="timed iterations/steps per framework")
    ap.add_argument("--warmup", type=int, default=1, help="untimed iterations/steps before them")
    ap.add_argument("--speculate", type=int, default=0, help="StepPO's prompt-lookup draft length (0 = off)")
    ap.add_argument("--only", choices=["stepgym", "trl"], default=None, help="run one framework only")
    ap.add_argument("--worker", choices=["stepgym", "trl"], default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        _worker(args)
        return 0
    try:
        import trl
    except ImportError as exc:
        print(f'skipping: TRL is not installed ({exc}); install it with pip install "stepgym[trl]"')
        return 0
    results = {}
    for name in [args.only] if args.only else ["stepgym", "trl"]:
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", name] + [
            a for a in sys.argv[1:] if a not in ("--only", "stepgym", "trl")]
        t = time.perf_counter()
        # the worker's stderr goes straight through, so a slow or killed run still shows its progress
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT)]
        if proc.returncode or not lines:
            sys.stderr.write(proc.stdout[-3000:])
            raise SystemExit(f"{name} worker failed (exit {proc.returncode})")
        results[name] = json.loads(lines[-1][len(RESULT):])
        print(f"{name}: done in {time.perf_counter() - t:.0f}s (incl. model load and warm-up)", file=sys.stderr)
    base = results.get("trl")
    print(f"\nmodel {args.model}, {ENV_ID} easy/lookup/compact, {args.episodes} episodes per update, "
          f"{args.max_new_tokens} tokens/step x {args.max_steps} steps, {args.threads} threads, "
          f"{args.steps} timed iterations after {args.warmup} warm-up; TRL {trl.__version__}\n")
    print("| framework | episodes | env steps | seconds | episodes/s | ratio vs TRL |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        eps = r["episodes"] / r["seconds"]
        ratio = f"{eps / (base['episodes'] / base['seconds']):.2f}x" if base else "-"
        label = "stepgym StepPO" if name == "stepgym" else "TRL GRPOTrainer (environment_factory)"
        print(f"| {label} | {r['episodes']} | {r['env_steps']} | {r['seconds']:.1f} | {eps:.3f} | {ratio} |")
    print("\n" + json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
