"""The knobs the search varies, how a trial draws them, and the recipe they make (no torch, no optuna).

* :func:`suggest` draws one :class:`~edgekd.artifacts.Knobs` from an Optuna trial: ``method`` categorical,
  ``temperature`` and ``lr`` on a log scale (their effect is multiplicative), ``alpha`` linear, ``epochs``
  (integer) only when ``tune.epochs`` asks for it;
* :func:`apply_knobs` writes knobs into a recipe; :func:`effective_recipe` is the recipe the ``distill``
  stage trains with — the selected student and the tuned knobs, when those stages ran.

Example:
    >>> from edgekd.recipe import Recipe
    >>> r = apply_knobs(Recipe(), Knobs("dkd", 2.0, 0.5, 1e-3, 20))
    >>> r.distill.method, r.distill.temperature, r.train.lr, r.train.epochs
    ('dkd', 2.0, 0.001, 20)
"""

from __future__ import annotations

import dataclasses

from edgekd.artifacts import Knobs

#: the knobs in the order tables and plots show them
KNOBS = ("method", "temperature", "alpha", "lr", "epochs")


def default_knobs(recipe) -> Knobs:
    """The recipe's own knobs (the configuration the search must beat)."""
    return Knobs(recipe.distill.method, recipe.distill.temperature, recipe.distill.alpha, recipe.train.lr,
                 recipe.train.epochs)


def suggest(trial, cfg, base: Knobs) -> Knobs:
    """Draw knobs for ``trial`` from the ``tune`` section ``cfg``; epochs stay ``base.epochs`` unless searched."""
    return Knobs(
        method=trial.suggest_categorical("method", list(dict.fromkeys(cfg.methods))),
        temperature=trial.suggest_float("temperature", *cfg.temperature, log=True),
        alpha=trial.suggest_float("alpha", *cfg.alpha),
        lr=trial.suggest_float("lr", *cfg.lr, log=True),
        epochs=trial.suggest_int("epochs", *cfg.epochs) if cfg.epochs else base.epochs)


def trial_epochs(cfg, knobs: Knobs) -> int:
    """How long one trial trains: the searched epochs, else ``tune.epochs_per_trial``, else the recipe's."""
    return knobs.epochs if cfg.epochs else (cfg.epochs_per_trial or knobs.epochs)


def default_params(cfg, base: Knobs) -> dict | None:
    """``base`` as trial parameters, or ``None`` when it lies outside the search space (then it is not
    evaluated as a trial)."""
    params = {"method": base.method, "temperature": base.temperature, "alpha": base.alpha, "lr": base.lr}
    if cfg.epochs:
        params["epochs"] = base.epochs
    inside = base.method in cfg.methods and all(
        getattr(cfg, k)[0] <= v <= getattr(cfg, k)[1] for k, v in params.items() if k != "method")
    return params if inside else None


def knobs_from_params(params: dict, base: Knobs) -> Knobs:
    """The knobs of a finished trial (its parameters; epochs default to ``base.epochs``)."""
    return Knobs(params["method"], float(params["temperature"]), float(params["alpha"]), float(params["lr"]),
                 int(params.get("epochs", base.epochs)))


def apply_knobs(recipe, knobs: Knobs):
    """``recipe`` with ``knobs`` in its ``distill`` and ``train`` sections."""
    distill = dataclasses.replace(recipe.distill, method=knobs.method, temperature=knobs.temperature,
                                  alpha=knobs.alpha)
    train = dataclasses.replace(recipe.train, lr=knobs.lr, epochs=knobs.epochs)
    return dataclasses.replace(recipe, distill=distill, train=train)


def student_spec(recipe, select) -> object:
    """The student to train: the selected candidate (as a ``student`` section), or the recipe's student."""
    from edgekd.recipe import ModelConfig

    if select is None or not select.enabled:
        return recipe.student
    c = recipe.students.candidates[select.chosen_index]
    return ModelConfig(c.model, dict(c.kwargs), c.checkpoint, c.weights)


def effective_recipe(ctx):
    """The recipe the ``distill`` stage trains with: the selected student and the tuned knobs, when the
    ``select`` and ``tune`` stages chose them (their artifacts are in ``ctx``)."""
    recipe = ctx.recipe
    recipe = dataclasses.replace(recipe, student=student_spec(recipe, ctx.artifact("select")))
    tuned = ctx.artifact("tune")
    return apply_knobs(recipe, tuned.best) if tuned.enabled and tuned.best else recipe


def best_recipe(recipe, knobs: Knobs | None, select) -> dict:
    """The recipe that reproduces the final student on its own: the selected student and the best knobs in
    place, the search and the choice switched off."""
    r = dataclasses.replace(recipe, student=student_spec(recipe, select))
    if knobs is not None:
        r = apply_knobs(r, knobs)
    data = r.to_dict()
    data["tune"]["enabled"] = False
    data["students"] = {"candidates": []}
    return data
