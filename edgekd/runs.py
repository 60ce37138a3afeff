"""Library functions on a finished (or partial) run folder — what ``edgekd export``, ``edgekd quantize
--calib-from`` and ``edgekd bundle`` call, usable from Python too.

Example:
    >>> outcome = export_from_run("runs/digits", "student", "exported/")  # doctest: +SKIP
    >>> calib, (val_x, val_y) = calibration_data("runs/digits", samples=256)  # doctest: +SKIP
    >>> bundle_from_run("runs/digits", "shipped/")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from edgekd.deploy.errors import InputFileError, UsageError
from edgekd.runfolder import RunFolder


def open_run(run_dir: str | os.PathLike, recipe=None):
    """``(RunFolder, recipe)`` of an edgekd run folder (its own ``recipe.yaml`` unless ``recipe`` is given)."""
    from edgekd.recipe import load_recipe

    run = RunFolder(run_dir)
    if not run.root.is_dir() or not run.exists():
        raise InputFileError(f"{run.root} is not an edgekd run folder: it has no recipe.yaml",
                             hint="pass a folder written by `edgekd run/distill --out DIR`")
    return run, recipe or load_recipe(run.recipe)


def _artifacts(run: RunFolder, recipe) -> dict:
    from edgekd.pipeline import load_fresh, pipeline

    return load_fresh(run, recipe, pipeline())[1]


def _weights(run: RunFolder, recipe, role: str) -> Path:
    arts = _artifacts(run, recipe)
    if role == "teacher" and "teacher" in arts:
        return run.path(arts["teacher"].model.weights.path)
    dist = arts.get("distill")
    trained = None if dist is None else dist.student if role == "student" else dist.baseline
    if trained is None:
        raise InputFileError(f"{run.root} has no trained {role} (its distill stage has not finished, or the "
                             "recipe changed since)", hint="finish the run: edgekd run --resume --out " + str(run.root))
    return run.path(trained.weights.path)


def export_checkpoint(weights: str | os.PathLike, recipe, role: str, out_dir: str | os.PathLike, *,
                      opset: int | None = None, atol: float | None = None, exporter: str | None = None,
                      simplify: bool = False):
    """Export the recipe's ``role`` model (``student``/``teacher``/``baseline``) with ``weights`` to
    ``out_dir/<role>.onnx``, verified against PyTorch on the recipe's test split."""
    from edgekd.checkpoint import load_weights
    from edgekd.data import load_data
    from edgekd.deploy.fileio import refuse_foreign
    from edgekd.models import model_from_config
    from edgekd.stages.export import export_model

    target = Path(out_dir) / f"{role}.onnx"
    refuse_foreign(target)
    spec = recipe.teacher if role == "teacher" else recipe.student
    splits = load_data(recipe.data, recipe.seed)
    model = model_from_config(dataclasses.replace(spec, checkpoint=None), splits.num_classes, splits.input_shape,
                              splits.model_kwargs)
    load_weights(model, weights)
    cfg = dataclasses.replace(recipe.export, **{k: v for k, v in (("opset", opset), ("atol", atol),
                                                                  ("exporter", exporter)) if v is not None})
    return export_model(model, splits, Path(weights), target, role=role, cfg=cfg, simplify=simplify or None)


def export_from_run(run_dir: str | os.PathLike, role: str, out_dir: str | os.PathLike, **kwargs):
    """:func:`export_checkpoint` for a run folder's trained ``role`` model."""
    run, recipe = open_run(run_dir)
    return export_checkpoint(_weights(run, recipe, role), recipe, role, out_dir, **kwargs)


def calibration_data(run_dir: str | os.PathLike, samples: int | None = None):
    """``(calibration feed, (val feed, val labels))``: training-split samples (never test) and the validation
    split, as ``{input name: array}`` feeds."""
    from edgekd.data import load_data

    _, recipe = open_run(run_dir)
    splits = load_data(recipe.data, recipe.seed)
    calib, _ = splits.arrays("train_eval", samples or recipe.quantize.calib_samples)
    return calib, splits.arrays("val")


def bundle_from_run(run_dir: str | os.PathLike, out: str | os.PathLike, artifact: str | None = None,
                    engine: str | os.PathLike | None = None) -> tuple[Path, str]:
    """Bundle a run's artifact (default: the one its report chose) into ``out``; returns ``(out, name)``."""
    from edgekd.deploy.bundle import write_bundle
    from edgekd.deploy.runtime.trt import sidecar_path
    from edgekd.stages.report import bundle_manifest, bundle_model, data_files

    run, recipe = open_run(run_dir)
    arts = _artifacts(run, recipe)
    if "benchmark" not in arts or "report" not in arts:
        raise InputFileError(f"{run.root} is not a finished run (no current benchmark/report stage)",
                             hint=f"finish it: edgekd run --stages benchmark,report --out {run.root}")
    rows = {r.name: r for r in arts["benchmark"].rows if r.format == "onnx"}
    name = artifact or arts["report"].bundle.chosen
    if name not in rows:
        raise UsageError(f"artifact {name!r} is not an ONNX artifact of {run.root}", hint=f"choose from {sorted(rows)}")
    models = {m.name: m for stage in ("export", "quantize") for m in arts[stage].models}
    extra = data_files(run, arts["data"])
    if engine:
        engine = Path(engine)
        if not engine.is_file() or not sidecar_path(engine).is_file():
            raise InputFileError(f"engine {engine} or its sidecar {sidecar_path(engine).name} is missing",
                                 hint="build it with `edgekd engine`, which writes both")
        extra |= {"model.engine": engine, "model.engine.json": sidecar_path(engine)}
        if recipe.export.raw_pixels.enabled:
            raise UsageError("this run bundles a raw-pixel model (export.raw_pixels), but the engine was built from "
                             "the plain one: they would take different inputs",
                             hint="bundle without --engine, or run with export.raw_pixels.enabled: false")
    with bundle_model(recipe.export.raw_pixels, arts["data"], run.path(models[name].file.path),
                      rows[name].precision) as (path, data):
        manifest = bundle_manifest(data, rows[name], path, arts["benchmark"].device, recipe.name)
        if engine:
            manifest = dataclasses.replace(manifest, files={"engine": "model.engine",
                                                            "engine_sidecar": "model.engine.json"})
        return write_bundle(out, path, manifest, extra, protect=run.root), name
