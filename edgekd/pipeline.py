"""The pipeline: teacher → distill → export → quantize → benchmark → report (+ bundle).

``run_pipeline`` walks a list of stage functions; each takes the :class:`Context`, does one job, records
what it made in ``ctx.results`` and returns. Only rank 0 writes files under torchrun.

Example:
    >>> from edgekd.recipe import load_recipe
    >>> results = run_pipeline(load_recipe("digits"), "runs/digits")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from edgekd import __version__, distributed
from edgekd.deploy.errors import UsageError
from edgekd.deploy.fileio import write_json, write_text
from edgekd.shipping import SCHEMA_VERSION, stage_benchmark, stage_report

log = logging.getLogger(__name__)
COMPLETE_MARK = "RUN_COMPLETE"


class UI:
    """Callbacks the pipeline reports through; the CLI passes a rich implementation."""

    def stage(self, name: str, text: str) -> None:
        log.info("[%s] %s", name, text)

    def done(self, name: str, text: str) -> None:
        log.info("[%s] %s", name, text)

    def reporter(self, name: str):
        from edgekd.distill.trainer import Reporter

        return Reporter()


@dataclass
class Context:
    recipe: object
    out: Path
    resume: bool = False
    ui: UI = field(default_factory=UI)
    splits: object = None
    device: object = None
    models: dict = field(default_factory=dict)
    onnx: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)

    def path(self, *parts: str) -> Path:
        return self.out.joinpath(*parts)


def cache_dir() -> Path:
    return Path(os.environ.get("EDGEKD_CACHE_DIR") or Path.home() / ".cache" / "edgekd")


# ------------------------------------------------------------------------------------------------ stages
def stage_data(ctx: Context) -> None:
    from edgekd.data import load_data
    from edgekd.distill.trainer import resolve_device

    r = ctx.recipe
    ctx.device = resolve_device(r.train.device)
    ctx.splits = s = load_data(r.data, r.seed)
    ctx.ui.done("data", f"{r.data.source}: {len(s.train)} train / {len(s.val)} val / {len(s.test)} test, "
                        f"input {s.input_shape}, {s.num_classes} classes, device {ctx.device}")


def _build(ctx: Context, spec) -> object:
    """Create a model section's model (and load its ``checkpoint``), seeded so that its initial weights
    do not depend on what ran before (a cache hit or a trained teacher)."""
    from edgekd.distill.trainer import seed_everything
    from edgekd.models import model_from_config

    seed_everything(ctx.recipe.seed)
    return model_from_config(spec, ctx.splits.num_classes, ctx.splits.input_shape)


def _make_loss(ctx: Context, student, teacher):
    from edgekd.distill.losses import create_loss

    r = ctx.recipe
    return create_loss(r.distill.method, r.distill, label_smoothing=r.train.label_smoothing, student=student,
                       teacher=teacher, input_shape=ctx.splits.input_shape, weights=r.teacher.weights_mix)


def _preflight(ctx: Context) -> None:
    """Build every model, load checkpoints and build the loss before anything is written: a wrong model
    name, checkpoint, input shape or feature-layer name fails here, not after hours of training and not
    with half a folder."""
    from edgekd.models import check_models_fit

    r = ctx.recipe
    teacher = _build(ctx, r.teacher)
    extra = [_build(ctx, spec) for spec in r.teacher.extra]
    student = _build(ctx, r.student)
    check_models_fit({"teacher": teacher, "student": student,
                      **{f"teacher.extra[{i}]": m for i, m in enumerate(extra)}}, ctx.splits)
    _make_loss(ctx, student, teacher)
    ctx.models["teacher_init"] = teacher
    ctx.models["extra_teachers"] = [m.to(ctx.device).eval() for m in extra]


def _teacher_key(ctx: Context) -> str:
    r = ctx.recipe
    return f"{r.name}-{r.digest('teacher')}-{ctx.splits.identity}-s{r.seed}"


def stage_teacher(ctx: Context) -> None:
    from edgekd.checkpoint import load_weights, save_weights
    from edgekd.distill.trainer import CEObjective, Trainer, evaluate

    r = ctx.recipe
    teacher = ctx.models.pop("teacher_init", None)
    if teacher is None:  # (an nn.Module's truth value is its length for containers: compare with None)
        teacher = _build(ctx, r.teacher)
    cached = cache_dir() / "teachers" / f"{_teacher_key(ctx)}.safetensors"
    if r.teacher.checkpoint:
        source = f"checkpoint {r.teacher.checkpoint}"
    elif cached.is_file():
        load_weights(teacher, cached)
        source = f"cache {cached}"
    else:
        ctx.ui.stage("teacher", f"training {r.teacher.model} (no checkpoint in the recipe; cached afterwards)")
        trainer = Trainer(teacher, ctx.splits.train, ctx.splits.val, r.teacher.train,
                          CEObjective(r.teacher.train.label_smoothing), name="teacher", seed=r.seed,
                          **_loader_kwargs(ctx), checkpoint_dir=ctx.path("checkpoints", "teacher"),
                          fingerprint=_fingerprint(ctx, "teacher"), reporter=ctx.ui.reporter("teacher"))
        trainer.fit(resume=ctx.resume and ctx.path("checkpoints", "teacher", "last.pt").is_file())
        teacher = trainer.model
        if distributed.is_main():
            save_weights(_unwrap(teacher), cached)
        source = "trained now"
    teacher = _unwrap(teacher).to(ctx.device).eval()
    ctx.models["teacher"] = teacher
    ctx.results["teacher_source"] = source
    ctx.results["teacher_test_top1"] = evaluate(teacher, ctx.splits.test, r.data.eval_batch_size, ctx.device)
    if distributed.is_main():
        save_weights(teacher, ctx.path("weights", "teacher.safetensors"))
    ctx.ui.done("teacher", f"{source}; test top-1 {ctx.results['teacher_test_top1']:.2%}")


def _unwrap(model):
    return getattr(model, "module", model)


def _loader_kwargs(ctx: Context) -> dict:
    d = ctx.recipe.data
    return {"batch_size": d.batch_size, "eval_batch_size": d.eval_batch_size, "workers": d.workers,
            "device": ctx.device, "pin_memory": d.pin_memory}


def _fingerprint(ctx: Context, name: str) -> dict:
    r = ctx.recipe
    fp = {"data": ctx.splits.identity, "seed": r.seed, "train": r.digest("train" if name != "teacher"
                                                                      else "teacher")}
    if name != "teacher":
        fp["student"] = r.digest("student")
        fp["teacher"] = _teacher_key(ctx)
    if name == "student":
        fp["distill"] = r.digest("distill")
    return fp


def _teacher_source(ctx: Context):
    from edgekd.distill.cache import make_teacher_source
    from edgekd.distill.losses import LOSSES

    r, s = ctx.recipe, ctx.splits
    return make_teacher_source(
        [ctx.models["teacher"]] + ctx.models.get("extra_teachers", []), s.train_eval, cache=r.distill.cache,
        augmented=s.augmented, needs_features=getattr(LOSSES[r.distill.method], "uses_features", False),
        batch_size=r.data.eval_batch_size, device=ctx.device, workers=r.data.workers,
        disk_path=ctx.path("cache", "teacher_logits.npy"), num_classes=s.num_classes)


def _train_student(ctx: Context, name: str, model, objective) -> object:
    from edgekd.checkpoint import save_weights
    from edgekd.distill.trainer import Trainer, evaluate

    r = ctx.recipe
    trainer = Trainer(model, ctx.splits.train, ctx.splits.val, r.train, objective, name=name, seed=r.seed,
                      **_loader_kwargs(ctx), checkpoint_dir=ctx.path("checkpoints", name),
                      fingerprint=_fingerprint(ctx, name), reporter=ctx.ui.reporter(name))
    fit = trainer.fit(resume=ctx.resume and ctx.path("checkpoints", name, "last.pt").is_file())
    model = _unwrap(trainer.model).eval()
    ctx.models[name] = model
    top1 = evaluate(model, ctx.splits.test, r.data.eval_batch_size, ctx.device)
    ctx.results[f"{name}_fit"] = {"best_val_top1": fit.best_val_top1, "best_epoch": fit.best_epoch,
                                  "epochs_run": fit.epochs_run, "stopped_early": fit.stopped_early,
                                  "resumed_from_epoch": fit.resumed_from_epoch}
    if distributed.is_main():
        save_weights(model, ctx.path("weights", f"{name}.safetensors"))
    return top1


def stage_distill(ctx: Context) -> None:
    from edgekd.distill.trainer import CEObjective, DistillObjective

    r = ctx.recipe
    source = _teacher_source(ctx)
    ctx.ui.stage("distill", f"{r.distill.method} (T={r.distill.temperature}, alpha={r.distill.alpha}), "
                            f"teacher outputs: {source.kind}")
    student = _build(ctx, r.student)
    loss = _make_loss(ctx, student, ctx.models["teacher"])
    student_top1 = _train_student(ctx, "student", student, DistillObjective(loss, source))
    baseline_top1 = None
    if r.distill.baseline:
        ctx.ui.stage("distill", "baseline: the same student from scratch, same budget and seed")
        baseline_top1 = _train_student(ctx, "baseline", _build(ctx, r.student),
                                       CEObjective(r.train.label_smoothing))
    ctx.results["distillation"] = {
        "method": r.distill.method, "temperature": r.distill.temperature, "alpha": r.distill.alpha,
        "teacher_outputs": source.kind, "teacher_top1": ctx.results["teacher_test_top1"],
        "student_top1": student_top1, "baseline_top1": baseline_top1,
        "gain": None if baseline_top1 is None else student_top1 - baseline_top1}
    gain = "" if baseline_top1 is None else f", baseline {baseline_top1:.2%} (gain {student_top1 - baseline_top1:+.2%})"
    ctx.ui.done("distill", f"student test top-1 {student_top1:.2%}{gain}")


def stage_export(ctx: Context) -> None:
    import torch

    from edgekd.data import to_numpy
    from edgekd.deploy.export import export_metadata, export_verified
    from edgekd.deploy.fileio import sha256_file

    r, s = ctx.recipe, ctx.splits
    x_test, _ = to_numpy(s.test, limit=256)
    ctx.results["export"] = {"opset": r.export.opset, "exporter": r.export.exporter}
    for name in ("student", "teacher"):
        model = ctx.models[name].cpu().eval()
        meta = export_metadata(__version__, source_sha256=sha256_file(ctx.path("weights", f"{name}.safetensors")),
                               normalization=s.normalization, labels=s.labels, role=name)
        path, parity = export_verified(model, torch.from_numpy(x_test[:1]), ctx.path("onnx", f"{name}.onnx"),
                                       x_test, atol=r.export.atol, opset=r.export.opset, metadata=meta,
                                       exporter=r.export.exporter, simplify=r.export.simplify)
        ctx.onnx[name] = path
        ctx.results["export"][name] = parity.to_dict()
        ctx.models[name].to(ctx.device)
        ctx.ui.done("export", f"{path.name}: " + "; ".join(parity.lines))
    ctx.results["export"].update(max_abs_diff=ctx.results["export"]["student"]["max_abs_diff"],
                                 top1_agreement=ctx.results["export"]["student"]["top1_agreement"])


def stage_quantize(ctx: Context) -> None:
    """Accuracy-aware static INT8: calibrated on training images, judged on validation (never test)."""
    from edgekd.data import to_numpy
    from edgekd.deploy.accuracy_aware import accuracy_aware_quantize

    r, q = ctx.recipe, ctx.recipe.quantize
    if not q.enabled:
        ctx.ui.done("quantize", "skipped (quantize.enabled is false)")
        return
    calib, _ = to_numpy(ctx.splits.train_eval, limit=q.calib_samples)
    val_x, val_y = to_numpy(ctx.splits.val)
    result = accuracy_aware_quantize(ctx.onnx["student"], ctx.path("onnx", "student-int8.onnx"), calib, val_x,
                                     val_y, tolerance=r.bundle.tolerance, method=q.calibration, preset=q.preset)
    ctx.results["quantize"] = result.to_dict()
    for line in result.lines:
        ctx.ui.stage("quantize", line)
    if result.decision == "int8":
        ctx.onnx["student-int8"] = Path(result.path)
        preset = result.quantize.preset if result.quantize else q.preset
        ctx.ui.done("quantize", f"static INT8 (QDQ, per-channel, {q.calibration}, preset {preset}) from "
                                f"{len(calib)} training images; validation top-1 {result.final_top1:.2%} "
                                f"vs FP32 {result.float_top1:.2%}")
    else:
        ctx.ui.done("quantize", f"INT8 missed the {r.bundle.tolerance:.2%} tolerance on validation even with "
                                "sensitive nodes kept in float: no INT8 artifact, FP32 ships")


STAGES = [("data", stage_data), ("teacher", stage_teacher), ("distill", stage_distill),
          ("export", stage_export), ("quantize", stage_quantize), ("benchmark", stage_benchmark),
          ("report", stage_report)]
DISTILL_STAGES = ("data", "teacher", "distill")


def run_pipeline(recipe, out: str | os.PathLike, *, stages=None, resume: bool = False, ui: UI | None = None) -> dict:
    """Run ``stages`` (default: all) of the pipeline for ``recipe`` into folder ``out``."""
    names = [n for n, _ in STAGES]
    wanted = list(stages or names)
    unknown = [s for s in wanted if s not in names]
    if unknown:
        raise UsageError(f"unknown stage(s) {unknown}", hint=f"stages are {names}")
    ctx = Context(recipe, Path(out), resume=resume, ui=ui or UI())
    if ctx.out.exists() and not ctx.out.is_dir():
        raise UsageError(f"--out {ctx.out} is a file, expected a folder", hint="choose another --out path")
    if resume:
        _check_resumable(ctx)
    distributed.init()
    stage_data(ctx)
    _preflight(ctx)
    _prepare_out(ctx)
    for name, fn in STAGES:
        if name not in wanted or name == "data":
            continue
        if not distributed.is_main() and name not in DISTILL_STAGES:
            continue
        t0 = time.perf_counter()
        fn(ctx)
        ctx.timings[name] = round(time.perf_counter() - t0, 3)
    if distributed.is_main() and "report" not in wanted and "distillation" in ctx.results:
        write_json(ctx.path("results.json"), _partial_results(ctx))
    if distributed.is_main():
        write_text(ctx.path(COMPLETE_MARK), f"edgekd {__version__} completed stages {wanted}\n")
    distributed.barrier()
    return ctx.results


def _partial_results(ctx: Context) -> dict:
    """results.json of a run without the benchmark/report stages (e.g. ``edgekd distill``)."""
    import torch

    from edgekd.benchmarks.fingerprint import fingerprint

    device = {**fingerprint(), "torch": torch.__version__, "world_size": distributed.world_size()}
    return {"schema_version": SCHEMA_VERSION, "edgekd_version": __version__, "recipe": ctx.recipe.to_dict(),
            "device": device, "artifacts": [], "distillation": ctx.results["distillation"], "export": None,
            "training": {k: v for k, v in ctx.results.items() if k.endswith("_fit")},
            "teacher_source": ctx.results.get("teacher_source"), "timings_s": ctx.timings}


TRAINING_SECTIONS = ("seed", "data", "teacher", "student", "distill", "train")


def _prepare_out(ctx: Context) -> None:
    if not distributed.is_main():
        return
    ctx.out.mkdir(parents=True, exist_ok=True)
    mark = ctx.path(COMPLETE_MARK)
    if mark.exists():
        mark.unlink()
    write_text(ctx.path("recipe.yaml"), yaml.safe_dump(ctx.recipe.to_dict(), sort_keys=False))
    s = ctx.splits
    write_json(ctx.path("data.json"), {"input_shape": list(s.input_shape), "num_classes": s.num_classes,
                                       "labels": s.labels, "normalization": s.normalization,
                                       "identity": s.identity, "source": ctx.recipe.data.source})


def _check_resumable(ctx: Context) -> None:
    """``--resume`` needs a run folder with checkpoints made by the same recipe (training sections)."""
    from edgekd.deploy.errors import ResumeError

    saved_path = ctx.path("recipe.yaml")
    if not saved_path.is_file() or not any(ctx.path("checkpoints").glob("*/last.pt")):
        raise ResumeError(f"--resume: {ctx.out} holds no interrupted run (no recipe.yaml or checkpoints)",
                          hint="run without --resume to start, or point --out at the interrupted run")
    try:
        saved = yaml.safe_load(saved_path.read_text()) or {}
    except yaml.YAMLError:
        raise ResumeError(f"--resume: {saved_path} is corrupt", hint="start a new run") from None
    now = ctx.recipe.to_dict()
    diffs = [f"{k}: {a!r} → {b!r}" for k, a, b in _flat_diff({s: saved.get(s) for s in TRAINING_SECTIONS},
                                                            {s: now.get(s) for s in TRAINING_SECTIONS})]
    if diffs:
        raise ResumeError(f"--resume refused: the recipe changed since the run started: {'; '.join(diffs[:5])}",
                          hint="resume with the same recipe and --set values, or use a new --out folder")


def _flat_diff(a, b, prefix: str = ""):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            yield from _flat_diff(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else str(k))
    elif a != b:
        yield prefix, a, b
