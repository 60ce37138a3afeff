"""The training stages: data, teacher, distill — and the preflight that checks every model before anything is
written.

Selection: each training keeps the weights of the epoch its rule picks (``train.select``, see
docs/distillation.md); the test split is evaluated once per model, after training.
"""

from __future__ import annotations

import logging

from edgekd import distributed
from edgekd.artifacts import (
    DataArtifact,
    DistillArtifact,
    ModelFile,
    SeedResult,
    Selection,
    TeacherArtifact,
    TrainedModel,
)
from edgekd.deploy.fileio import sha256_file

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- data
def prepare(ctx, todo: list[str]) -> None:
    """Load the data (always: every stage reads a split), and when training runs, build every model, load
    checkpoints and build the loss — so a wrong name, shape or layer fails here, before anything is written."""
    from edgekd.data import load_data
    from edgekd.distill.trainer import resolve_device

    r = ctx.recipe
    ctx.device = resolve_device(r.train.device)
    ctx.splits = s = load_data(r.data, r.seed)
    artifact = DataArtifact(r.data.source, tuple(s.input_shape), s.num_classes, tuple(s.labels), s.preprocessing,
                            s.identity, {"train": len(s.train), "val": len(s.val), "test": len(s.test)})
    saved = ctx.artifacts.get("data")
    if saved is not None and saved != artifact:
        log.warning("the data changed since %s was made (identity %s → %s): later stages are stale",
                    ctx.run.root, saved.identity, artifact.identity)
        _forget_from(ctx, "data")
    ctx.artifacts["data_now"] = artifact
    ctx.ui.done("data", f"{r.data.source}: {len(s.train)} train / {len(s.val)} val / {len(s.test)} test, "
                        f"input {s.input_shape}, {s.num_classes} classes, device {ctx.device}")
    if {"teacher", "select", "tune", "distill"} & set(todo):
        _preflight(ctx)


def _forget_from(ctx, stage: str) -> None:
    """Drop ``stage``'s record and every record downstream of it (they are stale)."""
    from edgekd.pipeline import _invalidated, pipeline

    for name in _invalidated(pipeline(), [stage]):
        ctx.records.pop(name, None)
        ctx.artifacts.pop(name, None)


def run_data(ctx) -> DataArtifact:
    return ctx.artifacts.pop("data_now")


def _build(ctx, spec):
    """Create a model section's model (and load its ``checkpoint``), seeded so that its initial weights do
    not depend on what ran before (a cache hit or a trained teacher)."""
    from edgekd.distill.trainer import seed_everything
    from edgekd.models import model_from_config

    seed_everything(ctx.recipe.seed)
    return model_from_config(spec, ctx.splits.num_classes, ctx.splits.input_shape)


def _make_loss(ctx, student, teacher):
    from edgekd.distill.losses import create_loss

    r = ctx.recipe
    return create_loss(r.distill.method, r.distill, label_smoothing=r.train.label_smoothing, student=student,
                       teacher=teacher, input_shape=ctx.splits.input_shape, weights=r.teacher.weights_mix)


def _preflight(ctx) -> None:
    from edgekd.models import check_models_fit

    r = ctx.recipe
    teacher = _build(ctx, r.teacher)
    extra = [_build(ctx, spec) for spec in r.teacher.extra]
    student = _build(ctx, r.student)
    check_models_fit({"teacher": teacher, "student": student,
                      **{f"teacher.extra[{i}]": m for i, m in enumerate(extra)}}, ctx.splits)
    _make_loss(ctx, student, teacher)
    from edgekd.tuning.checks import check_search

    check_search(ctx, teacher, lambda spec: _build(ctx, spec))  # candidates fit, searched losses build, profile
    ctx.models["teacher_init"] = teacher
    ctx.models["extra_teachers"] = [m.to(ctx.device).eval() for m in extra]


# ---------------------------------------------------------------------------------------------- teacher
def _teacher_key(ctx) -> str:
    r = ctx.recipe
    return f"{r.name}-{r.digest('teacher')}-{ctx.splits.identity}-s{r.seed}"


