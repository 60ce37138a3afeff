"""Build a TensorRT engine from our ONNX, check its layer precisions, write it with a sidecar JSON.

Two build paths, chosen from the installed TensorRT version and recorded in the sidecar:

* ``strongly-typed`` (TensorRT >= 10): ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``; the precision is
  the ONNX graph's own — our FP16 model (:func:`deploy.quantize.convert_fp16`, done here on the fly for an
  FP32 model) or our INT8 QDQ model (``--preset tensorrt``: symmetric, zero points 0). TensorRT 11 removed
  the FP16/INT8 builder flags and the INT8 calibrators, so this is the only path there.
* ``legacy-flags`` (TensorRT < 10, e.g. JetPack 5's 8.x): weakly typed network plus ``BuilderFlag.FP16``
  / ``BuilderFlag.INT8`` (explicit quantization from the QDQ graph; no calibrator).

Then: optimization profile for the dynamic batch (min/opt/max), timing cache, workspace limit, detailed
profiling verbosity so :class:`IEngineInspector` reports each layer's data types, and a check that the
layers really run in the precision asked for (an "FP16" engine that is silently FP32 is refused).

Example:
    >>> res = build_engine("student.onnx", "student.engine", precision="fp16", max_batch=64)  # doctest: +SKIP
    >>> res.build_path, res.layer_precisions
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgekd.deploy.engines.trtexec import PRECISIONS, trtexec_command
from edgekd.deploy.errors import UsageError, VerificationError
from edgekd.deploy.fileio import sha256_file, write_bytes, write_json
from edgekd.deploy.runtime.trt import SIDECAR_FORMAT, SIDECAR_VERSION, gpu_info, sidecar_path, tensorrt_module

log = logging.getLogger(__name__)

STRONGLY_TYPED, LEGACY = "strongly-typed", "legacy-flags"
_DTYPE = re.compile(r"\b(FP8|FP16|Half|BFloat16|BF16|FP32|Float|Int8|INT8|Int32|INT32|Int64|UInt8|Bool)\b")
_CANON = {"Half": "FP16", "Float": "FP32", "Int8": "INT8", "BFloat16": "BF16", "Int32": "INT32"}
_RANK = ["INT8", "FP8", "FP16", "BF16", "FP32"]  # lowest precision first


@dataclass
class PrecisionCheck:
    """Layer data types found by the engine inspector vs the precision asked for."""

    requested: str
    counts: dict[str, int]
    in_requested: int
    fp32_layers: list[str] = field(default_factory=list)
    passed: bool = True
    note: str = ""


@dataclass
class EngineResult:
    """What was built, how, and what the inspector found."""

    path: str
    sidecar: str
    precision: str
    build_path: str
    tensorrt: str
    gpu: dict
    settings: dict
    precision_check: PrecisionCheck
    trtexec: str

    def to_dict(self) -> dict:
        return asdict(self)


def tensorrt_version(trt=None) -> tuple[int, ...]:
    """Installed TensorRT version as a tuple, e.g. ``(10, 3, 0)``."""
    trt = trt or tensorrt_module()
    return tuple(int(p) for p in re.findall(r"\d+", trt.__version__)[:3])


def choose_build_path(version: tuple[int, ...], has_strongly_typed: bool) -> str:
    """``strongly-typed`` on TensorRT >= 10 (which has the flag), ``legacy-flags`` before."""
    return STRONGLY_TYPED if version[0] >= 10 and has_strongly_typed else LEGACY


# ---- ONNX side (no TensorRT needed) ------------------------------------------------------------------

def asymmetric_zero_points(model) -> list[str]:
    """Names of QDQ zero-point initializers that are not all zero (TensorRT needs symmetric INT8)."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    bad = []
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            zp = inits.get(node.input[2])
            if zp is not None and numpy_helper.to_array(zp).any():
                bad.append(node.input[2])
    return sorted(set(bad))


