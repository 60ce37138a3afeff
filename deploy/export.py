"""PyTorch → ONNX: eval mode, dynamic axes, named I/O, one self-contained file, metadata, full check.

The default exporter is the one torch develops, ``torch.onnx.export(..., dynamo=True)``; the TorchScript
exporter runs when asked for, or as a fallback when the dynamo exporter fails — recorded in the outcome
(and in ``results.json``) and logged as a warning, never silent. No warnings are filtered: a deprecation
must be seen before it breaks users.

Optional graph simplification (onnxslim) is itself verified: the simplified file replaces the exported one
only when it passes the full ONNX check and numerical parity with the model.

Example:
    >>> meta = export_metadata("0.2.0", source_sha256=sha, preprocessing=contract)  # doctest: +SKIP
    >>> outcome = export_verified(model, x[:1], "student.onnx", x_test, metadata=meta)  # doctest: +SKIP
    >>> outcome.exporter, outcome.parity.passed  # doctest: +SKIP
    ('dynamo', True)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekd.deploy.errors import NonFiniteError, UsageError, VerificationError
from edgekd.deploy.fileio import atomic_write_via
from edgekd.deploy.registry import Registry

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18
#: ``dynamo`` is the exporter torch develops (``torch.onnx.export(..., dynamo=True)``); ``torchscript`` is the
#: legacy one, used when asked for, or as the recorded fallback when the dynamo exporter fails.
EXPORTERS: Registry = Registry("export.exporter")


@dataclass(frozen=True)
class ExportOutcome:
    """What :func:`export_verified` made: the file, the parity report, and which exporter really ran."""

    path: Path
    parity: object  # deploy.verify.ParityReport
    exporter: str
    fallback_reason: str | None = None
    simplified: SimplifyResult | None = None


def export_onnx(model, example, out_path: str | os.PathLike, *, opset: int = DEFAULT_OPSET,
                input_names=("input",), output_names=("logits",), dynamic_axes: dict | None = None,
                metadata: dict | None = None, exporter: str = "dynamo", fallback: str | None = "torchscript",
                simplify: bool = False, verify: Callable[[Path], object] | None = None,
                dim_max: dict[str, int] | None = None) -> ExportOutcome:
    """Export ``model`` to a single ONNX file with dynamic axes, then check it.

    Args:
        model: a ``torch.nn.Module``; put in eval mode here.
        example: an example input (a tensor, or a tuple of tensors for several inputs); its batch size
            does not matter.
        out_path: the ``.onnx`` file (written atomically).
        opset: ONNX opset (default :data:`DEFAULT_OPSET`; the dynamo exporter needs 18+).
        input_names, output_names: the graph's I/O names, in the model's argument/return order.
        dynamic_axes: ``{input or output name: {axis: axis name}}``; default: axis 0 ``batch`` everywhere.
            A text model names two: ``{"input_ids": {0: "batch", 1: "sequence"}, ...}`` on both int64 inputs.
        dim_max: the largest size of a named axis (e.g. ``{"sequence": max_length}``, the bound of a position
            table); others are bounded by 65536 (dynamo exporter only).
        metadata: ``metadata_props``; dict/list values are stored as JSON, others as ``str``.
        exporter: ``dynamo`` (default) or ``torchscript``.
        fallback: the exporter to use when ``exporter`` fails (recorded in the outcome, with the reason,
            and logged as a warning), or ``None`` to fail.
        simplify: run onnxslim and keep its output only if it passes the check and parity.
        verify: called with the finished temp file before it is renamed into place (e.g. a parity
            check); if it raises, nothing is written.

    Non-finite weights are refused: they are never exported.
    """
    import torch

    EXPORTERS.get(exporter)  # an unknown name fails here, with the valid ones
    model = model.eval()
    check_finite_weights(model)
    device = next(model.parameters()).device
    example = tuple(t.detach().to(device) for t in (example if isinstance(example, tuple | list) else (example,)))
    axes = dynamic_axes or {n: {0: "batch"} for n in (*input_names, *output_names)}
    used = {"exporter": exporter, "reason": None}

    def write(tmp: Path) -> None:
        with torch.no_grad():
            try:
                _export(model, example, tmp, opset, list(input_names), list(output_names), axes, exporter, dim_max)
            except Exception as exc:  # noqa: BLE001 - any exporter failure may fall back, recorded
                if fallback is None or fallback == exporter or isinstance(exc, UsageError):
                    raise
                used.update(exporter=fallback, reason=f"{type(exc).__name__}: {str(exc).strip()[:300]}")
                log.warning("%s: the %s exporter failed (%s); exporting with %s instead", out_path, exporter,
                            used["reason"], fallback)
                _export(model, example, tmp, opset, list(input_names), list(output_names), axes, fallback, dim_max)
        _finalise(tmp, {**(metadata or {}), "edgekd.exporter": used["exporter"]})
        if verify is not None:
            verify(tmp)

    path = atomic_write_via(out_path, write)
    log.info("exported %s (opset %d, %s exporter)", path, opset, used["exporter"])
    simplified = None
    if simplify:
        simplified = simplify_onnx(path, _torch_reference(model, list(input_names)), _probe_inputs(example,
                                                                                                    input_names))
    return ExportOutcome(path, None, used["exporter"], used["reason"], simplified)


def export_verified(model, example, out_path: str | os.PathLike, inputs, *, atol: float | None = None,
                    batch_sizes=(1, 7), **export_kwargs) -> ExportOutcome:
    """Export, then gate the file on parity with PyTorch on ``inputs`` *before* it is renamed into place: a
    model that fails its check is never left on disk.

    ``inputs`` is an array, a feed dict for several inputs, or a **list of feeds** — e.g. token feeds of
    several sequence lengths for a text model, each checked at every batch size
    (:func:`edgekd.deploy.verify.check_parity_feeds`).

    Example:
        >>> outcome = export_verified(model, x[:1], "student.onnx", x_test)  # doctest: +SKIP
        >>> outcome.parity.lines, outcome.exporter
        >>> export_verified(text_model, (ids[:2], mask[:2]), "student.onnx", [feed_5, feed_16, feed_64],
        ...                 input_names=["input_ids", "attention_mask"], batch_sizes=(1, 3, 8),
        ...                 dynamic_axes=axes, dim_max={"sequence": 64})  # doctest: +SKIP
    """
    from edgekd.deploy.verify import check_parity, check_parity_feeds

    names = list(export_kwargs.get("input_names", ("input",)))
    reference, reports = _torch_reference(model.eval(), names), []

    def gate(tmp: Path) -> None:
        check = check_parity_feeds if isinstance(inputs, list) else check_parity
        reports.append(check(reference, tmp, inputs, precision="fp32", batch_sizes=batch_sizes, atol=atol,
                             label=str(out_path)))

    outcome = export_onnx(model, example, out_path, verify=gate, **export_kwargs)
    return dataclasses.replace(outcome, parity=reports[-1])


def export_metadata(edgekd_version: str, *, source_sha256: str | None = None, preprocessing=None,
                    labels: list | None = None, **extra) -> dict:
    """The standard ``metadata_props`` of an edgekd export: version, source weights hash, the preprocessing
    contract (:mod:`edgekd.deploy.runtime.preprocess`), labels, and ``extra`` (e.g. ``role``).

    Example:
        >>> export_metadata("0.2.0", source_sha256="ab12", role="student")["role"]
        'student'
    """
    meta = {"edgekd_version": edgekd_version, **extra}
    if source_sha256:
        meta["source_sha256"] = source_sha256
    if preprocessing is not None:
        meta.update(preprocessing.metadata())
    if labels is not None:
        meta["labels"] = json.dumps(list(labels))
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


def _torch_reference(model, input_names=("input",)):
    """numpy in (one array, or a feed dict) → the model's outputs as numpy."""
    import torch

    device = next(model.parameters()).device

    def run(x):
        feed = x if isinstance(x, dict) else {input_names[0]: x}
        args = [torch.from_numpy(np.ascontiguousarray(feed[n])).to(device) for n in input_names]
        with torch.inference_mode():
            out = model(*args)
        return tuple(o.cpu().numpy() for o in out) if isinstance(out, tuple | list) else out.cpu().numpy()

    return run


