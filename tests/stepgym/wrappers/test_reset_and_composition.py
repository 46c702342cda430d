"""Every wrapper, alone and stacked in different orders, over every registered env:

* after ``reset`` a used wrapped env behaves exactly like a freshly made one (no state
  leaks across episodes);
* stacked in any order, observations stay in the observation space and the reward
  components still sum to the reward.
"""

from __future__ import annotations

import functools
import json
import math
import random
from functools import partial

import gymnasium as gym
import pytest

import stepgym
from stepgym.wrappers import (
    ChatMessages,
    ContextWindow,
    DiscountedTerminalReward,
    FormatReward,
    HistoryPrompt,
    InvalidActionPenalty,
    MalformedActionPolicy,
    ParseActions,
    PotentialShaping,
    RecordTrajectories,
    StepPenalty,
    SuccessBonus,
    TokenBudget,
)

ENV_IDS = [e.id for e in stepgym.list_envs("stepgym")] + ["wrapperstest/PlainText-v0"]


def phi(obs, info):
    return 0.01 * (len(obs) % 7)


@pytest.fixture(scope="module")
def stacks(tiny_tokenizer, smollm2_tokenizer, tmp_path_factory):
    """name -> (env, env_id) -> wrapped env. TokenBudget gets a budget the env's tasks fit."""
    rec_dir = tmp_path_factory.mktemp("rec")

    @functools.lru_cache(maxsize=None)
    def budget(env_id):
        probe = gym.make(env_id)
        worst = max(len(tiny_tokenizer(probe.reset(seed=s)[0], add_special_tokens=False)["input_ids"]) for s in (0, 1))
        return worst + 80  # tight enough that steps get dropped or cut

    singles = {
        "HistoryPrompt": lambda e, i: HistoryPrompt(e),
        "ContextWindow": lambda e, i: ContextWindow(e, max_steps=2),
        "TokenBudget": lambda e, i: TokenBudget(e, tiny_tokenizer, budget(i)),
        "ChatMessages": lambda e, i: ChatMessages(e, smollm2_tokenizer, max_steps=3),
        "StepPenalty": lambda e, i: StepPenalty(e, 0.01),
        "InvalidActionPenalty": lambda e, i: InvalidActionPenalty(e, 0.1),
        "FormatReward": lambda e, i: FormatReward(e, 0.05),
        "SuccessBonus": lambda e, i: SuccessBonus(e, 0.5),
        "PotentialShaping": lambda e, i: PotentialShaping(e, phi, 0.9),
        "DiscountedTerminalReward": lambda e, i: DiscountedTerminalReward(e, 0.9),
        "ParseActions": lambda e, i: ParseActions(e),
        "Malformed-reprompt": lambda e, i: MalformedActionPolicy(e, "reprompt", max_retries=1),
        "Malformed-penalize": lambda e, i: MalformedActionPolicy(e, "penalize"),
        "RecordTrajectories": lambda e, i: RecordTrajectories(e, rec_dir / f"{i.replace('/', '_')}.jsonl"),
    }
    return singles


def actions_for(env):
    """The expert's next step where the env has one, else a sampled action (seeded)."""
    expert = getattr(env.unwrapped, "expert_action", None)
    try:
        return expert() if expert is not None else env.action_space.sample()
    except NotImplementedError:
        return env.action_space.sample()


def episode(env, seed, max_steps):
    env.action_space.seed(seed)
    obs, info = env.reset(seed=seed)
    out = [(obs, info)]
    for _ in range(max_steps):
        step = env.step(actions_for(env))
        out.append(step)
        if step[2] or step[3]:
            break
    return json.dumps(out, sort_keys=True, default=repr)


def apply(names, stacks, env, env_id):
    for n in names:
        env = stacks[n](env, env_id)
    return env


