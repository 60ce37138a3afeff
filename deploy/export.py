"""PyTorch → ONNX: eval mode, dynamic batch, named I/O, one self-contained file, metadata, full check.

Example:
    >>> path = export_onnx(model, torch.zeros(1, 1, 8, 8), "student.onnx")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

from deploy.errors import NonFiniteError, VerificationError
from deploy.fileio import atomic_write_via

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
EXPORTERS = ("torchscript", "dynamo")


def export_onnx(model, example, out_path: str | os.PathLike, *, opset: int = DEFAULT_OPSET,
                input_name: str = "input", output_name: str = "logits", metadata: dict | None = None,
                exporter: str = "torchscript") -> Path:
    """Export ``model`` to a single ONNX file with a dynamic batch axis, then check it.

    ``metadata`` goes into the file's ``metadata_props`` (values are stringified). Non-finite weights
    are refused: they are never exported.
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

    path = atomic_write_via(out_path, write)
    log.info("exported %s (opset %d, %s exporter)", path, opset, exporter)
    return path


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
        raise ValueError(f"unknown exporter {exporter!r}; use one of {EXPORTERS}")


def _finalise(path: Path, metadata: dict) -> None:
    """Embed metadata, keep everything in one file, run the full checker and strict shape inference."""
    import onnx

    model = onnx.load(str(path))
    for key, value in metadata.items():
        prop = next((p for p in model.metadata_props if p.key == key), None) or model.metadata_props.add()
        prop.key, prop.value = str(key), str(value)
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