def _loader_kwargs(ctx) -> dict:
    d = ctx.recipe.data
    return {"batch_size": d.batch_size, "eval_batch_size": d.eval_batch_size, "workers": d.workers,
            "device": ctx.device, "pin_memory": d.pin_memory}


def _fingerprint(ctx, name: str) -> dict:
    r = ctx.recipe
    fp = {"data": ctx.splits.identity, "seed": r.seed,
          "train": r.digest("train" if name != "teacher" else "teacher")}
    if name != "teacher":
        fp["student"] = r.digest("student")
        fp["teacher"] = _teacher_key(ctx)
    if name.startswith("student"):
        fp["distill"] = r.digest("distill")
    return fp


def _unwrap(model):
    return getattr(model, "module", model)


def run_teacher(ctx) -> TeacherArtifact:
    from edgekd.checkpoint import load_weights, save_weights
    from edgekd.distill.trainer import CEObjective, Trainer
    from edgekd.pipeline import cache_dir

    r = ctx.recipe
    teacher = ctx.models.pop("teacher_init", None)
    if teacher is None:  # (an nn.Module's truth value is its length for containers: compare with None)
        teacher = _build(ctx, r.teacher)
    cached = cache_dir() / "teachers" / f"{_teacher_key(ctx)}.safetensors"
    selection = None
    if r.teacher.checkpoint:
        source = f"checkpoint {r.teacher.checkpoint}"
    elif cached.is_file():
        load_weights(teacher, cached)
        source = f"cache {cached}"
    else:
        ctx.ui.stage("teacher", f"training {r.teacher.model} (no checkpoint in the recipe; cached afterwards)")
        trainer = Trainer(teacher, ctx.splits.train, ctx.splits.val, r.teacher.train,
                          CEObjective(r.teacher.train.label_smoothing), name="teacher", seed=r.seed,
                          **_loader_kwargs(ctx), checkpoint_dir=ctx.run.checkpoints("teacher"),
                          fingerprint=_fingerprint(ctx, "teacher"), reporter=ctx.ui.reporter("teacher"))
        fit = trainer.fit(resume=ctx.resume and (ctx.run.checkpoints("teacher") / "last.pt").is_file())
        teacher, selection = trainer.model, _selection(fit)
        if distributed.is_main():
            save_weights(_unwrap(teacher), cached)
        source = "trained now"
    teacher = _unwrap(teacher).to(ctx.device).eval()
    ctx.models["teacher"] = teacher
    model = _trained(ctx, "teacher", "teacher", teacher, r.seed, selection)
    ctx.ui.done("teacher", f"{source}; test top-1 {model.test_top1:.2%}")
    return TeacherArtifact(model, source)


def _selection(fit) -> Selection:
    return Selection(fit.selected_by, fit.best_epoch, fit.epochs_run, fit.stopped_early, fit.resumed_from_epoch,
                     fit.best_score)


def _trained(ctx, name: str, role: str, model, seed: int, selection: Selection | None) -> TrainedModel:
    """Save ``model``'s weights (rank 0) and evaluate it once on validation and once on test."""
    from edgekd.checkpoint import save_weights
    from edgekd.distill.trainer import evaluate
    from edgekd.models import count_params

    path = ctx.run.weights(name)
    if distributed.is_main():
        save_weights(model, path)
    distributed.barrier()  # every rank records the file rank 0 wrote
    bs = ctx.recipe.data.eval_batch_size
    return TrainedModel(name, role, ModelFile(ctx.run.rel(path), sha256_file(path)), count_params(model), seed,
                        evaluate(model, ctx.splits.val, bs, ctx.device),
                        evaluate(model, ctx.splits.test, bs, ctx.device), selection)


