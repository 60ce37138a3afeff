"""Automated distillation: a search over the distillation knobs and a hardware-aware choice of the student.

* :mod:`edgekd.tuning.search` — ``edgekd tune``: Optuna (TPE sampler, pruning on validation) over
  temperature, alpha, method and learning rate (and epochs when asked), stored in Optuna's own storage so a
  killed search resumes and several processes or machines can share one study;
* :mod:`edgekd.tuning.students` — each candidate student exported untrained and timed (here, or on the
  target through an ``edgekd bench --json`` profile), those over the latency budget dropped, the rest
  ranked by a short distillation;
* :mod:`edgekd.tuning.space` — the knobs, applied to a recipe (torch- and optuna-free);
* :mod:`edgekd.tuning.report` — the trials table, the plots and ``best_recipe.yaml``.

The pipeline runs them as the ``select`` and ``tune`` stages, between ``teacher`` and ``distill``. This
module imports neither torch nor optuna: recipes are validated against :data:`PRUNERS` before either loads.

Example:
    >>> from edgekd.tuning import tune
    >>> result = tune("digits", "runs/tune", overrides=["tune.trials=12"])  # doctest: +SKIP
    >>> result.best, result.best_value  # doctest: +SKIP
"""

from __future__ import annotations

from edgekd.deploy.registry import Registry

#: ``tune.pruner`` → ``factory(epochs_per_trial, trials) -> optuna pruner``
PRUNERS: Registry = Registry("tune.pruner")
for _name in ("median", "hyperband", "none"):
    PRUNERS.register_lazy(_name, f"edgekd.tuning.search:{_name}_pruner")

__all__ = ["PRUNERS", "select_student", "tune"]


def tune(recipe, out, *, overrides=(), ui=None):
    """Run the search for ``recipe`` (a :class:`~edgekd.recipe.Recipe`, a path or a bundled name) into run
    folder ``out``: the data, teacher, select and tune stages, with ``tune.enabled`` on.

    A folder that already holds the study continues it: finished trials are kept and only the rest of the
    budget runs. Returns the :class:`~edgekd.artifacts.TuneArtifact` (also saved as ``out/stages/tune.json``;
    ``out/best_recipe.yaml`` is the best configuration as a recipe).

    Example:
        >>> art = tune("digits", "runs/tune", overrides=["tune.trials=12", "tune.epochs_per_trial=10"])  # doctest: +SKIP
        >>> art.best.temperature, art.best_value  # doctest: +SKIP
    """
    result = _run(recipe, out, overrides, ["tune.enabled=true"], ["data", "teacher", "select", "tune"], ui)
    return result.artifacts["tune"]


def select_student(recipe, out, *, overrides=(), ui=None):
    """Choose the student among ``students.candidates`` (the data, teacher and select stages) into ``out``.

    Returns the :class:`~edgekd.artifacts.SelectArtifact`.

    Example:
        >>> art = select_student("models/my_job.yaml", "runs/select")  # doctest: +SKIP
        >>> art.chosen, [(c.name, c.latency_ms, c.over_budget) for c in art.candidates]  # doctest: +SKIP
    """
    return _run(recipe, out, overrides, [], ["data", "teacher", "select"], ui).artifacts["select"]


def _run(recipe, out, overrides, forced, stages, ui):
    from edgekd.pipeline import run_pipeline
    from edgekd.recipe import Recipe, apply_overrides, load_recipe, recipe_from_dict
    from edgekd.runfolder import RunFolder

    if isinstance(recipe, Recipe):
        recipe = recipe_from_dict(apply_overrides(recipe.to_dict(), [*overrides, *forced]))
    else:
        recipe = load_recipe(recipe, [*overrides, *forced])
    return run_pipeline(recipe, out, stages=stages, resume=RunFolder(out).exists(), ui=ui)
