"""stepgym.make_vec: sync and async text vector envs, fresh observations, autoreset semantics."""

from __future__ import annotations

from contextlib import closing
from functools import partial

import numpy as np
import pytest

import stepgym
from stepgym.errors import InvalidArgument, UnknownEnvError
from stepgym.wrappers import ContextWindow, StepPenalty

ENV = "stepgym/ToolUse-v0"


def experts(envs):
    return list(envs.call("expert_action"))


def rollout(envs, steps):
    obs, _ = envs.reset(seed=0)
    out = [obs]
    for _ in range(steps):
        obs, r, te, tr, _ = envs.step(experts(envs))
        out.append((obs, r.tolist(), te.tolist(), tr.tolist()))
    return out


def test_async_observations_change_between_steps_and_match_sync():
    """Regression: AsyncVectorEnv with shared_memory=True returns stale text observations."""
    with closing(stepgym.make_vec(ENV, 2, "async", difficulty="medium")) as envs:
        a = rollout(envs, 3)
    with closing(stepgym.make_vec(ENV, 2, "sync", difficulty="medium")) as envs:
        s = rollout(envs, 3)
    assert a == s
    seen = [a[0]] + [step[0] for step in a[1:]]
    for i in range(2):
        per_env = [obs[i] for obs in seen]
        assert all(isinstance(o, str) and o for o in per_env)
        assert per_env[0] != per_env[1] != per_env[2]


def test_reset_seeds_each_sub_env_differently():
    with closing(stepgym.make_vec(ENV, 3)) as envs:
        obs, _ = envs.reset(seed=5)
    assert len(set(obs)) == 3


def test_next_step_autoreset_ignores_the_action_after_an_episode_ends():
    with closing(stepgym.make_vec(ENV, 1)) as envs:
        envs.reset(seed=0)
        ended = False
        while not ended:
            obs, r, te, tr, _ = envs.step(experts(envs))
            ended = bool(te[0] or tr[0])
        assert r[0] == 1.0
        # the next step resets: the action is ignored, reward 0, flags False, a new task
        obs2, r2, te2, tr2, info = envs.step(["this action is ignored"])
        assert (r2[0], te2[0], tr2[0]) == (0.0, False, False)
        assert obs2[0].startswith("Task:") and "action_valid" in info


def test_same_step_autoreset_puts_the_last_observation_in_info():
    with closing(stepgym.make_vec(ENV, 1, autoreset_mode="same_step")) as envs:
        envs.reset(seed=0)
        while True:
            obs, r, te, tr, info = envs.step(experts(envs))
            if te[0] or tr[0]:
                break
        assert obs[0].startswith("Task:")
        assert info["final_obs"][0] == "Correct."


def test_wrappers_are_applied_to_each_sub_env():
    wrappers = [partial(StepPenalty, c=0.5), partial(ContextWindow, max_steps=1)]
    with closing(stepgym.make_vec(ENV, 2, "async", wrappers=wrappers)) as envs:
        obs, infos = envs.reset(seed=0)
        obs, r, *_ , infos = envs.step(["junk", "junk"])
    assert np.allclose(r, -0.5) and all("[Step 1]" in o for o in obs)
    assert infos["context"]["steps_kept"].tolist() == [1, 1]


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"id": "stepgym/ToolUse-v9"}, UnknownEnvError),
        ({"id": ENV, "num_envs": 0}, InvalidArgument),
        ({"id": ENV, "mode": "threads"}, InvalidArgument),
        ({"id": ENV, "autoreset_mode": "never"}, InvalidArgument),
        ({"id": ENV, "wrappers": ["StepPenalty"]}, InvalidArgument),
        ({"id": ENV, "difficulty": "impossible"}, InvalidArgument),
    ],
)
def test_bad_arguments_fail_early_with_stepgym_errors(kwargs, error):
    with pytest.raises(error):
        stepgym.make_vec(**kwargs)


def test_async_sub_envs_can_share_one_recording(tmp_path):
    from stepgym.wrappers import RecordTrajectories, read_recording

    path = tmp_path / "rec.jsonl"
    with closing(stepgym.make_vec(ENV, 2, "async", wrappers=[partial(RecordTrajectories, path=path)])) as envs:
        envs.reset(seed=0)
        for _ in range(6):
            envs.step(experts(envs))
    episodes, skipped = read_recording(path)
    assert skipped == 0 and len({ep["run"] for ep in episodes}) == 2
    assert all(ep["steps"][0]["step"] == 0 for ep in episodes)


def test_wrapper_factories_with_a_tokenizer_pickle_for_spawned_workers():
    """Async workers started with "spawn" receive the wrappers pickled."""
    import pickle

    from stepgym.models import load_tokenizer
    from stepgym.vector import _make_one
    from stepgym.wrappers import TokenBudget

    fn = partial(_make_one, ENV, (partial(TokenBudget, tokenizer=load_tokenizer("tiny"), max_tokens=4000),), {})
    env = pickle.loads(pickle.dumps(fn))()
    prompt, info = env.reset(seed=0)
    assert prompt.startswith("Task:") and info["context"]["tokens_after"] <= 4000
