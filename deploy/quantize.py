"""ONNX Runtime quantization: static INT8 (QDQ, per-channel), dynamic INT8 and FP16, with CPU presets.

Presets are registered by name (``x86``, ``x86-vnni``, ``arm64``, ``tensorrt``); ``auto`` picks one from
the CPU's instruction sets (:func:`deploy.runtime.cpu.cpu_info`). ONNX Runtime documents that x86-64
CPUs with AVX2/AVX-512 but *without* VNNI run U8S8 through ``VPMADDUBSW``, which can saturate; the fix
it documents is ``reduce_range`` (7-bit weights) or U8U8. So the ``x86`` preset uses U8 activations, S8
weights and ``reduce_range``; CPUs with VNNI and ARM have no such issue and use S8S8, ONNX Runtime's
recommended QDQ default. ``tensorrt`` quantizes activations and weights symmetrically (zero points 0),
which TensorRT's explicit-quantization path requires.

Every failure inside the quantizer becomes a :class:`QuantizationFailed` naming the step; outputs are
written atomically and checked to load and run in ONNX Runtime before they are returned.

Example:
    >>> res = quantize_static("student.onnx", "student-int8.onnx", calib_x, method="entropy")  # doctest: +SKIP
    >>> res.preset, res.settings["reduce_range"], res.warnings
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgekd.deploy.errors import EdgekdError, UsageError, VerificationError, require
from edgekd.deploy.fileio import atomic_write_via
from edgekd.deploy.registry import Registry
from edgekd.deploy.runtime.intake import check_model

log = logging.getLogger(__name__)

#: Below this many calibration samples activation ranges are unreliable; we warn (not fail).
MIN_CALIB_SAMPLES = 100
METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


class QuantizationFailed(VerificationError):
    """The quantizer (or the check of its output) failed; ``step`` names where."""

    def __init__(self, message: str, step: str, hint: str | None = None):
        super().__init__(message, hint)
        self.step = step


@dataclass(frozen=True)
class Preset:
    """INT8 settings for one kind of target."""

    name: str
    activation_type: str  # "uint8" | "int8"
    weight_type: str
    reduce_range: bool
    activation_symmetric: bool
    weight_symmetric: bool
    description: str
    quantize_bias: bool = True  # False: biases stay float (TensorRT's parser dequantizes INT8 only, not INT32)


PRESETS: Registry[Preset] = Registry("quantization preset")


def register_preset(preset: Preset) -> Preset:
    """Add a preset to the registry (by ``preset.name``)."""
    return PRESETS.register(preset.name, preset)


register_preset(Preset("x86", "uint8", "int8", True, False, True,
                       "x86-64 without VNNI (AVX2/AVX-512): U8S8 with reduce_range against VPMADDUBSW saturation"))
register_preset(Preset("x86-vnni", "int8", "int8", False, False, True,
                       "x86-64 with AVX-VNNI/AVX512-VNNI: S8S8 QDQ, full 8-bit range"))
register_preset(Preset("arm64", "int8", "int8", False, False, True,
                       "ARM64 (NEON/dot-product): S8S8 QDQ, full 8-bit range"))
register_preset(Preset("tensorrt", "int8", "int8", False, True, True,
                       "TensorRT explicit quantization: S8S8, symmetric activations and weights (zero point 0), "
                       "float biases", quantize_bias=False))


@dataclass
class QuantizeResult:
    """What was produced and with which settings (recorded into results and reports)."""

    path: str
    precision: str  # "int8" | "fp16"
    format: str  # "QDQ" | "QOperator" | "float16"
    mode: str  # "static" | "dynamic" | "fp16"
    method: str | None
    preset: str | None
    settings: dict
    cpu_isa: dict
    calib_samples: int = 0
    nodes_excluded: list[str] = field(default_factory=list)
    preprocessed: bool = False
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def cpu_isa() -> dict:
    """``{"arch", "model", "avx2", "avx512", "vnni", "neon", ...}`` of this CPU."""
    from edgekd.deploy.runtime.cpu import cpu_info

    info = cpu_info()
    return {"arch": info["arch"], "model": info["model"], **info["flags"]}


def resolve_preset(name: str = "auto", isa: dict | None = None) -> Preset:
    """Return the named preset; ``auto`` picks ``arm64``, ``x86-vnni`` or ``x86`` from the CPU."""
    if name == "auto":
        isa = isa or cpu_isa()
        arm = isa.get("neon") or str(isa.get("arch", "")).startswith(("arm", "aarch"))
        name = "arm64" if arm else "x86-vnni" if isa.get("vnni") else "x86"
    return PRESETS.get(name)


@contextlib.contextmanager
def _step(name: str, what: str) -> Iterator[None]:
    """Turn any exception in a quantization step into :class:`QuantizationFailed` (no traceback)."""
    try:
        yield
    except EdgekdError:
        raise
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise  # atomic_write_via turns it into a ResourceError
        raise QuantizationFailed(f"{what} failed at step '{name}': {exc}", name) from None
    except Exception as exc:  # noqa: BLE001 - third-party quantizer errors are wrapped, by design
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise QuantizationFailed(f"{what} failed at step '{name}': {type(exc).__name__}: {first}", name,
                                 hint="try another --method/--preset, exclude the failing node, or ship FP32"
                                 ) from None


def _quiet():
    """ORT's calibrators print progress to stdout; library code must not."""
    return contextlib.redirect_stdout(io.StringIO())


