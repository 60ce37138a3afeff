"""OpenVINO on the device: a runner with the same protocol as :class:`~edgekd.deploy.runtime.ort.OnnxrtRunner`, so
the harness can measure it against ONNX Runtime and PyTorch rather than assume which is faster on a given CPU.

It reads the ONNX file directly (an INT8 Q/DQ model runs in INT8: OpenVINO's low-precision transformations fold the
Q/DQ pairs). The inference precision is pinned (``f32`` by default): on CPUs with native bf16 (AMX, AVX512-BF16)
OpenVINO would otherwise compute an "FP32" model in bf16. ``batch`` reshapes a dynamic batch axis to a fixed size,
the shape OpenVINO's CPU plugin compiles best. Imports numpy and openvino only (lazily).

Example:
    >>> with OpenVinoRunner("student.onnx", threads=1, batch=1) as runner:  # doctest: +SKIP
    ...     logits = runner.infer({"input": x})["logits"]
"""

from __future__ import annotations

import os

import numpy as np

from edgekd.deploy.errors import require
from edgekd.deploy.runtime.runner import RunnerInfo, TensorSpec


def openvino_module():
    return require("openvino", "openvino", "running models with OpenVINO")


class OpenVinoRunner:
    """The :class:`~edgekd.deploy.runtime.runner.Runner` for OpenVINO (CPU by default)."""

    def __init__(self, model: str | os.PathLike, threads: int | None = None, device: str = "CPU",
                 precision: str = "f32", batch: int | None = None):
        self.model, self.threads, self.device, self.precision, self.batch = model, threads, device, precision, batch
        self.request = None

    def __enter__(self) -> OpenVinoRunner:
        ov = openvino_module()
        self.ov = ov
        core = ov.Core()
        model = core.read_model(str(self.model))
        if self.batch:
            model.reshape({i.get_any_name(): [self.batch, *list(i.get_partial_shape())[1:]] for i in model.inputs})
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": self.precision}
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = int(self.threads)
        self.compiled = core.compile_model(model, self.device, config)
        self.request = self.compiled.create_infer_request()
        self._outputs = [(o.get_any_name(), o) for o in self.compiled.outputs]
        return self

    def __exit__(self, *exc) -> None:
        self.request = self.compiled = None

    def inputs(self) -> list[TensorSpec]:
        return [_spec(i) for i in self.compiled.inputs]

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = self.request.infer(feed)
        return {name: np.array(result[port]) for name, port in self._outputs}

    def bind(self, feed: dict[str, np.ndarray]):
        """``infer`` on tensors set once: the timed call is OpenVINO's own."""
        for name, value in feed.items():
            self.request.set_tensor(name, self.ov.Tensor(np.ascontiguousarray(value)))
        return self.request.infer

    def info(self) -> RunnerInfo:
        return RunnerInfo(f"openvino {self.ov.__version__.split('-')[0]}", (self.device,), (), self.threads, "cpu",
                          {"inference_precision": self.precision, "batch": self.batch})


def _spec(port) -> TensorSpec:
    shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
    return TensorSpec(port.get_any_name(), np.dtype(port.get_element_type().to_dtype()).name, shape)
