"""Automated distillation, the search: recipe checks, a tiny real study that never reads the test split and
hands its knobs to distill, resume after a real SIGKILL without repeating finished trials, and the error
without optuna."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT, blocked_env, run_cli, stage_artifact

#: a tiny search: digits capped, one-epoch teacher, three one-epoch trials
SEARCH = ["data.limit=300", "teacher.train.epochs=1", "train.epochs=2", "distill.baseline=false",
          "tune.trials=3", "tune.epochs_per_trial=1"]

#: armed while the search runs: any read of the test split fails the test
ARMED: list[bool] = []


class GuardedSplit:
    """The test split, refusing every read while :data:`ARMED` holds something."""

    def __init__(self, split):
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i):
        if ARMED:
            raise AssertionError("the test split was read during the search")
        return self.split[i][:2]


def guarded_digits(limit: int = 300) -> dict:
    """A data factory: the digits splits, the test split guarded."""
    from edgekd.data import load_data
    from edgekd.recipe import DataConfig

    s = load_data(DataConfig(limit=limit), 0)
    return {"train": s.train, "val": s.val, "test": GuardedSplit(s.test), "preprocessing": s.preprocessing}


def test_search_sections_are_validated_all_at_once():
    from edgekd.deploy.errors import RecipeError
    from edgekd.recipe import load_recipe

    bad = ["tune.enabled=true", "tune.alpha=[0.5, 0.2]", "tune.temperature=[0, 5]", "tune.lr=[.nan, 0.1]",
           "tune.trials=0", "tune.pruner=medain", "tune.tirals=3", "students.latency_budget_ms=.nan"]
    with pytest.raises(RecipeError) as info:
        load_recipe("digits", bad)
    text = info.value.message
    for expected in ("tune.trials: 0 is outside", "did you mean 'median'", "did you mean 'tune.trials'",
                     "students.latency_budget_ms: expected a finite number, got nan"):
        assert expected in text, text
    with pytest.raises(RecipeError) as info:  # the combinations, once the values are right
        load_recipe("digits", ["tune.enabled=true", "tune.alpha=[0.5, 0.2]", "tune.lr=[0.2, 0.1]",
                               "tune.methods=[kd, fitnet]", "tune.trials=null", "students.latency_budget_ms=1"])
    text = info.value.message
    for expected in ("tune.alpha: [0.5, 0.2] must be [low, high]", "tune.lr: [0.2, 0.1]", "needs a budget",
                     "tune.methods 'fitnet': distill.method 'fitnet' needs distill.student_layers",
                     "students.latency_budget_ms / students.profile need students.candidates"):
        assert expected in text, text


def test_default_recipe_leaves_search_and_choice_off():
    from edgekd.recipe import load_recipe

    r = load_recipe("digits")
    assert not r.tune.enabled and not r.students.candidates


def test_tiny_search_reads_no_test_data_and_distill_uses_its_knobs(tmp_path):
    from edgekd.pipeline import load_fresh, pipeline, run_pipeline
    from edgekd.recipe import load_recipe
    from edgekd.runfolder import RunFolder
    from edgekd.tuning import tune

    out = tmp_path / "run"
    recipe = load_recipe("digits", [*SEARCH, "data.source=tests.test_tune:guarded_digits", "tune.enabled=true"])
    run_pipeline(recipe, out, stages=["data", "teacher"])  # the teacher is evaluated on test here: allowed
    ARMED.append(True)
    try:
        art = tune(recipe, out)
    finally:
        ARMED.clear()
    assert art.enabled and art.found_finished == 0 and art.ran_now == 3
    assert art.trials[0].origin == "recipe" and art.default_value == art.trials[0].value
    assert art.best_value >= art.default_value, "the recipe's own knobs are trial 0: the best cannot be worse"
    assert {"best_recipe.yaml", "tune.md", "tune.png"} <= set(art.files)
    best = yaml.safe_load((out / "best_recipe.yaml").read_text())
    assert best["distill"]["temperature"] == art.best.temperature and best["train"]["lr"] == art.best.lr
    assert best["tune"]["enabled"] is False and load_recipe(out / "best_recipe.yaml").train.lr == art.best.lr
    assert (out / "tune.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    result = run_pipeline(recipe, out, stages=["distill"], resume=True)
    dist = result.artifacts["distill"]
    assert (dist.method, dist.temperature, dist.alpha) == (art.best.method, art.best.temperature, art.best.alpha)
    raised = load_recipe("digits", [*SEARCH[:-2], "tune.trials=4", "tune.epochs_per_trial=1",
                                    "data.source=tests.test_tune:guarded_digits", "tune.enabled=true"])
    _, _, stale = load_fresh(RunFolder(out), raised, pipeline())
    assert {"tune", "distill"} <= set(stale), "a re-tune makes distill stale"


KILLER = """
import os, signal, sys
from edgekd.pipeline import UI
from edgekd.tuning import tune

class KillAtTrial2(UI):
    def stage(self, name, text):
        if text.startswith("trial 2:"):   # trial 2 trained, not yet recorded: it dies RUNNING
            os.kill(os.getpid(), signal.SIGKILL)

tune("digits", sys.argv[1], overrides=sys.argv[2:], ui=KillAtTrial2())
"""


def _trials(db) -> list[tuple]:
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT t.number, t.state, t.datetime_complete, v.value FROM trials t LEFT JOIN "
                           "trial_values v ON v.trial_id = t.trial_id ORDER BY t.number").fetchall()
        params = con.execute("SELECT t.number, p.param_name, p.param_value FROM trial_params p JOIN trials t "
                             "ON t.trial_id = p.trial_id").fetchall()
    knobs: dict[int, dict] = {}
    for number, name, value in params:
        knobs.setdefault(number, {})[name] = value
    return [(n, state, done, value, tuple(sorted(knobs.get(n, {}).items()))) for n, state, done, value in rows]


@pytest.mark.slow
def test_sigkill_mid_study_then_resume_runs_only_the_rest(tmp_path):
    out, budget = tmp_path / "run", [*SEARCH[:-2], "tune.trials=4", "tune.epochs_per_trial=2"]
    killed = subprocess.run([sys.executable, "-c", KILLER, str(out), *budget], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    before = _trials(out / "tune.db")
    assert [(n, s) for n, s, *_ in before] == [(0, "COMPLETE"), (1, "COMPLETE"), (2, "RUNNING")]

    from edgekd.tuning import tune

    art = tune("digits", out, overrides=budget)  # this process: the killed one's PID is gone
    after = _trials(out / "tune.db")
    assert after[:2] == before[:2], "finished trials are kept as they were, never run again"
    assert after[2][1] == "FAIL", "the killed trial is marked failed ..."
    assert after[3][4] == before[2][4], "... and its knobs run again"
    finished = [t for t in after if t[1] in ("COMPLETE", "PRUNED")]
    assert len(finished) == 4, after
    assert len({t[4] for t in finished}) == 4, "no finished trial repeats another's knobs"
    assert (art.found_finished, art.ran_now) == (2, 2) and art == _saved(out)


def _saved(out):
    from edgekd.artifacts import TuneArtifact
    from edgekd.deploy.typed import from_json

    return from_json(TuneArtifact, stage_artifact(out, "tune"))


def test_tune_without_optuna_says_which_extra(tmp_path):
    proc = run_cli("tune", "--out", str(tmp_path / "run"), env=blocked_env(tmp_path, "optuna"))
    assert proc.returncode == 7, proc.stderr
    assert "pip install 'edgekd[tune]'" in proc.stderr and not (tmp_path / "run").exists()
