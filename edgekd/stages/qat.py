"""The quantize stage's ``qat`` mode: quantization-aware distillation of the run's student (:mod:`edgekd.distill.qat`).

1. fold BatchNorm, insert symmetric INT8 fake quantization, calibrate activation scales on the same training
   images as static INT8 (``quantize.calib_samples``): the post-training start point, judged on *validation*;
2. ``quantize.qat_when: ptq-misses`` (default) stops here when that start point is within ``bundle.tolerance`` of
   the FP32 export (no candidate: post-training INT8 needs no help); ``always`` goes on;
3. fine-tune ``quantize.qat_epochs`` epochs at ``quantize.qat_lr`` (cosine) with the recipe's KD loss settings
   (``distill.temperature``/``alpha``, logit KD against the main teacher's cached logits), keeping the epoch with
   the best validation top-1 (the trainer's rule);
4. export explicit Q/DQ ONNX, gated on the Q/DQ rules and on top-1 agreement with the fake-quant model, and
   measure its validation top-1 in ONNX Runtime like every other candidate.

Training runs on ``train.device``; under torchrun the stage runs on rank 0 alone, so ``qat`` is refused there.
"""

from __future__ import annotations

import dataclasses
import json
import logging

from edgekd.deploy.quantize import QuantizationFailed

log = logging.getLogger(__name__)

#: validation samples the parity gate compares the ONNX file with the fake-quant model on
PARITY_SAMPLES = 1024


def run_qat(ctx, fp32, data) -> tuple:
    """``QUANTIZERS["qat"]``: ``(OnnxModel | None, attempt dict, report lines)``."""
    import torch

    from edgekd import distributed
    from edgekd.deploy.quantize import resolve_preset
    from edgekd.distill.qat import calibrate, prepare_qat
    from edgekd.distill.trainer import evaluate
    from edgekd.stages.quantize import _val_top1

    q, r = ctx.recipe.quantize, ctx.recipe
    if distributed.is_distributed():
        raise QuantizationFailed("qat cannot train under torchrun (the quantize stage runs on rank 0 only)", "setup",
                                 hint="run `edgekd run --stages quantize,benchmark,report --out RUN` without torchrun")
    calib, val = data
    if isinstance(calib, dict):
        if len(calib) != 1:
            raise QuantizationFailed(f"qat fine-tunes single-input (image) models; this one takes {list(calib)}",
                                     "setup", hint="drop qat from quantize.modes")
        calib = next(iter(calib.values()))
    preset = resolve_preset(q.preset)
    weight_qmax = 63 if preset.reduce_range else 127
    float_top1 = _val_top1(ctx.run.path(fp32.file.path), val)
    example = torch.from_numpy(calib[:2])
    model = prepare_qat(ctx.model("student"), example, weight_qmax).to(ctx.device)
    bs = r.data.eval_batch_size
    calibrate(model, [torch.from_numpy(calib[i:i + bs]) for i in range(0, len(calib), bs)], ctx.device)
    start = evaluate(model, ctx.splits.val, bs, ctx.device)
    scheme = {"weights": f"int8 symmetric per-channel, {'7' if weight_qmax == 63 else '8'}-bit range",
              "activations": "int8 symmetric per-tensor (zero point 0), learned scales (LSQ)", "bias": "float",
              "preset": preset.name, "calibration": f"max |x| on {len(calib)} training samples"}
    attempt = {"float_val_top1": float_top1, "start_val_top1": start, "scheme": scheme, "when": q.qat_when}
    lines = [f"post-training start point (symmetric INT8, {scheme['calibration']}): validation top-1 {start:.2%} "
             f"vs FP32 {float_top1:.2%}"]
    if q.qat_when == "ptq-misses" and float_top1 - start <= r.bundle.tolerance + 1e-12:
        lines.append(f"QAT not needed: within the tolerance ({r.bundle.tolerance:g}); no candidate "
                     "(quantize.qat_when: always trains anyway)")
        return None, {**attempt, "decision": "skipped"}, lines
    fit = _fine_tune(ctx, model)
    return _export(ctx, fp32, model, example, val, attempt, lines, fit)