Feed = np.ndarray | dict[str, np.ndarray]


def as_feed(model_path: Path, data: Feed, input_name: str | None = None) -> dict[str, np.ndarray]:
    """``data`` as ``{input name: array}``: a bare array feeds the model's first input (or ``input_name``); every
    array must have the model's rank and fixed dimensions, and all the same number of samples."""
    inputs = {v.name: v for v in check_model(model_path).graph_inputs}
    feed = data if isinstance(data, dict) else {input_name or next(iter(inputs)): data}
    for name, arr in feed.items():
        if name not in inputs:
            raise UsageError(f"model has no input '{name}'", hint=f"its inputs are {list(inputs)}")
        dims = [d if isinstance(d, int) and d > 0 else None for d in inputs[name].dims]
        if arr.ndim != len(dims) or any(d is not None and d != c for d, c in zip(dims[1:], arr.shape[1:],
                                                                                 strict=False)):
            want = ", ".join("N" if d is None else str(d) for d in dims)
            raise UsageError(f"calibration data for '{name}' has shape {arr.shape}; the input takes ({want})",
                             hint="pass samples preprocessed exactly like the model's training input")
    missing = [n for n in inputs if n not in feed]
    if missing:
        raise UsageError(f"calibration data lacks input(s) {missing}", hint="pass a feed with every model input")
    if len({len(a) for a in feed.values()}) != 1:
        raise UsageError("calibration arrays hold different numbers of samples")
    return feed


def fixed_batch(model_path: Path) -> int | None:
    """The model's fixed batch size, or ``None`` when the batch axis is dynamic."""
    dims = check_model(model_path).graph_inputs[0].dims
    return dims[0] if dims and isinstance(dims[0], int) and dims[0] > 0 else None


def calibration_reader(calib: Feed, name: str | None, batch: int):
    """An ORT ``CalibrationDataReader`` feeding ``calib`` (an array for input ``name``, or a feed dict) in
    batches of ``batch``."""
    from onnxruntime.quantization import CalibrationDataReader

    feed = calib if isinstance(calib, dict) else {name: calib}
    n = len(next(iter(feed.values())))

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(range(0, n, batch))

        def get_next(self):
            start = next(self._it, None)
            return None if start is None else {k: np.ascontiguousarray(v[start:start + batch])
                                               for k, v in feed.items()}

        def rewind(self) -> None:
            self._it = iter(range(0, n, batch))

    return _Reader()


def _calib_batches(feed: dict[str, np.ndarray], fixed: int | None, batch: int, warnings: list[str]
                   ) -> tuple[dict[str, np.ndarray], int]:
    """Equal-sized batches: ORT's histogram calibrators (entropy, percentile) reject a ragged last batch."""
    n = len(next(iter(feed.values())))
    if fixed:
        return feed, fixed
    size = max(d for d in range(1, min(batch, n) + 1) if n % d == 0)
    if size >= min(8, n):
        return feed, size
    keep = n - n % batch
    warnings.append(f"calibrating on {keep} of {n} samples (whole batches of {batch})")
    return {k: v[:keep] for k, v in feed.items()}, batch


