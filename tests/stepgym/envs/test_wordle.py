"""Wordle-v0: feedback rules, shipped lists, and an expert that wins every answer in six."""

from __future__ import annotations

import random

import gymnasium as gym
import pytest

import stepgym  # noqa: F401
from stepgym.envs.wordle import WordleEnv, _tree, build_solver_tree, feedback, load_words


def reference_feedback(guess: str, answer: str) -> str:
    res = ["X"] * 5
    left: dict[str, int] = {}
    for i in range(5):
        if guess[i] == answer[i]:
            res[i] = "G"
        else:
            left[answer[i]] = left.get(answer[i], 0) + 1
    for i in range(5):
        if res[i] == "X" and left.get(guess[i], 0):
            res[i] = "Y"
            left[guess[i]] -= 1
    return "".join(res)


@pytest.mark.parametrize(
    ("guess", "answer", "marks"),
    [
        ("crane", "crane", "GGGGG"),
        ("speed", "abide", "XXYXY"),  # two e's guessed, one in the answer: only one marked
        ("eerie", "there", "YXYXG"),  # e at 0 takes the only spare e; r is elsewhere
        ("llama", "hello", "YYXXX"),
        ("robot", "motor", "YGXGY"),
    ],
)
def test_feedback_known_cases(guess, answer, marks):
    assert feedback(guess, answer) == marks == reference_feedback(guess, answer)


def test_feedback_matches_reference_on_random_pairs():
    rng = random.Random(0)
    guesses, answers = load_words("guesses"), load_words("answers")
    for _ in range(20_000):
        g, a = rng.choice(guesses), rng.choice(answers)
        assert feedback(g, a) == reference_feedback(g, a), (g, a)


def test_shipped_lists():
    answers, guesses = load_words("answers"), load_words("guesses")
    assert len(answers) > 2000 and len(guesses) > len(answers)
    assert set(answers) <= set(guesses)
    assert all(len(w) == 5 and w.isalpha() and w.islower() and w.isascii() for w in guesses)
    assert all(g in set(guesses) for g in _tree().values())


def test_expert_wins_every_answer_within_six_guesses():
    env = WordleEnv()
    worst = 0
    for answer in load_words("answers"):
        env.reset(seed=0, options={"answer": answer})
        n = 0
        while True:
            _, reward, term, trunc, info = env.step(env.expert_action())
            n += 1
            if term or trunc:
                break
        assert info["success"] and reward == 1.0, answer
        worst = max(worst, n)
    assert worst <= 6


def test_expert_off_the_tree_only_guesses_consistent_words():
    env = WordleEnv(max_guesses=10)
    rng = random.Random(1)
    for seed in range(20):
        env.reset(seed=seed)
        env.step(rng.choice(load_words("answers")))
        while not env._needs_reset:
            guess = env.expert_action()
            assert all(feedback(g, guess) == f for g, f in env._history) or guess == env._answer
            _, _, _, _, info = env.step(guess)
        assert info["success"]


def test_actions_and_errors():
    env = gym.make("stepgym/Wordle-v0")
    env.reset(seed=0, options={"answer": "crane"})
    _, _, _, _, info = env.step("<answer>TRACE</answer>")
    assert info["action_valid"] and info["feedback"] == "XGGYG" and info["guesses_left"] == 5
    obs, _, _, _, info = env.step("qzxvj")
    assert info["action_valid"] is False and "not in the word list" in obs and info["guesses_left"] == 5
    obs, _, _, _, info = env.step("I think it is a fruit")
    assert info["action_valid"] is False and "five-letter" in info["error"]
    loose = WordleEnv(strict=False, show_letters=True)
    loose.reset(seed=0, options={"answer": "crane"})
    obs, _, _, _, info = loose.step("qzxvj")
    assert info["action_valid"] and "Not in the word: J Q V X Z" in obs


def test_running_out_of_guesses_reveals_the_answer():
    env = WordleEnv(max_guesses=2)
    env.reset(seed=0, options={"answer": "crane"})
    env.step("lumpy")
    obs, reward, term, trunc, info = env.step("fight")
    assert term and not info["success"] and reward == 0.0 and info["answer"] == "crane" and "CRANE" in obs


def test_build_solver_tree_on_a_small_list():
    words = ["crane", "trace", "react", "cater", "crate", "caret", "recta", "acres", "cares", "races"]
    tree = build_solver_tree(words, words, max_depth=6)
    for answer in words:
        path, n = "", 0
        while True:
            g = tree[path]
            n += 1
            f = feedback(g, answer)
            if f == "GGGGG":
                break
            path = f"{path}.{f}" if path else f
        assert n <= 6
