"""``edgekd verify``'s checks, device side (numpy + onnx + onnxruntime)."""

from __future__ import annotations

import os

import numpy as np

from deploy.errors import InputFileError, VerificationError
from deploy.intake import load_onnx_checked
from deploy.runtime.bundle import load_bundle, read_meta, verify_checksums


def verify_bundle(folder: str | os.PathLike, providers=None, allow_domains=frozenset()) -> list[str]:
    """Run every check; return one line per passed check, raise on the first failure."""
    import onnx

    lines = [f"checksums: {len(verify_checksums(folder))} file(s) match SHA256SUMS"]
    meta = read_meta(folder)
    shape = meta.input.get("shape")
    if not shape or len(shape) != 4:
        raise InputFileError(f"model.json input.shape is {shape!r}, expected [batch, C, H, W]")
    model = load_onnx_checked(meta.model_path, allow_domains)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise VerificationError(f"{meta.model_path} fails onnx.checker: {str(exc).splitlines()[0]}") from None
    lines.append(f"model: {meta.model_path.name} passes the intake check and onnx.checker "
                 f"(opset {max(o.version for o in model.opset_import if o.domain in ('', 'ai.onnx'))})")
    predictor = load_bundle(folder, providers, allow_domains=frozenset(allow_domains))
    batch = np.zeros((2, *shape[1:]), dtype=np.float32)
    logits = predictor.logits(batch)
    n_labels = len(meta.labels)
    if logits.shape[0] != 2 or not np.isfinite(logits).all() or (n_labels and logits.shape[1] != n_labels):
        raise VerificationError(f"test inference returned shape {logits.shape} (finite: "
                                f"{bool(np.isfinite(logits).all())}), expected (2, {n_labels or '?'}) finite")
    lines.append(f"inference: batch of 2 → logits {tuple(logits.shape)}, finite, on "
                 f"{predictor.session_info.active[0]}")
    return lines
