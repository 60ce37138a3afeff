"""ONNX Runtime on the device: a session factory that reports provider fallback, and a runner.

Imports numpy and onnxruntime only.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, field

import numpy as np

from edgekd.deploy.errors import UsageError, require
from edgekd.deploy.runtime.runner import ORT_DTYPES, RunnerInfo, TensorSpec

log = logging.getLogger(__name__)

#: Short names users type, mapped to ONNX Runtime provider names.
PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "dml": "DmlExecutionProvider",
}
GRAPH_OPT = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
             "all": "ORT_ENABLE_ALL"}


@dataclass
class SessionInfo:
    """What really runs: the providers asked for, those active, and any fallback (never silent)."""

    requested: list[str]
    active: list[str]
    fallback: list[str] = field(default_factory=list)
    threads: int | None = None
    graph_optimization: str = "all"


def ort_module():
    return require("onnxruntime", "ort", "running ONNX models")


def resolve_providers(names: list[str] | str | None) -> list[str]:
    """Map short names (``cpu``, ``cuda``...) or full names to ORT provider names, CPU always last."""
    if names is None or names == "" or names == []:
        return ["CPUExecutionProvider"]
    if isinstance(names, str):
        names = [n for n in names.split(",") if n]
    out = []
    for name in names:
        full = PROVIDERS.get(name.lower(), name)
        if not full.endswith("ExecutionProvider"):
            raise UsageError(f"unknown execution provider '{name}'",
                             hint=f"use one of {sorted(set(PROVIDERS))} or a full ORT provider name")
        out.append(full)
    if "CPUExecutionProvider" not in out:
        out.append("CPUExecutionProvider")
    return out


def create_session(model: str | os.PathLike | bytes, providers=None, threads: int | None = None,
                   graph_optimization: str = "all", optimized_model_path: str | os.PathLike | None = None):
    """Create an ``InferenceSession`` and say which providers really run.

    Example:
        >>> sess, info = create_session("model.onnx", providers="cuda")  # doctest: +SKIP
        >>> info.fallback   # ['CUDAExecutionProvider'] when CUDA is not available here
    """
    ort = ort_module()
    requested = resolve_providers(providers)
    available = set(ort.get_available_providers())
    usable = [p for p in requested if p in available]
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    if graph_optimization not in GRAPH_OPT:
        raise UsageError(f"unknown graph optimization level '{graph_optimization}'",
                         hint=f"use one of {list(GRAPH_OPT)}")
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, GRAPH_OPT[graph_optimization])
    if optimized_model_path:
        opts.optimized_model_filepath = str(optimized_model_path)
    opts.log_severity_level = 3
    src = model if isinstance(model, bytes) else str(model)
    session = ort.InferenceSession(src, sess_options=opts, providers=usable)
    active = list(session.get_providers())
    fallback = [p for p in requested if p not in active]
    info = SessionInfo(requested, active, fallback, threads, graph_optimization)
    if fallback:
        log.warning("execution provider(s) %s not used (available here: %s); running on %s",
                    fallback, sorted(available), active)
    return session, info


class OnnxrtRunner:
    """The :class:`~edgekd.deploy.runtime.runner.Runner` for ONNX Runtime.

    Example:
        >>> with OnnxrtRunner("student.onnx", threads=1) as runner:  # doctest: +SKIP
        ...     logits = runner.infer({"input": x})["logits"]
    """

    def __init__(self, model: str | os.PathLike | bytes, providers=None, threads: int | None = None,
                 graph_optimization: str = "all"):
        self.model, self.providers, self.threads, self.graph_optimization = (
            model, providers, threads, graph_optimization)
        self.session = None
        self.session_info: SessionInfo | None = None

    def __enter__(self) -> OnnxrtRunner:
        self.session, self.session_info = create_session(self.model, self.providers, self.threads,
                                                         self.graph_optimization)
        self._outputs = [o.name for o in self.session.get_outputs()]
        return self

    def __exit__(self, *exc) -> None:
        self.session = None

    def inputs(self) -> list[TensorSpec]:
        return [_spec(i) for i in self.session.get_inputs()]

    def outputs(self) -> list[TensorSpec]:
        return [_spec(o) for o in self.session.get_outputs()]

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._outputs, self.session.run(None, feed), strict=True))

    def bind(self, feed: dict[str, np.ndarray]):
        """``session.run`` with the feed bound: no wrapper of ours inside the timed call."""
        return functools.partial(self.session.run, None, feed)

    def info(self) -> RunnerInfo:
        s = self.session_info
        return RunnerInfo(f"onnxruntime {onnxruntime_version()}", tuple(s.active), tuple(s.fallback), s.threads,
                          "cuda" if any("CUDA" in p or "Tensorrt" in p for p in s.active) else "cpu",
                          {"graph_optimization": s.graph_optimization})


def _spec(arg) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) and d > 0 else (d or None) for d in (arg.shape or []))
    return TensorSpec(arg.name, ORT_DTYPES.get(arg.type, "float32"), shape)


def onnxruntime_version() -> str | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime.__version__
