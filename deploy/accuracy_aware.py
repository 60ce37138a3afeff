"""Accuracy-aware INT8: quantize, measure top-1 on the validation split, keep sensitive nodes in float.

Loop (each step recorded):

1. quantize every quantizable node (static INT8, QDQ) and measure top-1 on the *validation* split;
2. if ``float_top1 - int8_top1 <= tolerance`` the INT8 model is written to ``out_path``: done;
3. otherwise run the float and the quantized model on validation inputs with every intermediate tensor
   exposed (ONNX Runtime's ``qdq_loss_debug``), score each activation tensor by its quantization
   signal-to-noise ratio (SQNR, dB: low is bad), and exclude the node(s) around the worst tensor;
4. repeat until the tolerance is met or ``max_steps`` is spent: then the float model is kept (decision
   ``fp32``), and ``out_path`` is not written.

Example:
    >>> res = accuracy_aware_quantize("m.onnx", "m-int8.onnx", x_cal, x_val, y_val)  # doctest: +SKIP
    >>> print("\\n".join(res.lines))
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgekd.deploy.errors import UsageError
from edgekd.deploy.quantize import (
    Feed,
    QuantizationFailed,
    QuantizeResult,
    as_feed,
    calibration_reader,
    fixed_batch,
    head,
    preprocess_model,
    quantize_static,
)
from edgekd.deploy.runtime.intake import check_model

log = logging.getLogger(__name__)

#: Validation samples used to score tensors (enough for a stable SQNR, small enough to stay fast).
SENSITIVITY_SAMPLES = 256


@dataclass
class Step:
    """One attempt: which nodes were kept in float and what top-1 the INT8 model reached."""

    index: int
    excluded: list[str]
    newly_excluded: list[str]
    top1: float | None
    delta: float | None
    passed: bool
    reason: str = ""
    error: str | None = None


@dataclass
class AccuracyAwareResult:
    """The decision (``int8`` or ``fp32``), the model to ship, and every step taken."""

    path: str
    decision: str  # "int8" | "fp32"
    float_top1: float
    final_top1: float
    tolerance: float
    steps: list[Step] = field(default_factory=list)
    quantize: QuantizeResult | None = None
    lines: list[str] = field(default_factory=list)

    @property
    def excluded_nodes(self) -> list[str]:
        return self.steps[-1].excluded if self.steps else []

    def to_dict(self) -> dict:
        return asdict(self)


def top1(model_path: str | os.PathLike, x: Feed, y: np.ndarray, batch: int = 256) -> float:
    """Top-1 accuracy of an ONNX classifier on ``(x, y)`` (an array or a feed) with ONNX Runtime on CPU."""
    from edgekd.deploy.runtime.ort import OnnxrtRunner
    from edgekd.deploy.runtime.runner import top1 as runner_top1

    with OnnxrtRunner(model_path, "cpu") as runner:
        return runner_top1(runner, x if isinstance(x, dict) else {runner.inputs()[0].name: x}, y, chunk=batch)


def tensor_sensitivity(float_path: Path, int8_path: Path, x: Feed, workdir: Path) -> dict[str, float]:
    """SQNR (dB) of each quantized activation tensor, lowest first: how much noise quantization adds there.

    Uses ONNX Runtime's ``qdq_loss_debug``: both models get every intermediate tensor as an output and
    are run on ``x``; the quantized tensor before and after its QuantizeLinear/DequantizeLinear pair is
    compared (``qdq_err``), and for tensors without one, the float vs quantized model (``xmodel_err``).
    """
    from onnxruntime.quantization import qdq_loss_debug as dbg

    feed = as_feed(float_path, x)
    n = len(next(iter(feed.values())))
    acts = {}
    for tag, path in (("float", float_path), ("int8", int8_path)):
        aug = workdir / f"{tag}-aug.onnx"
        dbg.modify_model_output_intermediate_tensors(str(path), str(aug))
        acts[tag] = dbg.collect_activations(str(aug), calibration_reader(feed, None, fixed_batch(float_path) or n))
    errors = dbg.compute_activation_error(dbg.create_activation_matching(acts["int8"], acts["float"]))
    scores = {t: _finite(e.get("qdq_err", e.get("xmodel_err"))) for t, e in errors.items() if t not in feed}
    return dict(sorted(scores.items(), key=lambda kv: kv[1]))


def _finite(value) -> float:
    value = float(value) if value is not None else float("-inf")
    return value if np.isfinite(value) else -1e9  # NaN/-inf: noise swamps the signal entirely


def nodes_around(model_path: Path, tensor: str) -> list[str]:
    """Names of the node producing ``tensor`` and the nodes consuming it (graph order)."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    return [n.name for n in graph.node if tensor in n.output or tensor in n.input]


def pick_nodes(model_path: Path, scores: dict[str, float], excluded: list[str], per_step: int
               ) -> tuple[list[str], str]:
    """The ``per_step`` not-yet-excluded nodes around the lowest-SQNR tensors, and why."""
    chosen, why = [], []
    for tensor, sqnr in scores.items():
        new = [n for n in nodes_around(model_path, tensor) if n and n not in excluded and n not in chosen]
        if new:
            chosen += new[: per_step - len(chosen)]
            why.append(f"'{tensor}' SQNR {sqnr:.1f} dB")
        if len(chosen) >= per_step:
            break
    return chosen, ", ".join(why)


