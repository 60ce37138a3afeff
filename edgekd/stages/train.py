"""The training stages: data, teacher, distill — and the preflight that checks every model before anything is
written.

Selection: each training keeps the weights of the epoch its rule picks (``train.select``, see
docs/distillation.md); the test split is evaluated once per model, after training.
"""

from __future__ import annotations

import hashlib
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
    ctx.splits = s = load_data(r.data, r.seed, progress=ctx.ui.progress)
    check_splits(s, r.data)
    _write_assets(ctx, s.assets)
    artifact = DataArtifact(r.data.source, tuple(s.input_shape), s.num_classes, tuple(s.labels), s.preprocessing,
                            s.identity, {"train": len(s.train), "val": len(s.val), "test": len(s.test)}, s.task,
                            tuple(sorted(s.assets)))
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


def _write_assets(ctx, assets: dict[str, str]) -> None:
    """The data's files (a text model's ``tokenizer.json``) into the run folder, where the bundle takes them."""
    from edgekd.deploy.fileio import write_text

    for name, text in assets.items():
        path = ctx.run.root / name
        if distributed.is_main() and not (path.is_file() and path.read_text(encoding="utf-8") == text):
            write_text(path, text)


def check_splits(s, cfg) -> None:
    """No figures from nothing: every split must hold samples (and training at least two classes)."""
    from edgekd.deploy.errors import UsageError

    sizes = {"train": len(s.train), "validation": len(s.val), "test": len(s.test)}
    empty = [name for name, n in sizes.items() if n == 0]
    if empty:
        keys = ["data.limit" if cfg.limit else None, "data.val_fraction" if "validation" in empty else None,
                "data.test_fraction" if "test" in empty else None]
        raise UsageError(f"the {' and '.join(empty)} split(s) would be empty ({sizes['train']} train / "
                         f"{sizes['validation']} validation / {sizes['test']} test samples from data.source "
                         f"{cfg.source!r}): there would be nothing to measure",
                         hint=f"raise {' or '.join(k for k in keys if k) or 'the amount of data'}")
    if s.num_classes < 2:
        raise UsageError(f"data.source {cfg.source!r} has {s.num_classes} class(es); classification needs two or more")


def _forget_from(ctx, stage: str) -> None:
    """Drop ``stage``'s record and every record downstream of it (they are stale)."""
    from edgekd.pipeline import _invalidated, pipeline

    for name in _invalidated(pipeline(), [stage]):
        ctx.records.pop(name, None)
        ctx.artifacts.pop(name, None)


def run_data(ctx) -> DataArtifact:
    return ctx.artifacts.pop("data_now")


def _build(ctx, spec, seed: int | None = None):
    """Create a model section's model (and load its ``checkpoint``), seeded (the recipe's seed, or ``seed``) so
    that its initial weights do not depend on what ran before (a cache hit or a trained teacher)."""
    from edgekd.distill.trainer import seed_everything
    from edgekd.models import model_from_config

    seed_everything(ctx.recipe.seed if seed is None else seed)
    return model_from_config(spec, ctx.splits.num_classes, ctx.splits.input_shape, ctx.splits.model_kwargs)


def _make_loss(ctx, student, teacher):
    from edgekd.distill.losses import create_loss

    r = ctx.recipe
    return create_loss(r.distill.method, r.distill, label_smoothing=r.train.label_smoothing, student=student,
                       teacher=teacher, input_shape=ctx.splits.input_shape, weights=r.teacher.weights_mix,
                       example=ctx.splits.example("train", 2))


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
                          fingerprint=_fingerprint(ctx, "teacher"), reporter=ctx.ui.reporter("teacher"),
                          augment=epoch_views(ctx, None))
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
def epoch_views(ctx, views: int | None):
    """The trainer's batch augmentation of in-memory data (``None`` when there is none): ``views`` fixed
    views replayed across epochs, or a fresh view each epoch (``None``)."""
    import dataclasses

    from edgekd.augment import EpochViews

    aug = ctx.splits.augmentation
    return None if aug is None else EpochViews(dataclasses.replace(aug, seed=ctx.recipe.seed), views)