ALL_ORDERS = [
    ["ParseActions", "Malformed-penalize", "StepPenalty", "InvalidActionPenalty", "FormatReward", "SuccessBonus",
     "PotentialShaping", "DiscountedTerminalReward", "RecordTrajectories", "TokenBudget"],
    ["TokenBudget", "RecordTrajectories", "DiscountedTerminalReward", "SuccessBonus", "Malformed-reprompt",
     "StepPenalty", "ParseActions"],
    ["ChatMessages", "StepPenalty", "ParseActions", "Malformed-penalize", "PotentialShaping"],
]


def check_reset(env_id, stacks, names):
    used = apply(names, stacks, gym.make(env_id), env_id)
    episode(used, seed=1, max_steps=3)  # leave state behind, mid-episode
    again = episode(used, seed=0, max_steps=6)
    fresh = episode(apply(names, stacks, gym.make(env_id), env_id), seed=0, max_steps=6)
    assert again == fresh, f"{names} on {env_id} keeps state across reset"
    if env_id != "stepgym/TextWorld-v0":  # its close() runs a full gc.collect, ~1 s with torch loaded
        used.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_reset_behaves_like_a_fresh_env(env_id, stacks):
    """The three stacks hold every wrapper; with the two context wrappers they leave out, every
    wrapper is checked on every env (some third-party adapters take ~0.5 s per make)."""
    for names in ALL_ORDERS + [["HistoryPrompt"], ["ContextWindow", "Malformed-reprompt"]]:
        check_reset(env_id, stacks, names)


@pytest.mark.parametrize("env_id", ["stepgym/ToolUse-v0", "wrapperstest/PlainText-v0"])
def test_each_wrapper_alone_resets_cleanly(env_id, stacks):
    for name in stacks:
        check_reset(env_id, stacks, [name])


@pytest.mark.parametrize("env_id", ["stepgym/ToolUse-v0", "wrapperstest/PlainText-v0"])
@pytest.mark.parametrize("order_seed", range(4))
def test_any_order_keeps_the_invariants(env_id, order_seed, stacks):
    names = [n for n in stacks if n not in ("HistoryPrompt", "ContextWindow", "ChatMessages", "Malformed-reprompt")]
    random.Random(order_seed).shuffle(names)
    env = apply(names, stacks, gym.make(env_id), env_id)
    for seed in range(2):
        obs, info = env.reset(seed=seed)
        assert env.observation_space.contains(obs) and "context" in info
        done = False
        t = 0
        while not done:
            t += 1
            a = "not an action" if t == 1 else actions_for(env)
            obs, r, term, trunc, info = env.step(a)
            done = term or trunc
            assert env.observation_space.contains(obs)
            assert type(term) is bool and type(trunc) is bool
            assert math.isclose(sum(info["reward_components"].values()), r, abs_tol=1e-12)
            assert info["context"]["tokens_after"] <= env.get_wrapper_attr("max_tokens")
    env.close()


def test_vector_envs_take_wrappers(tiny_tokenizer):
    envs = stepgym.make_vec("stepgym/ToolUse-v0", 2, wrappers=[partial(StepPenalty, c=0.01),
                                                               partial(TokenBudget, tokenizer=tiny_tokenizer, max_tokens=2000)])
    obs, infos = envs.reset(seed=0)
    assert all(isinstance(o, str) for o in obs) and infos["context"]["tokens_after"].max() <= 2000
    envs.close()


def test_reprompt_under_a_token_budget_stays_in_budget(tiny_tokenizer):
    """Retries are steps of the transcript; with the budget outermost every prompt fits."""
    env = TokenBudget(MalformedActionPolicy(StepPenalty(gym.make("stepgym/ToolUse-v0"), 0.01), "reprompt",
                                            max_retries=3, repeat_observation=False), tiny_tokenizer, 1500)
    env.reset(seed=0)
    for a in ["junk", "more junk", "Action: lookup[Belxo, population]"]:
        prompt, r, _, _, info = env.step(a)
        assert len(tiny_tokenizer(prompt, add_special_tokens=False)["input_ids"]) <= 1500
    assert env.unwrapped.elapsed_steps == 1 and info["reward_components"]["step_penalty"] == -0.01
    assert "could not be used" in prompt  # the retries are in the history the model reads