@contextlib.contextmanager
def _inside(folder: Path) -> Iterator[None]:
    """Run ORT's tools with ``folder`` as the working directory: they drop side files (e.g.
    ``sym_shape_infer_temp.onnx``, ``*-inferred.onnx``) in the current folder or next to their input."""
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def preprocess_model(src: Path, workdir: Path, warnings: list[str]) -> tuple[Path, bool]:
    """ORT's quant_pre_process (shape inference + optimisation) on a copy inside ``workdir``, so no side
    file lands next to the user's model or in the current folder; on failure keep the original model."""
    from onnxruntime.quantization import quant_pre_process

    copy, out = workdir / "input.onnx", workdir / "preprocessed.onnx"
    shutil.copyfile(src, copy)
    try:
        with _quiet(), _inside(workdir):
            quant_pre_process(str(copy), str(out), skip_symbolic_shape=False)
        return out, True
    except Exception as exc:  # noqa: BLE001 - optional step
        msg = f"quant_pre_process failed ({type(exc).__name__}: {str(exc)[:120]}); quantizing the model as is"
        log.warning(msg)
        warnings.append(msg)
        return src, False


def _check_calib(feed: dict[str, np.ndarray], minimum: int, warnings: list[str]) -> dict[str, np.ndarray]:
    n = len(next(iter(feed.values())))
    for name, arr in feed.items():
        if arr.ndim < 2 or n == 0:
            raise UsageError(f"calibration data '{name}' has shape {arr.shape}; expected (N, ...) with N >= 1")
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            raise UsageError("calibration data contains NaN/Inf", hint="pass normalised, finite input samples")
    if n < minimum:
        msg = (f"only {n} calibration samples (recommended >= {minimum}); activation ranges may be poorly estimated")
        log.warning(msg)
        warnings.append(msg)
    return {k: v.astype(np.float32, copy=False) if np.issubdtype(v.dtype, np.floating) else v
            for k, v in feed.items()}


def _stamp(path: Path, info: dict) -> None:
    """Record how the model was quantized in its ``metadata_props`` (fp32 metadata is kept)."""
    import onnx

    model = onnx.load(str(path))
    props = {p.key: p for p in model.metadata_props}
    for key, value in info.items():
        prop = props.get(key) or model.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.save_model(model, str(path), save_as_external_data=False)


def smoke_test(path: str | os.PathLike, sample: Feed | None = None, input_name: str | None = None) -> None:
    """Load ``path`` in ONNX Runtime (CPU) and run ``sample`` (an array or a feed); outputs must be finite."""
    from edgekd.deploy.runtime.ort import OnnxrtRunner

    with OnnxrtRunner(path, "cpu") as runner:
        if sample is None:
            return
        outputs = runner.infer(sample if isinstance(sample, dict) else {input_name or runner.inputs()[0].name:
                                                                         sample})
    for out in outputs.values():
        if np.issubdtype(out.dtype, np.floating) and not np.isfinite(out).all():
            raise VerificationError(f"{path}: the quantized model outputs NaN/Inf",
                                    hint="quantization broke the model; try another method or keep FP32")