def prepare_onnx(onnx_path: Path, precision: str, build_path: str, workdir: Path) -> Path:
    """Return the ONNX to parse: checked for the precision asked, converted to FP16 when needed."""
    import onnx

    from edgekd.deploy.runtime.intake import check_model

    have = check_model(onnx_path).precision
    model = onnx.load(str(onnx_path))
    if precision == "int8":
        if have != "int8":
            raise UsageError(f"{onnx_path} has no QuantizeLinear/DequantizeLinear nodes: INT8 engines are built "
                             "from an INT8 QDQ model", hint=f"edgekd quantize {onnx_path} --preset tensorrt "
                             "--calib CALIB.npz --out model-int8.onnx, then build from that")
        bad = asymmetric_zero_points(model)
        if bad:
            raise UsageError(f"{onnx_path} uses non-zero zero points ({bad[:3]}…); TensorRT needs symmetric INT8",
                             hint="re-quantize with --preset tensorrt")
        return onnx_path
    if build_path == STRONGLY_TYPED and precision != have:
        if precision == "fp16" and have == "fp32":
            from edgekd.deploy.quantize import convert_fp16

            log.info("strongly typed build: converting %s to FP16 (FP32 inputs/outputs kept)", onnx_path)
            return Path(convert_fp16(onnx_path, workdir / "model-fp16.onnx").path)
        raise UsageError(f"{onnx_path} is a {have} model but precision '{precision}' was asked; a strongly "
                         "typed TensorRT build takes the precision from the graph",
                         hint=f"pass --precision {have}, or the {precision} model")
    return onnx_path


