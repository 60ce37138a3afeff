"""``edgekd verify``'s checks, device side (numpy + onnx + onnxruntime)."""

from __future__ import annotations

import os

import numpy as np

from deploy.errors import InputFileError, VerificationError
from deploy.runtime.bundle import Predictor, open_bundle


def verify_bundle(folder: str | os.PathLike, providers=None, allow_domains=frozenset()) -> list[str]:
    """Run every check; return one line per passed check, raise on the first failure."""
    import onnx

    meta, model = open_bundle(folder, allow_domains)
    lines = [f"checksums: every file matches SHA256SUMS ({meta.folder})"]
    shape = meta.input.get("shape")
    if not shape or len(shape) != 4:
        raise InputFileError(f"model.json input.shape is {shape!r}, expected [batch, C, H, W]")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise VerificationError(f"{meta.model_path} fails onnx.checker: {str(exc).splitlines()[0]}") from None
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default="?")
    lines.append(f"model: {meta.model_path.name} passes the intake check and onnx.checker (opset {opset})")
    predictor = Predictor(meta, providers)
    batch = np.zeros((2, *shape[1:]), dtype=np.float32)
    logits = predictor.logits(batch)
    n_labels = len(meta.labels)
    if logits.shape[0] != 2 or not np.isfinite(logits).all() or (n_labels and logits.shape[1] != n_labels):
        raise VerificationError(f"test inference returned shape {logits.shape} (finite: "
                                f"{bool(np.isfinite(logits).all())}), expected (2, {n_labels or '?'}) finite")
    lines.append(f"inference: batch of 2 → logits {tuple(logits.shape)}, finite, on "
                 f"{predictor.session_info.active[0]}")
    return lines
