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


def teacher_source(ctx, method: str, epochs: int):
    """The teacher outputs for ``method`` and the student's augmentation, ``(source, views)``, for runs of
    ``epochs`` epochs: one logit cache (of one augmented view per epoch, with augmentation) or one online
    teacher per process, reused by every trial and ranking run."""
    from edgekd.distill import LOSSES
    from edgekd.stages.train import teacher_source as pipeline_source

    features = bool(getattr(LOSSES.get(method), "uses_features", False))
    key = f"teacher_source:{'features' if features else 'logits'}:{epochs}"
    if key not in ctx.models:
        ctx.models[key] = pipeline_source(ctx, method, epochs)
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
    source, views = teacher_source(ctx, recipe.distill.method, epochs)
    objective = DistillObjective(loss, source)
    d = recipe.data
    trainer = Trainer(student, ctx.splits.train, ctx.splits.val, dataclasses.replace(recipe.train, epochs=epochs),
                      objective, name=name, seed=recipe.seed, batch_size=d.batch_size,
                      eval_batch_size=d.eval_batch_size, workers=d.workers, device=ctx.device,
                      pin_memory=d.pin_memory, reporter=reporter or QuietReporter(), augment=views)
    return trainer.fit()
