"""The ``trtexec`` command line equivalent to an edgekd engine build, for devices without Python bindings.

Jetson users can copy it onto the device and build there (an engine only runs on the GPU and TensorRT
version it was built with). Pure string building: works without TensorRT.

Example:
    >>> cmd = trtexec_command("m.onnx", "m.engine", "fp16", input_name="input", min_shape=(1, 1, 8, 8),
    ...                       opt_shape=(8, 1, 8, 8), max_shape=(64, 1, 8, 8))
    >>> cmd.split()[:4]
    ['trtexec', '--onnx=m.onnx', '--saveEngine=m.engine', '--stronglyTyped']
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence

from edgekd.deploy.errors import UsageError

PRECISIONS = ("fp32", "fp16", "int8")

#: Builder flags of the legacy (TensorRT < 10, e.g. JetPack 5's 8.x) weakly typed path, per precision.
LEGACY_FLAGS = {"fp32": [], "fp16": ["--fp16"], "int8": ["--int8", "--fp16"]}


def shape_spec(shape: Sequence[int]) -> str:
    """``(1, 3, 32, 32)`` → ``1x3x32x32`` (trtexec's shape syntax)."""
    if not shape or any(int(d) <= 0 for d in shape):
        raise UsageError(f"invalid shape {tuple(shape)}: every dimension must be a positive integer")
    return "x".join(str(int(d)) for d in shape)


def trtexec_command(onnx_path: str | os.PathLike, engine_path: str | os.PathLike, precision: str = "fp16", *,
                    input_name: str = "input", min_shape: Sequence[int] | None = None,
                    opt_shape: Sequence[int] | None = None, max_shape: Sequence[int] | None = None,
                    workspace_mb: int = 1024, timing_cache: str | os.PathLike | None = None,
                    strongly_typed: bool = True, layer_info: bool = True) -> str:
    """The ``trtexec`` command that builds the same engine as :func:`deploy.engines.tensorrt.build_engine`.

    Args:
        onnx_path: the ONNX model (FP16 / INT8-QDQ for a strongly typed build).
        engine_path: where the serialized engine goes.
        precision: ``fp32``, ``fp16`` or ``int8``.
        input_name: the dynamic-batch input.
        min_shape, opt_shape, max_shape: the optimization profile (all three or none).
        workspace_mb: workspace memory pool limit in MiB.
        timing_cache: timing cache file (default ``ENGINE.timing.cache``).
        strongly_typed: ``True`` for TensorRT >= 10 (precision comes from the ONNX graph);
            ``False`` for the legacy builder flags (TensorRT 8.x).
        layer_info: also export the per-layer information (to check layer precisions on the device).
    """
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision '{precision}'", hint=f"use one of {list(PRECISIONS)}")
    shapes = [min_shape, opt_shape, max_shape]
    if any(s is not None for s in shapes) and not all(s is not None for s in shapes):
        raise UsageError("give all of min/opt/max shapes, or none")
    engine = str(engine_path)
    args = ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={engine}"]
    args += ["--stronglyTyped"] if strongly_typed else LEGACY_FLAGS[precision]
    if min_shape is not None:
        args += [f"--{kind}Shapes={input_name}:{shape_spec(s)}" for kind, s in zip(("min", "opt", "max"), shapes,
                                                                                 strict=True)]
    args.append(f"--memPoolSize=workspace:{int(workspace_mb)}")
    args.append(f"--timingCacheFile={timing_cache or engine + '.timing.cache'}")
    if layer_info:
        args += ["--profilingVerbosity=detailed", f"--exportLayerInfo={engine}.layers.json"]
    args.append("--skipInference")
    return " ".join(shlex.quote(a) for a in args)
