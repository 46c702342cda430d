"""Live progress of evaluations: episodes and successes reported as they happen, one live display at a time."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

import tests.steppo.toy  # noqa: F401  (registers steppotest/Boxes-v0)
from stepgym.agents.evaluate import EvalProgress
from stepgym.progress import active_bar, episode_progress, progress_bar
from steppo.config import make_train_config
from steppo.rollout import ChatPromptBuilder, Generator, InProcessCollector, SamplingParams, make_env_fn
from steppo.trainer import Trainer

TOY = "tests.steppo.toy:steppotest/Boxes-v0"


def _terminal() -> tuple[Console, io.StringIO]:
    screen = io.StringIO()
    return Console(file=screen, force_terminal=True, color_system=None, width=140), screen


def _progress(done: int, total: int, successes: int) -> EvalProgress:
    return EvalProgress(done=done, total=total, successes=successes, errors=0, steps=3 * done, tokens=40.0 * done,
                        tokens_estimated=False, elapsed_s=2.0)


def test_an_evaluation_alone_gets_a_bar_of_its_own_that_clears_itself():
    console, screen = _terminal()
    with episode_progress(console, "eval (held-out)", 5) as report:
        assert active_bar(console) is not None
        report(_progress(3, 5, 2))
    assert active_bar(console) is None
    shown = screen.getvalue()
    assert "eval (held-out)" in shown and "3/5 success 2/3 | 60 tok/s" in shown
    assert shown.rstrip().endswith("\x1b[2K")  # transient: the last thing written erases the bar


def test_an_evaluation_inside_the_training_bar_is_a_second_task_of_it():
    console, screen = _terminal()
    with progress_bar(console) as bar:
        bar.add_task("training", total=3)
        with episode_progress(console, "eval (held-out)", 4) as report:  # rich allows no second live display
            assert [t.description for t in bar.tasks] == ["training", "eval (held-out)"]
            report(_progress(4, 4, 1))
            bar.refresh()
            assert bar.tasks[1].completed == 4
        assert [t.description for t in bar.tasks] == ["training"]
    assert "4/4 success 1/4 | 80 tok/s" in screen.getvalue()


def test_a_background_collection_only_joins_a_running_bar():
    console, screen = _terminal()
    with episode_progress(console, "rollout", 2, join_only=True) as report:
        assert active_bar(console) is None
        report(_progress(1, 2, 1))
    assert screen.getvalue() == ""


@pytest.mark.parametrize("console", [Console(file=io.StringIO()), Console(file=io.StringIO(), force_terminal=True,
                                                                         quiet=True)])
def test_no_bar_in_a_pipe_or_on_a_quiet_console(console):
    with progress_bar(console) as bar, episode_progress(console, "eval", 2) as report:
        bar.add_task("training", total=1)
        report(_progress(2, 2, 2))
    assert console.file.getvalue() == ""
    console_off, screen = _terminal()
    with episode_progress(console_off, "eval", 2, enabled=False) as report:  # --no-progress
        report(_progress(2, 2, 2))
    assert screen.getvalue() == ""


class RedThenDone(Generator):
    """Opens the red box, then says done: succeeds exactly on the tasks that name the red box."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.calls: dict[int, int] = {}

    def generate(self, prompts, params, sessions=None):
        from steppo.sampling import Generation

        out = []
        for key in sessions:
            text = "open red" if self.calls.get(key, 0) == 0 else "done"
            self.calls[key] = self.calls.get(key, 0) + 1
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            out.append(Generation(response_ids=ids, logprobs=[-1.0] * len(ids), text=text, stop_reason="eos"))
        return out

    def end_session(self, key):
        self.calls.pop(key, None)


def test_the_collector_reports_episodes_successes_and_tokens_as_they_finish():
    from stepgym.models import load_tokenizer

    tok = load_tokenizer("tiny")
    env_fn = make_env_fn(TOY)
    seeds = list(range(12))
    red = 0
    for s in seeds:  # which tasks name the red box, read from the env itself
        env = env_fn()
        obs, _ = env.reset(seed=s)
        red += "red" in obs
        env.close()
    assert 0 < red < len(seeds)
    reports: list[EvalProgress] = []
    col = InProcessCollector(env_fn, RedThenDone(tok), ChatPromptBuilder(tok), num_envs=3)
    batch = col.collect(seeds, [-1] * len(seeds), SamplingParams(max_new_tokens=4), on_progress=reports.append)
    col.close()
    assert [r.done for r in reports] == sorted(r.done for r in reports)  # never goes back
    last = reports[-1]
    assert (last.done, last.total, last.successes) == (len(seeds), len(seeds), red)
    assert last.successes == sum(e.success for e in batch.episodes)
    assert last.tokens == batch.generated_tokens and last.tokens_per_s is not None
    assert last.steps == len(batch.steps)


def test_training_shows_every_evaluation_and_no_live_display_clashes(tmp_path):
    cfg = make_train_config(dict(model="tiny", env=TOY, env_kwargs={}, stop_strings=(), max_new_tokens=4,
                                 episodes_per_iteration=2, num_envs=2, eval_episodes=3, eval_every=1, iterations=1,
                                 out=str(tmp_path / "run"), tensorboard=False, threads=1, save_every=0,
                                 eval_before=True, progress=True))
    console, screen = _terminal()
    summary = Trainer(cfg, console=console).train()
    assert summary["iterations_done"] == 1
    shown = screen.getvalue()
    # the evaluation before training (a bar of its own) and the one of iteration 1 (inside the training bar)
    assert shown.count("eval (held-out)") >= 2 and "3/3 success" in shown
    assert "training" in shown and "1/1" in shown
    assert "iteration 1: rollout" in shown and "2/2 success" in shown  # the iteration's episodes, as they end
    assert "before training: eval success" in shown and "(3 episodes," in shown


def test_loading_a_saved_model_prints_no_loading_bar_into_a_pipe(tmp_path, capfd):
    from stepgym.models import load_model

    lm, tok = load_model("tiny")
    lm.save_pretrained(str(tmp_path))
    tok.save_pretrained(str(tmp_path))
    capfd.readouterr()
    load_model(str(tmp_path))  # transformers draws a "Loading weights" bar on stderr unless told not to
    assert "Loading weights" not in capfd.readouterr().err
    from transformers.utils import logging as hf_logging

    assert hf_logging.is_progress_bar_enabled()  # the setting is restored for the caller
