"""Preflight for the search and the student choice: run with the pipeline's own checks, before anything is
written — every candidate fits the data, every searched method's loss builds for every student, optuna is
installed when the search is on, and the device profile reads.

Example:
    >>> check_search(ctx, teacher, build)  # doctest: +SKIP  (called by edgekd.stages.train.prepare)
"""

from __future__ import annotations

import dataclasses


def check_search(ctx, teacher, build) -> None:
    """Raise the first problem the ``select``/``tune`` stages would hit later (``build(spec)`` makes a model)."""
    from edgekd.deploy.errors import require
    from edgekd.models import check_models_fit
    from edgekd.tuning.students import candidate_name

    r = ctx.recipe
    students = {f"students.candidates[{i}] ({candidate_name(c)})": build(c) for i, c in enumerate(r.students.candidates)}
    check_models_fit(students, ctx.splits)
    if r.tune.enabled:
        require("optuna", "tune", "edgekd tune (the distillation search)")
        _check_losses(r, students or {"student": build(r.student)}, teacher, ctx.splits.input_shape)
    if r.students.candidates and r.students.profile:
        from edgekd.benchmarks.results import load_results

        load_results(r.students.profile)


def _check_losses(r, students: dict, teacher, input_shape) -> None:
    from edgekd.distill.losses import create_loss

    for method in dict.fromkeys(r.tune.methods):
        cfg = dataclasses.replace(r.distill, method=method)
        for student in students.values():
            create_loss(method, cfg, label_smoothing=r.train.label_smoothing, student=student, teacher=teacher,
                        input_shape=input_shape, weights=r.teacher.weights_mix)