def _probe_inputs(example, input_names, n: int = 8):
    """Inputs for verifying a simplification: the example plus seeded noise of the same scale (floats) or
    the example tiled (integer inputs such as token ids)."""
    rng = np.random.default_rng(0)
    feed = {}
    for name, t in zip(input_names, example, strict=True):
        x = t.detach().cpu().numpy()
        if np.issubdtype(x.dtype, np.floating):
            noise = rng.standard_normal((n, *x.shape[1:])).astype(x.dtype) * (float(x.std()) or 1.0)
            feed[name] = np.concatenate([x, noise + x.mean()]).astype(x.dtype)
        else:
            feed[name] = np.concatenate([x] * (n + 1))
    return feed if len(feed) > 1 else next(iter(feed.values()))


def _export(model, example: tuple, path: Path, opset: int, input_names: list[str], output_names: list[str],
            axes: dict, exporter: str, dim_max: dict[str, int] | None = None) -> None:
    fn = EXPORTERS.get(exporter)
    if dim_max and exporter == "dynamo":
        fn(model, example, path, opset, input_names, output_names, axes, dim_max=dim_max)
    else:
        fn(model, example, path, opset, input_names, output_names, axes)


@EXPORTERS.register("dynamo")
def _export_dynamo(model, example: tuple, path: Path, opset: int, input_names: list[str],
                   output_names: list[str], axes: dict, dim_max: dict[str, int] | None = None) -> None:
    """``torch.onnx.export(..., dynamo=True)`` with one ``torch.export.Dim`` per named dynamic axis (bounded by
    ``dim_max[name]``, else 65536)."""
    import torch

    dims: dict[str, object] = {}
    shapes = []
    for name in input_names:
        per = {}
        for axis, dim_name in (axes.get(name) or {}).items():
            if dim_name not in dims:
                dims[dim_name] = torch.export.Dim(str(dim_name), min=1, max=(dim_max or {}).get(dim_name, 1 << 16))
            per[int(axis)] = dims[dim_name]
        shapes.append(per)
    program = torch.onnx.export(model, example, dynamo=True, opset_version=opset, input_names=input_names,
                                output_names=output_names, dynamic_shapes=tuple(shapes), external_data=False,
                                verbose=False)
    program.save(str(path), external_data=False)
    from edgekd.deploy.runtime.onnxinfo import read_onnx

    got = read_onnx(path).opset("")
    if got != opset:  # torch keeps its own opset when the version converter fails, and only logs it
        raise VerificationError(f"the dynamo exporter produced opset {got}, not the requested {opset} (its version "
                                "converter could not convert this model)")