def quantize_static(fp32_path: str | os.PathLike, out_path: str | os.PathLike, calib: Feed, *,
                    method: str = "minmax", preset: str = "auto", per_channel: bool = True,
                    input_name: str | None = None, nodes_to_exclude: Sequence[str] = (),
                    op_types_to_quantize: Sequence[str] | None = None, percentile: float = 99.999,
                    calib_batch: int = 32, preprocess: bool = True,
                    min_calib_samples: int = MIN_CALIB_SAMPLES) -> QuantizeResult:
    """Static INT8 in QDQ format with per-channel weights, calibrated on ``calib`` — an (N, C, H, W) float32
    array for the model's first input, or a feed ``{input name: array}`` for models with several inputs.

    Args:
        fp32_path: float ONNX model.
        out_path: where the INT8 model goes (written atomically).
        calib: normalised training samples (never test samples).
        method: ``minmax``, ``entropy`` or ``percentile``.
        preset: ``auto`` or a name in :data:`PRESETS`.
        per_channel: per-output-channel weight scales.
        input_name: the model input to feed (default: the first).
        nodes_to_exclude: node names kept in float.

    Returns:
        A :class:`QuantizeResult`. Raises :class:`QuantizationFailed` naming the failing step.

    Example:
        >>> quantize_static("m.onnx", "m-int8.onnx", x_train[:256], preset="x86")  # doctest: +SKIP
    """
    ortq = require("onnxruntime.quantization", "ort", "INT8 quantization")
    if method not in METHODS:
        raise UsageError(f"unknown calibration method '{method}'", hint=f"use one of {list(METHODS)}")
    isa, chosen, warnings = cpu_isa(), resolve_preset(preset), []
    feed = _check_calib(as_feed(Path(fp32_path), calib, input_name), min_calib_samples, warnings)
    feed, batch = _calib_batches(feed, fixed_batch(Path(fp32_path)), calib_batch, warnings)
    n = len(next(iter(feed.values())))
    settings = _settings(chosen, per_channel, method, percentile)
    extra = {"ActivationSymmetric": chosen.activation_symmetric, "WeightSymmetric": chosen.weight_symmetric,
             "QuantizeBias": chosen.quantize_bias}
    if method == "percentile":
        extra["CalibPercentile"] = percentile
    with tempfile.TemporaryDirectory(prefix="edgekd-quant-") as tmp:
        src, pre = preprocess_model(Path(fp32_path), Path(tmp), warnings) if preprocess else (Path(fp32_path), False)

        def write(dst: Path) -> None:
            with _step("quantize_static", "static INT8 quantization"), _quiet(), _inside(Path(tmp)):
                ortq.quantize_static(
                    str(src), str(dst), calibration_reader(feed, None, batch),
                    quant_format=ortq.QuantFormat.QDQ, per_channel=per_channel,
                    reduce_range=chosen.reduce_range, activation_type=_qtype(chosen.activation_type),
                    weight_type=_qtype(chosen.weight_type), nodes_to_exclude=list(nodes_to_exclude) or None,
                    op_types_to_quantize=list(op_types_to_quantize) if op_types_to_quantize else None,
                    calibrate_method=getattr(ortq.CalibrationMethod, METHODS[method]), extra_options=extra)
            _finish(dst, {"mode": "static", "method": method, "preset": chosen.name, **settings},
                    {k: v[:batch] for k, v in feed.items()}, None)

        path = atomic_write_via(out_path, write)
    log.info("static INT8 (%s, preset %s) → %s", method, chosen.name, path)
    return QuantizeResult(str(path), "int8", "QDQ", "static", method, chosen.name, settings, isa, n,
                          list(nodes_to_exclude), pre, warnings)


def quantize_dynamic(fp32_path: str | os.PathLike, out_path: str | os.PathLike, *, preset: str = "auto",
                     per_channel: bool = False, nodes_to_exclude: Sequence[str] = (),
                     op_types_to_quantize: Sequence[str] | None = None,
                     sample: np.ndarray | None = None) -> QuantizeResult:
    """Dynamic INT8: weights quantized offline, activations at run time (no calibration data).

    Example:
        >>> quantize_dynamic("m.onnx", "m-dyn.onnx")  # doctest: +SKIP
    """
    ortq = require("onnxruntime.quantization", "ort", "INT8 quantization")
    check_model(fp32_path)
    isa, chosen = cpu_isa(), resolve_preset(preset)
    settings = {"weight_type": chosen.weight_type, "reduce_range": chosen.reduce_range,
                "per_channel": per_channel, "weight_symmetric": True}

    def write(dst: Path) -> None:
        with tempfile.TemporaryDirectory(prefix="edgekd-quant-") as tmp:
            src, _ = preprocess_model(Path(fp32_path), Path(tmp), [])
            with _step("quantize_dynamic", "dynamic INT8 quantization"), _quiet(), _inside(Path(tmp)):
                ortq.quantize_dynamic(
                    str(src), str(dst), per_channel=per_channel, reduce_range=chosen.reduce_range,
                    weight_type=_qtype(chosen.weight_type), nodes_to_exclude=list(nodes_to_exclude) or None,
                    op_types_to_quantize=list(op_types_to_quantize) if op_types_to_quantize else None)
        _finish(dst, {"mode": "dynamic", "preset": chosen.name, **settings}, sample, None)

    path = atomic_write_via(out_path, write)
    return QuantizeResult(str(path), "int8", "QOperator", "dynamic", None, chosen.name, settings, isa,
                          nodes_excluded=list(nodes_to_exclude))