def accuracy_aware_quantize(fp32_path: str | os.PathLike, out_path: str | os.PathLike, calib: Feed,
                            val_x: Feed, val_y: np.ndarray, *, tolerance: float = 0.01,
                            method: str = "minmax", preset: str = "auto", max_steps: int = 6,
                            nodes_per_step: int = 1, **quant_kwargs) -> AccuracyAwareResult:
    """Static INT8 that must stay within ``tolerance`` top-1 of the float model on the validation split.

    Args:
        fp32_path: float ONNX model.
        out_path: where the accepted INT8 model is written (not written when the float model is kept).
        calib: calibration samples from the training split.
        val_x: validation inputs (never test); val_y: their labels.
        tolerance: largest accepted top-1 drop (0.01 = one point).
        max_steps: how many exclusion steps to try before keeping the float model.
        nodes_per_step: nodes moved back to float per step.

    Returns:
        :class:`AccuracyAwareResult`; ``lines`` is the human-readable report.
    """
    n_val = len(next(iter(val_x.values()))) if isinstance(val_x, dict) else len(val_x)
    if n_val != len(val_y) or n_val == 0:
        raise UsageError(f"validation data: {n_val} inputs but {len(val_y)} labels",
                         hint="pass the validation split's inputs and labels")
    check_model(fp32_path)  # before any session is created
    float_top1 = top1(fp32_path, val_x, val_y)
    with tempfile.TemporaryDirectory(prefix="edgekd-aaq-") as tmp:
        work = Path(tmp)
        src, _ = preprocess_model(Path(fp32_path), work, [])
        steps, result = _search(src, work, calib, val_x, val_y, float_top1, tolerance, max_steps,
                                nodes_per_step, dict(method=method, preset=preset, **quant_kwargs))
        if steps[-1].passed:
            result.path = str(copy_model(result.path, out_path))
    return _result(fp32_path, out_path, float_top1, tolerance, steps, result)


def _search(src: Path, work: Path, calib, val_x, val_y, float_top1: float, tolerance: float,
            max_steps: int, per_step: int, qargs: dict) -> tuple[list[Step], QuantizeResult | None]:
    excluded: list[str] = []
    steps: list[Step] = []
    new: list[str] = []
    reason = "all quantizable nodes in INT8"
    result = None
    for index in range(max_steps + 1):
        cand = work / f"step{index}.onnx"
        try:
            result = quantize_static(src, cand, calib, nodes_to_exclude=excluded, preprocess=False, **qargs)
        except QuantizationFailed as exc:
            steps.append(Step(index, list(excluded), new, None, None, False, reason, exc.message))
            return steps, None
        acc = top1(cand, val_x, val_y)
        passed = float_top1 - acc <= tolerance
        steps.append(Step(index, list(excluded), new, acc, acc - float_top1, passed, reason))
        log.info("accuracy-aware step %d: top-1 %.4f (float %.4f)", index, acc, float_top1)
        if passed or index == max_steps:
            break
        scores = tensor_sensitivity(src, cand, head(val_x, SENSITIVITY_SAMPLES), work)
        new, why = pick_nodes(src, scores, excluded, per_step)
        if not new:
            break
        excluded += new
        reason = f"lowest SQNR at {why}"
    return steps, result


def _result(fp32_path, out_path, float_top1: float, tolerance: float, steps: list[Step],
            result: QuantizeResult | None) -> AccuracyAwareResult:
    last = steps[-1]
    if last.passed:
        res = AccuracyAwareResult(str(out_path), "int8", float_top1, last.top1, tolerance, steps, result)
        decision = (f"decision: INT8 candidate kept, top-1 {last.top1:.4f} vs float {float_top1:.4f} "
                    f"with {len(last.excluded)} node(s) kept in float (whether it ships is the bundle rule's call)")
    else:
        res = AccuracyAwareResult(str(fp32_path), "fp32", float_top1, float_top1, tolerance, steps, None)
        decision = (f"decision: float model kept — INT8 missed the tolerance ({tolerance:g}) after "
                    f"{len(steps)} step(s)" + (f" ({last.error})" if last.error else ""))
    res.lines = [_line(s, float_top1, tolerance) for s in steps] + [decision]
    for line in res.lines:
        log.info(line)
    return res


def _line(step: Step, float_top1: float, tolerance: float) -> str:
    mark = "✓" if step.passed else "✗"
    head = f"{mark} step {step.index}: "
    head += f"+ float {step.newly_excluded} ({step.reason})" if step.newly_excluded else step.reason
    if step.error:
        return f"{head} → quantization failed: {step.error}"
    return (f"{head} → top-1 {step.top1:.4f} (float {float_top1:.4f}, Δ {step.delta:+.4f}, "
            f"tolerance {tolerance:g}); {len(step.excluded)} node(s) in float")


def copy_model(src: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """Atomically copy a model (e.g. the float one, for callers that want a file at ``out_path``)."""
    from edgekd.deploy.fileio import atomic_write_via

    return atomic_write_via(out_path, lambda tmp: shutil.copyfile(src, tmp))