@EXPORTERS.register("torchscript")
def _export_torchscript(model, example: tuple, path: Path, opset: int, input_names: list[str],
                        output_names: list[str], axes: dict) -> None:
    """The legacy TorchScript-based exporter (``dynamo=False``)."""
    import torch

    torch.onnx.export(model, example, str(path), dynamo=False, opset_version=opset, input_names=input_names,
                      output_names=output_names, dynamic_axes=dict(axes), do_constant_folding=True)


def _finalise(path: Path, metadata: dict) -> None:
    """Embed metadata, drop per-node debug annotations (source stack traces, module paths: a third of a small
    model's bytes), keep everything in one file, run the full checker and strict shape inference."""
    import onnx

    model = onnx.load(str(path))
    _strip_node_annotations(model.graph)
    for key, value in metadata.items():
        prop = next((p for p in model.metadata_props if p.key == key), None) or model.metadata_props.add()
        text = json.dumps(value, sort_keys=True) if isinstance(value, dict | list | tuple) else str(value)
        prop.key, prop.value = str(key), text
    model.producer_name = "edgekd"
    onnx.save_model(model, str(path), save_as_external_data=False)
    check_onnx(path)


def _strip_node_annotations(graph) -> None:
    for node in graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
        for attr in node.attribute:
            if attr.HasField("g"):
                _strip_node_annotations(attr.g)
            for g in attr.graphs:
                _strip_node_annotations(g)


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
