"""A short distillation: one trial of the search, or one candidate's ranking run.

It is the pipeline's own training — :class:`~edgekd.distill.trainer.Trainer` with a
:class:`~edgekd.distill.trainer.DistillObjective` and the recipe's loss from
:func:`~edgekd.distill.losses.create_loss` — on the train split, scored on the validation split; the test
split is never read. Every run starts from the same seed (same initial weights, same batch order), so runs
differ only by what is compared. The teacher's logits are computed once per process and shared by every
run (:func:`teacher_source`).

Example:
    >>> fit = short_distill(ctx, recipe, recipe.student, 5, name="trial 3")  # doctest: +SKIP
    >>> fit.best_val_top1  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses

from edgekd.distill.trainer import Reporter


class QuietReporter(Reporter):
    """No per-epoch log lines (a search runs many short trainings; the stage reports each one)."""

    def fit_start(self, name: str, epochs: int, steps_per_epoch: int) -> None:
        pass

    def epoch_end(self, epoch: int, metrics: dict) -> None:
        pass


def teacher_source(ctx, method: str):
    """The teacher outputs for ``method``: one logit cache (or one online teacher) per process, reused by
    every trial and ranking run."""
    from edgekd.distill import LOSSES
    from edgekd.distill.cache import make_teacher_source

    r, s = ctx.recipe, ctx.splits
    features = bool(getattr(LOSSES.get(method), "uses_features", False))
    key = f"teacher_source:{'features' if features else 'logits'}"
    if key not in ctx.models:
        ctx.models[key] = make_teacher_source(
            [ctx.model("teacher")] + ctx.models.get("extra_teachers", []), s.train_eval, cache=r.distill.cache,
            augmented=s.augmented, needs_features=features, batch_size=r.data.eval_batch_size, device=ctx.device,
            workers=r.data.workers, disk_path=ctx.run.cache / "teacher_logits.npy", num_classes=s.num_classes)
    return ctx.models[key]


def build_student(ctx, spec):
    """The student ``spec`` describes, seeded with the recipe's seed (the same initial weights every run)."""
    return build_student_for(ctx.recipe.seed, spec, ctx.splits)


def build_student_for(seed: int, spec, splits):
    """The model ``spec`` describes for ``splits``' classes and input shape, its weights seeded with ``seed``."""
    from edgekd.distill.trainer import seed_everything
    from edgekd.models import model_from_config

    seed_everything(seed)
    return model_from_config(spec, splits.num_classes, splits.input_shape)


def short_distill(ctx, recipe, spec, epochs: int, *, name: str, reporter: Reporter | None = None):
    """Distil student ``spec`` with ``recipe``'s distill/train sections for ``epochs`` epochs (no checkpoints).

    Returns:
        the trainer's :class:`~edgekd.distill.trainer.FitResult` (``best_val_top1`` is the objective).
    """
    from edgekd.distill.losses import create_loss
    from edgekd.distill.trainer import DistillObjective, Trainer

    student = build_student(ctx, spec)
    loss = create_loss(recipe.distill.method, recipe.distill, label_smoothing=recipe.train.label_smoothing,
                       student=student, teacher=ctx.model("teacher"), input_shape=ctx.splits.input_shape,
                       weights=recipe.teacher.weights_mix)
    objective = DistillObjective(loss, teacher_source(ctx, recipe.distill.method))
    d = recipe.data
    trainer = Trainer(student, ctx.splits.train, ctx.splits.val, dataclasses.replace(recipe.train, epochs=epochs),
                      objective, name=name, seed=recipe.seed, batch_size=d.batch_size,
                      eval_batch_size=d.eval_batch_size, workers=d.workers, device=ctx.device,
                      pin_memory=d.pin_memory, reporter=reporter or QuietReporter())
    return trainer.fit()