def convert_fp16(fp32_path: str | os.PathLike, out_path: str | os.PathLike, *, keep_io_types: bool = True,
                 op_block_list: Sequence[str] | None = None, sample: np.ndarray | None = None) -> QuantizeResult:
    """FP16 weights and compute, FP32 inputs/outputs kept (``keep_io_types``) so apps need no change.

    Uses ``onnxruntime.transformers.float16`` (shipped with ONNX Runtime).

    Example:
        >>> convert_fp16("m.onnx", "m-fp16.onnx")  # doctest: +SKIP
    """
    import onnx

    f16 = require("onnxruntime.transformers.float16", "ort", "FP16 conversion")
    check_model(fp32_path)

    def write(dst: Path) -> None:
        with _step("convert_fp16", "FP16 conversion"):
            model = f16.convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=keep_io_types,
                                                 op_block_list=list(op_block_list) if op_block_list else None)
            topological_sort(model.graph)  # the converter appends its input Casts after their consumers
            onnx.save_model(model, str(dst), save_as_external_data=False)
        _finish(dst, {"mode": "fp16", "keep_io_types": keep_io_types}, sample, None)

    path = atomic_write_via(out_path, write)
    return QuantizeResult(str(path), "fp16", "float16", "fp16", None, None, {"keep_io_types": keep_io_types},
                          cpu_isa())


def topological_sort(graph) -> None:
    """Reorder ``graph.node`` in place so every node follows the producers of its inputs (stable: nodes already
    in order keep it). ONNX requires this order (``onnx.checker``); ORT tolerates its absence, other tools do not."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:  # a cycle, or an input produced nowhere: leave the rest as it is for the checker to name
            ordered += pending
            break
        ready_ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ready_ids]
        ordered += ready
        available.update(o for n in ready for o in n.output)
    del graph.node[:]
    graph.node.extend(ordered)


def _finish(path: Path, info: dict, sample: Feed | None, input_name: str | None) -> None:
    precision = "fp16" if info.get("mode") == "fp16" else "int8"
    with _step("stamp metadata", "writing the quantized model"):
        _stamp(path, {"edgekd.precision": precision, "edgekd.quantization": json.dumps(info, sort_keys=True)})
    with _step("load in ONNX Runtime", "checking the quantized model"):
        smoke_test(path, sample, input_name)


def _settings(preset: Preset, per_channel: bool, method: str, percentile: float) -> dict:
    out = {"activation_type": preset.activation_type, "weight_type": preset.weight_type,
           "reduce_range": preset.reduce_range, "activation_symmetric": preset.activation_symmetric,
           "weight_symmetric": preset.weight_symmetric, "per_channel": per_channel, "format": "QDQ",
           "calibration": method, "quantize_bias": preset.quantize_bias}
    if method == "percentile":
        out["percentile"] = percentile
    return out


def _qtype(name: str):
    from onnxruntime.quantization import QuantType

    return {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}[name]


#: quantization modes → ``fn(fp32_path, out_path, calib, **kwargs)``
MODES: Registry = Registry("quantization mode")
MODES.register("static", lambda src, dst, calib, **kw: quantize_static(src, dst, calib, **kw))
MODES.register("dynamic", lambda src, dst, calib, **kw: quantize_dynamic(src, dst, sample=head(calib), **kw))
MODES.register("fp16", lambda src, dst, calib, **kw: convert_fp16(src, dst, sample=head(calib), **kw))


def samples(data: Feed) -> int:
    """How many samples an array or a feed holds."""
    return len(next(iter(data.values()))) if isinstance(data, dict) else len(data)


def head(data: Feed | None, n: int = 2) -> Feed | None:
    """The first ``n`` samples of an array or a feed (a smoke-test input)."""
    if data is None:
        return None
    return {k: v[:n] for k, v in data.items()} if isinstance(data, dict) else data[:n]


def quantize(mode: str, fp32_path: str | os.PathLike, out_path: str | os.PathLike,
             calib: np.ndarray | None = None, **kwargs) -> QuantizeResult:
    """Dispatch by ``mode`` (``static``, ``dynamic``, ``fp16``) — what the CLI calls."""
    fn = MODES.get(mode)
    if mode == "static" and calib is None:
        raise UsageError("static INT8 needs calibration data", hint="pass --calib CALIB.npz or --calib-from RUN")
    return fn(fp32_path, out_path, calib, **kwargs)