def _fine_tune(ctx, model):
    """Logit KD from the main teacher's (cached) outputs, ``quantize.qat_epochs`` epochs, best validation epoch."""
    from edgekd.distill.losses import KDLoss
    from edgekd.distill.trainer import DistillObjective, Trainer
    from edgekd.stages.train import _loader_kwargs, teacher_source

    r, q = ctx.recipe, ctx.recipe.quantize
    # the distill stage's teacher outputs (cached, with one augmented view per epoch when the data is augmented)
    source, views = teacher_source(ctx, "kd", q.qat_epochs, main_only=True)
    cfg = dataclasses.replace(r.train, epochs=q.qat_epochs, lr=q.qat_lr, warmup_epochs=0.0, schedule="cosine",
                              early_stop_patience=None, amp="off", channels_last=False)
    loss = KDLoss(r.distill.temperature, r.distill.alpha, r.train.label_smoothing)
    ctx.ui.stage("quantize", f"qat: {q.qat_epochs} epoch(s) of KD (T={r.distill.temperature}, alpha="
                             f"{r.distill.alpha}) with fake INT8, lr {q.qat_lr:g}; teacher outputs: {source.kind}")
    s = ctx.splits
    trainer = Trainer(model, s.train, s.val, cfg, DistillObjective(loss, source), name="student-qat", seed=r.seed,
                      **_loader_kwargs(ctx), reporter=ctx.ui.reporter("student-qat"), augment=views)
    return trainer.fit()


def _export(ctx, fp32, model, example, val, attempt: dict, lines: list[str], fit) -> tuple:
    from edgekd import __version__
    from edgekd.deploy.export import export_metadata
    from edgekd.deploy.fileio import sha256_file
    from edgekd.distill.qat import export_qat
    from edgekd.stages.quantize import NAMES, _file, _model, _val_top1

    q, r = ctx.recipe.quantize, ctx.recipe
    student = ctx.artifact("distill").student
    meta = export_metadata(__version__, source_sha256=sha256_file(ctx.run.path(student.weights.path)),
                           preprocessing=ctx.splits.preprocessing, labels=ctx.splits.labels, role="student")
    meta["edgekd.quantization"] = json.dumps({"mode": "qat", **attempt["scheme"]}, sort_keys=True)
    out = _file(ctx, "qat")
    val_images = next(iter(val[0].values()))  # the one image input (checked in run_qat)
    done = export_qat(model, example, out, val_images[:PARITY_SAMPLES], opset=r.export.opset, metadata=meta,
                      min_agreement=q.qat_min_agreement)
    top1 = _val_top1(out, val)
    history = [{k: round(v, 5) if isinstance(v, float) else v for k, v in h.items()} for h in fit.history]
    attempt = {**attempt, "decision": "qat", "val_top1": top1, "best_epoch": fit.best_epoch, "epochs": fit.epochs_run,
               "history": history, "exporter": done.exporter, "qdq": done.qdq.to_dict(),
               "parity": done.parity.to_dict(), "kernels": done.kernels}
    lines += [f"fine-tuned {fit.epochs_run} epoch(s) with the teacher's soft targets; kept epoch {fit.best_epoch} "
              f"(fake-quant validation top-1 {fit.best_val_top1:.2%})",
              f"exported explicit Q/DQ ({done.exporter} exporter): " + "; ".join(done.lines),
              f"ONNX Runtime validation top-1 {top1:.2%} (FP32 {attempt['float_val_top1']:.2%}, post-training start "
              f"{attempt['start_val_top1']:.2%})"]
    details = {"val_top1": top1, "float_val_top1": attempt["float_val_top1"], "start_val_top1": attempt["start_val_top1"],
               "epochs": fit.epochs_run, "best_epoch": fit.best_epoch, "exporter": done.exporter,
               "scheme": attempt["scheme"], "tensorrt_ready": done.qdq.passed,
               "parity": {"top1_agreement": done.parity.top1_agreement, "max_abs_diff": done.parity.max_abs_diff,
                          "samples": done.parity.samples, "graph": "as ONNX defines it (no fusion)"},
               "kernel_agreement": done.kernels["top1_agreement"]}
    log.info("qat candidate %s: validation top-1 %.4f", out, top1)
    return _model(ctx, NAMES["qat"], "int8", "qat", out, fp32, details), attempt, lines