def batch_profile(model_path: Path, input_name: str | None, min_batch: int, opt_batch: int,
                  max_batch: int) -> tuple[str, tuple, tuple, tuple]:
    """(input name, min, opt, max shapes): the batch axis varies, every other axis must be fixed."""
    import onnx

    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise UsageError(f"batch profile must satisfy 1 <= min <= opt <= max, got {min_batch}/{opt_batch}/"
                         f"{max_batch}")
    graph = onnx.load(str(model_path), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    inputs = {i.name: i for i in graph.input if i.name not in inits}
    name = input_name or next(iter(inputs))
    if name not in inputs:
        raise UsageError(f"model has no input '{name}'", hint=f"its inputs are {list(inputs)}")
    dims = inputs[name].type.tensor_type.shape.dim
    rest = [d.dim_value for d in dims[1:]]
    if any(v <= 0 for v in rest):
        raise UsageError(f"input '{name}' has dynamic non-batch dimensions; only the batch may vary")
    return name, (min_batch, *rest), (opt_batch, *rest), (max_batch, *rest)


def check_layer_precisions(engine_info: str | dict, precision: str) -> PrecisionCheck:
    """Compare the inspector's per-layer data types with ``precision``.

    ``engine_info`` is ``IEngineInspector.get_engine_information(JSON)`` (built with DETAILED profiling
    verbosity). A layer's precision is the lowest data type among its input and output tensors. The check
    fails when no layer runs in the requested precision (e.g. an "FP16" engine that is all FP32).
    """
    info = json.loads(engine_info) if isinstance(engine_info, str) else engine_info
    layers = info.get("Layers", [])
    if layers and not isinstance(layers[0], dict):
        return PrecisionCheck(precision, {}, 0, passed=False,
                              note="engine built without detailed profiling verbosity: layer types unknown")
    counts: dict[str, int] = {}
    fp32_layers = []
    for layer in layers:
        kind = _layer_precision(layer)
        counts[kind] = counts.get(kind, 0) + 1
        if kind == "FP32" and "Reformat" not in str(layer.get("LayerType", "")):
            fp32_layers.append(str(layer.get("Name", "?")))
    want = precision.upper()
    n = counts.get(want, 0)
    passed = n > 0 or not layers
    note = (f"{n}/{len(layers)} layers run in {want}" if passed else
            f"no layer runs in {want} (found {counts}): the engine is not the precision asked for")
    return PrecisionCheck(precision, counts, n, fp32_layers if want != "FP32" else [], passed, note)


def _layer_precision(layer: dict) -> str:
    found = set()
    for tensor in list(layer.get("Inputs", [])) + list(layer.get("Outputs", [])):
        for match in _DTYPE.findall(str(tensor.get("Format/Datatype", ""))):
            found.add(_CANON.get(match, match))
    ranked = [p for p in _RANK if p in found]
    return ranked[0] if ranked else (sorted(found)[0] if found else "unknown")


def trtexec_plan(onnx_path: str | os.PathLike, engine_path: str | os.PathLike, precision: str = "fp16", *,
                 input_name: str | None = None, min_batch: int = 1, opt_batch: int = 8, max_batch: int = 64,
                 workspace_mb: int = 1024, timing_cache: str | os.PathLike | None = None) -> dict:
    """The trtexec command lines for a device build, without TensorRT installed here.

    Returns ``{"strongly_typed": cmd, "legacy": cmd, "onnx": path}``: the first for TensorRT >= 10, the second
    for TensorRT 8.x (JetPack 5). For FP16 from an FP32 model the FP16 ONNX a strongly typed build needs is
    written beside the engine (``ENGINE.fp16.onnx``) — copy it to the device with the command.
    """
    from edgekd.deploy.fileio import refuse_foreign
    from edgekd.deploy.runtime.intake import check_model

    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    have = check_model(onnx_path).precision
    name, lo, opt, hi = batch_profile(onnx_path, input_name, min_batch, opt_batch, max_batch)  # checks first
    typed = onnx_path
    if precision == "fp16" and have == "fp32":
        from edgekd.deploy.quantize import convert_fp16

        side = engine_path.with_name(engine_path.name + ".fp16.onnx")
        refuse_foreign(side, "the FP16 model beside --out,")
        typed = Path(convert_fp16(onnx_path, side).path)
    else:
        prepare_onnx(onnx_path, precision, STRONGLY_TYPED, engine_path.parent)  # validates, no conversion
    common = dict(input_name=name, min_shape=lo, opt_shape=opt, max_shape=hi, workspace_mb=workspace_mb,
                  timing_cache=timing_cache)
    return {"strongly_typed": trtexec_command(typed, engine_path, precision, strongly_typed=True, **common),
            "legacy": trtexec_command(onnx_path, engine_path, precision, strongly_typed=False, **common),
            "onnx": str(typed)}


# ---- TensorRT side -----------------------------------------------------------------------------------

def parse_network(trt, builder, logger, onnx_path: Path, build_path: str):
    """Create the network (strongly typed or not) and parse the ONNX; errors name the failing node."""
    flag = trt.NetworkDefinitionCreationFlag
    flags = 1 << int(flag.STRONGLY_TYPED) if build_path == STRONGLY_TYPED else (
        1 << int(flag.EXPLICIT_BATCH) if hasattr(flag, "EXPLICIT_BATCH") else 0)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [_describe_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
        raise VerificationError(f"TensorRT's ONNX parser failed on {onnx_path}: " + "; ".join(errors or ["?"]),
                                hint="the op or attribute named is not supported by this TensorRT; try another "
                                     "opset, simplify the model, or keep that node out of the engine")
    return network, parser


def _describe_parser_error(err) -> str:
    node = err.node() if hasattr(err, "node") else -1
    name = err.node_name() if hasattr(err, "node_name") else ""
    op = err.node_operator() if hasattr(err, "node_operator") else ""
    where = f"node {node}" + (f" '{name}'" if name else "") + (f" ({op})" if op else "")
    return f"{where}: {err.desc()}"


def configure(trt, builder, network, precision: str, build_path: str, profile: tuple, workspace_mb: int,
              cache_bytes: bytes):
    """Builder config: precision flags (legacy path only), profile, workspace, timing cache, verbosity."""
    config = builder.create_builder_config()
    if build_path == LEGACY:
        for flag in {"fp16": ["FP16"], "int8": ["INT8", "FP16"]}.get(precision, []):
            config.set_flag(getattr(trt.BuilderFlag, flag))
    name, lo, opt, hi = profile
    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(opt_profile)
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    else:  # TensorRT < 8.4
        config.max_workspace_size = int(workspace_mb) << 20
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    return config


def build_engine(onnx_path: str | os.PathLike, engine_path: str | os.PathLike, *, precision: str = "fp16",
                 input_name: str | None = None, min_batch: int = 1, opt_batch: int = 8, max_batch: int = 64,
                 workspace_mb: int = 1024, timing_cache: str | os.PathLike | None = None,
                 strict: bool = True) -> EngineResult:
    """Build ``engine_path`` (+ sidecar ``ENGINE.json``) from ``onnx_path`` with the installed TensorRT.

    Raises :class:`DependencyError` without TensorRT, :class:`VerificationError` when parsing or building
    fails or (``strict``) when the engine's layers do not run in ``precision``.
    """
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision '{precision}'", hint=f"use one of {list(PRECISIONS)}")
    trt = tensorrt_module()
    version = tensorrt_version(trt)
    path = choose_build_path(version, hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"))
    engine_path = Path(engine_path)
    cache_path = Path(timing_cache or f"{engine_path}.timing.cache")
    with tempfile.TemporaryDirectory(prefix="edgekd-trt-") as tmp:
        src = prepare_onnx(Path(onnx_path), precision, path, Path(tmp))
        profile = batch_profile(src, input_name, min_batch, opt_batch, max_batch)
        input_dtype = _input_dtype(src, profile[0])
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network, _parser = parse_network(trt, builder, logger, src, path)
        config = configure(trt, builder, network, precision, path, profile, workspace_mb,
                           cache_path.read_bytes() if cache_path.is_file() else b"")
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise VerificationError(f"TensorRT failed to build an engine from {src}",
                                    hint="see the TensorRT messages above; try a larger --workspace-mb")
    data = bytes(serialized)
    write_bytes(cache_path, bytes(config.get_timing_cache().serialize()))
    check = check_layer_precisions(_inspect(trt, logger, data), precision)
    if strict and not check.passed:
        raise VerificationError(f"{engine_path}: {check.note}", hint="check the ONNX precision and TensorRT log")
    settings = {"input": profile[0], "min_shape": list(profile[1]), "opt_shape": list(profile[2]),
                "max_shape": list(profile[3]), "workspace_mb": workspace_mb, "timing_cache": str(cache_path)}
    command = trtexec_command(onnx_path, engine_path, precision, input_name=profile[0], min_shape=profile[1],
                              opt_shape=profile[2], max_shape=profile[3], workspace_mb=workspace_mb,
                              timing_cache=cache_path, strongly_typed=path == STRONGLY_TYPED)
    gpu = gpu_info()
    write_bytes(engine_path, data)
    sidecar = write_json(sidecar_path(engine_path), {
        "format": SIDECAR_FORMAT, "format_version": SIDECAR_VERSION, "tensorrt": trt.__version__, "gpu": gpu,
        "precision": precision, "build_path": path, "build": settings,
        "input": {"name": profile[0], "shape": [None, *profile[1][1:]], "dtype": input_dtype}, "onnx": str(onnx_path),
        "onnx_sha256": sha256_file(onnx_path), "engine_sha256": sha256_file(engine_path),
        "layer_precisions": check.counts, "created": datetime.datetime.now(datetime.timezone.utc).isoformat()})
    log.info("built %s (%s, %s path, TensorRT %s, %s): %s", engine_path, precision, path, trt.__version__,
             gpu.get("name"), check.note)
    return EngineResult(str(engine_path), str(sidecar), precision, path, trt.__version__, gpu, settings, check,
                        command)


def _input_dtype(model_path: Path, name: str) -> str:
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    elem = next(i for i in graph.input if i.name == name).type.tensor_type.elem_type
    return str(onnx.helper.tensor_dtype_to_np_dtype(elem))


def _inspect(trt, logger, data: bytes) -> str:
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        raise VerificationError("TensorRT could not deserialize the engine it just built")
    return engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON)