def cache_views(recipe, epochs: int | None = None) -> int:
    """``distill.cache_views``, or one view per epoch: the cache then holds exactly what an online teacher
    would have computed, once for every seed and the resumes."""
    return recipe.distill.cache_views or epochs or recipe.train.epochs


def teacher_source(ctx, method: str | None = None, epochs: int | None = None, main_only: bool = False):
    """The teacher outputs a distillation of ``epochs`` epochs (default the recipe's) with ``method`` (default
    the recipe's) learns from, and the augmentation its student trains with: ``(source, views)``. With
    ``main_only`` the main teacher alone (not ``teacher.extra``)."""
    from edgekd.distill import LOSSES
    from edgekd.distill.cache import make_teacher_source

    r, s = ctx.recipe, ctx.splits
    loss_cls = LOSSES.get(method or r.distill.method)
    views = epoch_views(ctx, cache_views(r, epochs))
    teachers = [ctx.model("teacher")] + ([] if main_only else ctx.models.get("extra_teachers", []))
    key = hashlib.sha256(f"{_teacher_key(ctx)}|{r.digest('teacher')}|{len(teachers)}|{views and views.augmentation}|"
                         f"{views and views.views}".encode()).hexdigest()[:16]
    source = make_teacher_source(
        teachers, s.train_eval, cache=r.distill.cache,
        augmented=s.augmented, needs_features=getattr(loss_cls, "uses_features", False),
        batch_size=r.data.eval_batch_size, device=ctx.device, workers=r.data.workers,
        disk_path=ctx.run.cache / f"teacher_logits-{key}.npy", num_classes=s.num_classes, views=views,
        progress=ctx.ui.progress)
    # what the student trains on: the cache's views, or (online teacher) a fresh view each epoch
    return source, views if getattr(source, "views", None) is not None else epoch_views(ctx, None)


def _augmentation_text(ctx, views) -> str:
    if views is None:
        return "per sample (torchvision transforms)" if ctx.splits.augmented else "none"
    every = f"{views.views} view(s) replayed" if views.views else "a fresh view each epoch"
    return f"{views.augmentation.describe()}; {every}"


def _train(ctx, name: str, role: str, model, objective, seed: int, augment=None) -> TrainedModel:
    from edgekd.distill.trainer import Trainer

    r = ctx.recipe
    trainer = Trainer(model, ctx.splits.train, ctx.splits.val, r.train, objective, name=name, seed=seed,
                      **_loader_kwargs(ctx), checkpoint_dir=ctx.run.checkpoints(name),
                      fingerprint={**_fingerprint(ctx, name), "seed": seed}, reporter=ctx.ui.reporter(name),
                      augment=augment)
    fit = trainer.fit(resume=ctx.resume and (ctx.run.checkpoints(name) / "last.pt").is_file())
    model = _unwrap(trainer.model).eval()
    ctx.models[name] = model
    return _trained(ctx, name, role, model, seed, _selection(fit))


def seeds_of(recipe) -> list[int]:
    """The seeds a distill stage trains: ``seed``, ``seed + 1``, … (``distill.seeds`` of them)."""
    return [recipe.seed + k for k in range(recipe.distill.seeds)]


def _seeded(name: str, seed: int, first: int) -> str:
    """``student`` for the recipe's seed, ``student-s<seed>`` for the others (file and checkpoint names)."""
    return name if seed == first else f"{name}-s{seed}"


