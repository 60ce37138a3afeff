"""Numerical gates: an ONNX (or quantized) model is compared with its reference before it may ship.

One ✓/✗ line per output with the difference and the tolerance; failures raise typed errors that name the
first output that diverges and by how much.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field

import numpy as np

from deploy.errors import ShapeMismatch, ToleranceExceeded, VerificationError

log = logging.getLogger(__name__)

#: Absolute tolerance per precision. INT8 is judged by top-1 agreement and accuracy instead.
TOLERANCES = {"fp32": 1e-4, "fp16": 1e-3, "int8": None}


@dataclass
class ParityReport:
    """What a parity check measured; ``lines`` are the human-readable ✓/✗ lines."""

    precision: str
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float
    samples: int
    batch_sizes: list[int]
    tolerance: float | None
    passed: bool
    lines: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def compare(reference: np.ndarray, actual: np.ndarray, name: str = "logits") -> tuple[float, float, float]:
    """Return (max abs diff, mean abs diff, top-1 agreement); shapes must match, values be finite."""
    if reference.shape != actual.shape:
        raise ShapeMismatch(f"output '{name}' has shape {actual.shape}, the reference {reference.shape}")
    if not np.isfinite(actual).all():
        raise VerificationError(f"output '{name}' contains NaN/Inf",
                                hint="the model overflows at this precision; keep it in FP32")
    diff = np.abs(reference.astype(np.float64) - actual.astype(np.float64))
    agree = float((reference.argmax(axis=1) == actual.argmax(axis=1)).mean()) if reference.ndim == 2 else 1.0
    return float(diff.max()), float(diff.mean()), agree


def check_parity(reference_fn, onnx_path: str | os.PathLike, inputs: np.ndarray, *, precision: str = "fp32",
                 batch_sizes=(1, 7), atol: float | None = None, min_agreement: float | None = None,
                 input_name: str | None = None, providers=None) -> ParityReport:
    """Run ``onnx_path`` and ``reference_fn`` (numpy in → numpy out) on ``inputs`` and compare.

    The ONNX model runs on the whole input set and, separately, at each of ``batch_sizes`` to prove the
    dynamic batch axis really is dynamic. Raises :class:`ToleranceExceeded` when a gate fails.
    """
    from deploy.runtime.ort import create_session

    atol = TOLERANCES.get(precision) if atol is None else atol
    session, _ = create_session(onnx_path, providers)
    name = input_name or session.get_inputs()[0].name
    out_name = session.get_outputs()[0].name
    reference = np.asarray(reference_fn(inputs))
    actual = session.run(None, {name: inputs})[0]
    max_diff, mean_diff, agree = compare(reference, actual, out_name)
    lines = []
    for bs in batch_sizes:
        chunk = inputs[:bs]
        if len(chunk) < bs:
            chunk = np.concatenate([chunk] * (bs // max(len(chunk), 1) + 1))[:bs]
        got = session.run(None, {name: chunk})[0]
        if got.shape[0] != bs:
            raise ShapeMismatch(f"batch {bs}: output '{out_name}' has batch {got.shape[0]}",
                                hint="the batch axis is not dynamic; re-export with a dynamic batch")
        b_max, _, _ = compare(np.asarray(reference_fn(chunk)), got, out_name)
        max_diff = max(max_diff, b_max)
    passed = True
    if atol is not None:
        ok = max_diff <= atol
        lines.append(f"{'✓' if ok else '✗'} {out_name} [{precision}]: max abs diff {max_diff:.3g} "
                     f"(tolerance {atol:g}), mean {mean_diff:.3g}, top-1 agreement {agree:.2%}, "
                     f"batches {list(batch_sizes)} + {len(inputs)}")
        passed &= ok
    if min_agreement is not None:
        ok = agree >= min_agreement
        lines.append(f"{'✓' if ok else '✗'} {out_name} [{precision}]: top-1 agreement {agree:.2%} "
                     f"(minimum {min_agreement:.2%})")
        passed &= ok
    report = ParityReport(precision, max_diff, mean_diff, agree, len(inputs), list(batch_sizes), atol, passed,
                          lines)
    for line in lines:
        log.info(line)
    if not passed:
        raise ToleranceExceeded(f"{onnx_path}: output '{out_name}' diverges from the reference: "
                                + "; ".join(l[2:] for l in lines if l.startswith("✗")),
                                hint="check for training-only layers, unsupported ops or a lower precision")
    return report
