"""The quantize stage: every precision the recipe lists (``quantize.modes``) becomes a candidate artifact.

* ``static`` — accuracy-aware static INT8 (QDQ, per-channel): calibrated on training images, judged on the
  *validation* split, sensitive nodes kept in float until it is within ``bundle.tolerance`` (or no INT8);
* ``dynamic`` — dynamic INT8 (weights offline, activations at run time);
* ``fp16`` — FP16 weights and compute, FP32 inputs/outputs;
* ``qat`` — quantization-aware distillation (:mod:`edgekd.stages.qat`): when post-training INT8 misses the
  tolerance, the student is fine-tuned with fake INT8 and the teacher's soft targets, then exported as explicit
  symmetric Q/DQ (ONNX Runtime and TensorRT).

Each candidate's validation top-1 is measured here; the report stage ships the fastest within tolerance. A
mode that fails is recorded (with its reason) and the others go on.
"""

from __future__ import annotations

import logging

from edgekd.artifacts import ModelFile, OnnxModel, QuantizeArtifact
from edgekd.deploy.errors import VerificationError
from edgekd.deploy.fileio import sha256_file
from edgekd.deploy.quantize import head, samples
from edgekd.deploy.registry import Registry

log = logging.getLogger(__name__)

#: quantize.modes → ``fn(ctx, fp32: OnnxModel, data) -> (OnnxModel | None, attempt dict, lines)``
QUANTIZERS: Registry = Registry("quantize.modes")
#: modes for image models only (a text model gets static INT8 where its ops allow, dynamic INT8 and FP16)
IMAGE_ONLY = ("qat",)
NAMES = {"static": "student-onnx-int8", "dynamic": "student-onnx-int8-dynamic", "fp16": "student-onnx-fp16",
         "qat": "student-onnx-int8-qat"}


def _file(ctx, mode: str):
    """``onnx/student-int8.onnx`` for artifact ``student-onnx-int8``."""
    return ctx.run.onnx(NAMES[mode].replace("-onnx", ""))


def _val_top1(path, val) -> float:
    from edgekd.deploy.runtime.ort import OnnxrtRunner
    from edgekd.deploy.runtime.runner import top1

    with OnnxrtRunner(path, "cpu") as runner:
        return top1(runner, *val)


def _model(ctx, name: str, precision: str, variant: str, path, fp32: OnnxModel, details: dict) -> OnnxModel:
    return OnnxModel(name, "student", "student", precision, variant,
                     ModelFile(ctx.run.rel(path), sha256_file(path)), fp32.params, details)


@QUANTIZERS.register("static")
def _static(ctx, fp32: OnnxModel, data) -> tuple:
    from edgekd.deploy.accuracy_aware import accuracy_aware_quantize

    q, (calib, val) = ctx.recipe.quantize, data
    out = _file(ctx, "static")
    res = accuracy_aware_quantize(ctx.run.path(fp32.file.path), out, calib, *val, tolerance=ctx.recipe.bundle.tolerance,
                                  method=q.calibration, preset=q.preset)
    attempt = res.to_dict()
    if res.decision != "int8":
        return None, attempt, res.lines
    details = {"val_top1": res.final_top1, "float_val_top1": res.float_top1, "excluded_nodes": res.excluded_nodes,
               "preset": res.quantize.preset, "calibration": q.calibration, "calib_samples": samples(calib)}
    return _model(ctx, NAMES["static"], "int8", "static", out, fp32, details), attempt, res.lines


@QUANTIZERS.register("dynamic")
def _dynamic(ctx, fp32: OnnxModel, data) -> tuple:
    from edgekd.deploy.quantize import quantize_dynamic

    out = _file(ctx, "dynamic")
    res = quantize_dynamic(ctx.run.path(fp32.file.path), out, preset=ctx.recipe.quantize.preset, sample=head(data[0]))
    top1 = _val_top1(out, data[1])
    line = f"dynamic INT8 (preset {res.preset}): validation top-1 {top1:.2%}"
    return _model(ctx, NAMES["dynamic"], "int8", "dynamic", out, fp32, {"val_top1": top1, "preset": res.preset}), \
        res.to_dict(), [line]


@QUANTIZERS.register("fp16")
def _fp16(ctx, fp32: OnnxModel, data) -> tuple:
    from edgekd.deploy.quantize import convert_fp16

    out = _file(ctx, "fp16")
    res = convert_fp16(ctx.run.path(fp32.file.path), out, sample=head(data[0]))
    top1 = _val_top1(out, data[1])
    return _model(ctx, NAMES["fp16"], "fp16", "fp16", out, fp32, {"val_top1": top1}), res.to_dict(), \
        [f"FP16 (FP32 inputs/outputs): validation top-1 {top1:.2%}"]


QUANTIZERS.register_lazy("qat", "edgekd.stages.qat:run_qat")  # QAT-KD: fine-tunes the student (needs torch)


def run_quantize(ctx) -> QuantizeArtifact:
    q = ctx.recipe.quantize
    if not q.enabled or not q.modes:
        ctx.ui.done("quantize", "skipped (quantize.enabled is false or quantize.modes is empty)")
        return QuantizeArtifact((), {}, ("skipped",))
    fp32 = next(m for m in ctx.artifact("export").models if m.name == "student-onnx-fp32")
    calib, _ = ctx.splits.arrays("train_eval", q.calib_samples)
    data = (calib, ctx.splits.arrays("val"))
    models, attempts, lines = [], {}, []
    for mode in q.modes:
        if mode in IMAGE_ONLY and ctx.splits.task != "image-classification":
            attempts[mode] = {"skipped": f"{mode} fine-tunes single-input image models"}
            lines.append(f"[{mode}] skipped: it fine-tunes single-input image models ({ctx.splits.task})")
            continue
        ctx.ui.stage("quantize", f"{mode}")
        try:
            model, attempt, mode_lines = QUANTIZERS.get(mode)(ctx, fp32, data)
        except VerificationError as exc:  # a failed mode is a recorded attempt; the others go on
            log.warning("quantize %s failed: %s", mode, exc.message)
            model, attempt, mode_lines = None, {"error": exc.message}, [f"{mode}: failed — {exc.message}"]
        attempts[mode] = attempt
        lines += [f"[{mode}] {line}" for line in mode_lines]
        if model is not None:
            models.append(model)
    for line in lines:
        ctx.ui.stage("quantize", line)
    ctx.ui.done("quantize", f"{len(models)} candidate(s): {', '.join(m.name for m in models) or 'none'}; the report "
                            "stage ships the fastest within tolerance")
    return QuantizeArtifact(tuple(models), attempts, tuple(lines))
