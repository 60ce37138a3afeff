"""PyTorch → ONNX: eval mode, dynamic batch, named I/O, one self-contained file, metadata, full check.

Optional graph simplification (onnxslim) is itself verified: the simplified file replaces the exported one
only when it passes the full ONNX check and numerical parity with the model.

Example:
    >>> meta = export_metadata("0.1.0", source_sha256=sha, normalization={"scale": 1 / 16})  # doctest: +SKIP
    >>> path = export_onnx(model, torch.zeros(1, 1, 8, 8), "student.onnx", metadata=meta, simplify=True)
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekd.deploy.errors import NonFiniteError, UsageError, VerificationError
from edgekd.deploy.fileio import atomic_write_via

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
EXPORTERS = ("torchscript", "dynamo")


def export_onnx(model, example, out_path: str | os.PathLike, *, opset: int = DEFAULT_OPSET,
                input_name: str = "input", output_name: str = "logits", metadata: dict | None = None,
                exporter: str = "torchscript", simplify: bool = False,
                verify: Callable[[Path], object] | None = None) -> Path:
    """Export ``model`` to a single ONNX file with a dynamic batch axis, then check it.

    Args:
        model: a ``torch.nn.Module``; put in eval mode here.
        example: an example input batch (its batch size does not matter: the batch axis is dynamic).
        out_path: the ``.onnx`` file (written atomically).
        opset: ONNX opset (default :data:`DEFAULT_OPSET`).
        metadata: ``metadata_props``; dict/list values are stored as JSON, others as ``str``
            (see :func:`export_metadata`).
        exporter: ``torchscript`` or ``dynamo``.
        simplify: run onnxslim and keep its output only if it passes the check and parity.
        verify: called with the finished temp file before it is renamed into place (e.g. a parity
            check); if it raises, nothing is written.

    Non-finite weights are refused: they are never exported.
    """
    import torch

    model = model.eval()
    check_finite_weights(model)
    example = example.detach().to(next(model.parameters()).device)

    def write(tmp: Path) -> None:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _export(model, example, tmp, opset, input_name, output_name, exporter)
        _finalise(tmp, metadata or {})
        if verify is not None:
            verify(tmp)

    path = atomic_write_via(out_path, write)
    log.info("exported %s (opset %d, %s exporter)", path, opset, exporter)
    if simplify:
        simplify_onnx(path, _torch_reference(model), _probe_inputs(example))
    return path


def export_verified(model, example, out_path: str | os.PathLike, inputs: np.ndarray, *,
                    atol: float | None = None, batch_sizes=(1, 7), **export_kwargs):
    """Export, then gate the file on parity with PyTorch on ``inputs`` *before* it is renamed into place:
    a model that fails its check is never left on disk.

    Returns:
        ``(path, ParityReport)``.

    Example:
        >>> path, parity = export_verified(model, x[:1], "student.onnx", x_test)  # doctest: +SKIP
    """
    from edgekd.deploy.verify import check_parity

    reference, reports = _torch_reference(model.eval()), []

    def gate(tmp: Path) -> None:
        reports.append(check_parity(reference, tmp, inputs, precision="fp32", batch_sizes=batch_sizes, atol=atol,
                                    label=str(out_path)))

    path = export_onnx(model, example, out_path, verify=gate, **export_kwargs)
    return path, reports[-1]


def export_metadata(edgekd_version: str, *, source_sha256: str | None = None, layout: str = "NCHW",
                    normalization: dict | None = None, labels: list | None = None, **extra) -> dict:
    """The standard ``metadata_props`` of an edgekd export (JSON-encoded where structured).

    Example:
        >>> export_metadata("0.1.0", source_sha256="ab12", normalization={"scale": 0.0625})["layout"]
        'NCHW'
    """
    meta = {"edgekd_version": edgekd_version, "layout": layout, **extra}
    if source_sha256:
        meta["source_sha256"] = source_sha256
    if normalization is not None:
        meta["normalization"] = json.dumps(normalization, sort_keys=True)
    if labels is not None:
        meta["labels"] = json.dumps(labels)
    return meta


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """``metadata_props`` of an ONNX file as a dict (external data not loaded)."""
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


@dataclass
class SimplifyResult:
    """Whether the simplified graph was kept, and why."""

    applied: bool
    nodes_before: int
    nodes_after: int | None
    reason: str


def simplify_onnx(path: str | os.PathLike, reference_fn, inputs: np.ndarray, *, atol: float = 1e-4
                  ) -> SimplifyResult:
    """Simplify ``path`` in place with onnxslim, *only if* the result passes ``check_onnx`` and parity.

    ``reference_fn`` maps a numpy batch to the reference output (e.g. the PyTorch model). A failing
    simplification is logged and the original file is kept untouched.
    """
    import onnx

    from edgekd.deploy.errors import require
    from edgekd.deploy.verify import check_parity

    slim = require("onnxslim", "train", "ONNX graph simplification")
    path = Path(path)
    original = onnx.load(str(path))
    before = len(original.graph.node)
    with tempfile.TemporaryDirectory(prefix="edgekd-slim-") as tmp:
        cand = Path(tmp) / "slim.onnx"
        try:
            model = slim.slim(original)
            _copy_metadata(original, model)
            onnx.save_model(model, str(cand), save_as_external_data=False)
            check_onnx(cand)
            check_parity(reference_fn, cand, inputs, precision="fp32", atol=atol)
        except Exception as exc:  # noqa: BLE001 - any failure means: keep the verified original
            reason = f"simplified graph rejected ({type(exc).__name__}: {str(exc)[:200]}); kept the original"
            log.warning("%s: %s", path, reason)
            return SimplifyResult(False, before, None, reason)
        after = len(onnx.load(str(cand)).graph.node)
        atomic_write_via(path, lambda tmp_path: tmp_path.write_bytes(cand.read_bytes()))
    log.info("simplified %s: %d → %d nodes, parity verified", path, before, after)
    return SimplifyResult(True, before, after, f"{before} → {after} nodes, check and parity passed")


def _copy_metadata(src, dst) -> None:
    have = {p.key for p in dst.metadata_props}
    for prop in src.metadata_props:
        if prop.key not in have:
            dst.metadata_props.add(key=prop.key, value=prop.value)
    dst.producer_name = src.producer_name


def _torch_reference(model):
    import torch

    device = next(model.parameters()).device

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x).to(device)).cpu().numpy()

    return run


def _probe_inputs(example, n: int = 8) -> np.ndarray:
    """Inputs for verifying a simplification: the example plus seeded noise of the same scale."""
    x = example.detach().cpu().numpy().astype(np.float32)
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((n, *x.shape[1:])).astype(np.float32) * (float(x.std()) or 1.0)
    return np.concatenate([x, noise + float(x.mean())])


def _export(model, example, path: Path, opset: int, input_name: str, output_name: str, exporter: str):
    import torch

    if exporter == "torchscript":
        torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=opset,
                          input_names=[input_name], output_names=[output_name],
                          dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
                          do_constant_folding=True)
    elif exporter == "dynamo":
        batch = torch.export.Dim("batch", min=1, max=4096)
        program = torch.onnx.export(model, (example,), dynamo=True, opset_version=opset,
                                    input_names=[input_name], output_names=[output_name],
                                    dynamic_shapes=({0: batch},), external_data=False, verbose=False)
        program.save(str(path), external_data=False)
    else:
        raise UsageError(f"unknown exporter {exporter!r}", hint=f"use one of {list(EXPORTERS)}")


def _finalise(path: Path, metadata: dict) -> None:
    """Embed metadata, keep everything in one file, run the full checker and strict shape inference."""
    import onnx

    model = onnx.load(str(path))
    for key, value in metadata.items():
        prop = next((p for p in model.metadata_props if p.key == key), None) or model.metadata_props.add()
        text = json.dumps(value, sort_keys=True) if isinstance(value, dict | list | tuple) else str(value)
        prop.key, prop.value = str(key), text
    model.producer_name = "edgekd"
    onnx.save_model(model, str(path), save_as_external_data=False)
    check_onnx(path)


def check_onnx(path: str | os.PathLike) -> None:
    """``onnx.checker`` (full check) plus strict shape inference; raises :class:`VerificationError`."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
        onnx.shape_inference.infer_shapes(onnx.load(str(path)), check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise VerificationError(f"ONNX check failed for {path}: {first}") from None


def check_finite_weights(model) -> None:
    """Refuse a model whose parameters or buffers hold NaN/Inf, naming the first bad tensor."""
    import torch

    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise NonFiniteError(f"weight '{name}' contains NaN/Inf: refusing to save or export it",
                                 hint="training diverged; lower the learning rate or resume from an "
                                      "earlier checkpoint")