# ---------------------------------------------------------------------------------------------- distill
def _teacher_source(ctx):
    from edgekd.distill import LOSSES
    from edgekd.distill.cache import make_teacher_source

    r, s = ctx.recipe, ctx.splits
    loss_cls = LOSSES.get(r.distill.method)
    return make_teacher_source(
        [ctx.model("teacher")] + ctx.models.get("extra_teachers", []), s.train_eval, cache=r.distill.cache,
        augmented=s.augmented, needs_features=getattr(loss_cls, "uses_features", False),
        batch_size=r.data.eval_batch_size, device=ctx.device, workers=r.data.workers,
        disk_path=ctx.run.cache / "teacher_logits.npy", num_classes=s.num_classes)


def _train(ctx, name: str, role: str, model, objective, seed: int) -> TrainedModel:
    from edgekd.distill.trainer import Trainer

    r = ctx.recipe
    trainer = Trainer(model, ctx.splits.train, ctx.splits.val, r.train, objective, name=name, seed=seed,
                      **_loader_kwargs(ctx), checkpoint_dir=ctx.run.checkpoints(name),
                      fingerprint=_fingerprint(ctx, name), reporter=ctx.ui.reporter(name))
    fit = trainer.fit(resume=ctx.resume and (ctx.run.checkpoints(name) / "last.pt").is_file())
    model = _unwrap(trainer.model).eval()
    ctx.models[name] = model
    return _trained(ctx, name, role, model, seed, _selection(fit))


def run_distill(ctx) -> DistillArtifact:
    import dataclasses

    from edgekd.distill.trainer import CEObjective, DistillObjective
    from edgekd.tuning.space import effective_recipe

    ctx = dataclasses.replace(ctx, recipe=effective_recipe(ctx))  # the selected student, the tuned knobs
    r = ctx.recipe
    source = _teacher_source(ctx)
    ctx.ui.stage("distill", f"{r.distill.method} (T={r.distill.temperature}, alpha={r.distill.alpha}), "
                            f"teacher outputs: {source.kind}")
    student = _build(ctx, r.student)
    loss = _make_loss(ctx, student, ctx.model("teacher"))
    kd = _train(ctx, "student", "student", student, DistillObjective(loss, source), r.seed)
    baseline = None
    if r.distill.baseline:
        ctx.ui.stage("distill", "baseline: the same student from scratch, same budget and seed")
        baseline = _train(ctx, "baseline", "baseline", _build(ctx, r.student), CEObjective(r.train.label_smoothing),
                          r.seed)
    teacher_top1 = ctx.artifact("teacher").model.test_top1
    gain = "" if baseline is None else \
        f", baseline {baseline.test_top1:.2%} (gain {100 * (kd.test_top1 - baseline.test_top1):+.2f} pp)"
    ctx.ui.done("distill", f"student test top-1 {kd.test_top1:.2%}{gain}")
    seeds = (SeedResult(r.seed, kd.test_top1, kd.val_top1, baseline.test_top1 if baseline else None,
                        baseline.val_top1 if baseline else None),)
    return DistillArtifact(r.distill.method, r.distill.temperature, r.distill.alpha, source.kind, teacher_top1, kd,
                           baseline, seeds, None, r.seed, "the only seed")


# ---------------------------------------------------------------------------------------------- loading
def load_trained(ctx, name: str):
    """Rebuild a trained model of an earlier run from the recipe and its weights in the run folder."""
    import dataclasses

    from edgekd.checkpoint import load_weights
    from edgekd.models import model_from_config

    r = ctx.recipe
    if name == "teacher":
        spec, trained = r.teacher, ctx.artifact("teacher").model
    else:
        dist = ctx.artifact("distill")
        trained = dist.student if name == "student" else dist.baseline
        from edgekd.tuning.space import effective_recipe

        spec = effective_recipe(ctx).student
    if trained is None:
        from edgekd.deploy.errors import UsageError

        raise UsageError(f"this run has no trained {name}", hint="set distill.baseline: true and re-run distill")
    model = model_from_config(dataclasses.replace(spec, checkpoint=None), ctx.splits.num_classes,
                              ctx.splits.input_shape)
    load_weights(model, ctx.run.path(trained.weights.path))
    return model.to(ctx.device).eval()