def run_distill(ctx) -> DistillArtifact:
    import dataclasses

    from edgekd.distill.trainer import CEObjective, DistillObjective
    from edgekd.stats import paired_gain
    from edgekd.tuning.space import effective_recipe

    ctx = dataclasses.replace(ctx, recipe=effective_recipe(ctx))  # the selected student, the tuned knobs
    r, seeds = ctx.recipe, seeds_of(ctx.recipe)
    source, views = teacher_source(ctx)  # once: every seed distils from the same teacher outputs
    augmentation = _augmentation_text(ctx, views)
    ctx.ui.stage("distill", f"{r.distill.method} (T={r.distill.temperature}, alpha={r.distill.alpha}), teacher "
                            f"outputs: {source.kind}; augmentation: {augmentation}; {len(seeds)} seed(s)"
                            f"{' + baseline' if r.distill.baseline else ''}")
    students, baselines = [], []
    for seed in seeds:
        student = _build(ctx, r.student, seed)
        loss = _make_loss(ctx, student, ctx.model("teacher"))
        students.append(_train(ctx, _seeded("student", seed, seeds[0]), "student", student,
                               DistillObjective(loss, source), seed, views))
        if r.distill.baseline:  # a fresh view each epoch, as one would train it without a teacher (with
            # cache_views ≥ epochs: the very images the student saw)
            baselines.append(_train(ctx, _seeded("baseline", seed, seeds[0]), "baseline",
                                    _build(ctx, r.student, seed), CEObjective(r.train.label_smoothing), seed,
                                    epoch_views(ctx, None)))
    shipped = max(range(len(seeds)), key=lambda k: (students[k].val_top1, -k))  # validation decides, never test
    ctx.models["student"] = ctx.models[students[shipped].name]
    if baselines:
        ctx.models["baseline"] = ctx.models[baselines[shipped].name]
    results = tuple(SeedResult(seed, st.test_top1, st.val_top1, b.test_top1 if b else None,
                               b.val_top1 if b else None)
                    for seed, st, b in zip(seeds, students, baselines or [None] * len(seeds), strict=True))
    gain = paired_gain([x.test_top1 for x in students], [b.test_top1 for b in baselines]) if baselines else None
    why = ("the only seed" if len(seeds) == 1 else
           f"highest validation top-1 ({students[shipped].val_top1:.2%}) of {len(seeds)} seeds")
    ctx.ui.done("distill", f"student test top-1 {students[shipped].test_top1:.2%} (seed {seeds[shipped]}, {why})"
                           + (f"; {gain.statement}" if gain else ""))
    return DistillArtifact(r.distill.method, r.distill.temperature, r.distill.alpha, source.kind,
                           ctx.artifact("teacher").model.test_top1, students[shipped],
                           baselines[shipped] if baselines else None, results, gain, seeds[shipped], why,
                           augmentation)


# ---------------------------------------------------------------------------------------------- loading
def load_trained(ctx, name: str):
    """Rebuild a trained model of an earlier run from the recipe and its weights in the run folder; ``name``
    is ``teacher``, ``student``/``baseline`` (the shipped seed's) or a trained model's own name."""
    import dataclasses

    from edgekd.checkpoint import load_weights
    from edgekd.deploy.errors import UsageError
    from edgekd.models import model_from_config

    dist = ctx.artifacts.get("distill")
    known = {"teacher": ctx.artifact("teacher").model}
    if dist is not None:
        known.update({"student": dist.student, "baseline": dist.baseline, dist.student.name: dist.student})
        if dist.baseline is not None:
            known[dist.baseline.name] = dist.baseline
    trained = known.get(name)
    if trained is None:
        raise UsageError(f"this run has no trained {name}", hint="set distill.baseline: true and re-run distill")
    if name == "teacher":
        spec = ctx.recipe.teacher
    else:
        from edgekd.tuning.space import effective_recipe

        spec = effective_recipe(ctx).student  # the student the select stage chose, if it ran
    model = model_from_config(dataclasses.replace(spec, checkpoint=None), ctx.splits.num_classes,
                              ctx.splits.input_shape, ctx.splits.model_kwargs)
    load_weights(model, ctx.run.path(trained.weights.path))
    return model.to(ctx.device).eval()
