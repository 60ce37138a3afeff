"""Tiny ONNX models built with ``onnx.helper`` (no torch): test fixtures and the overhead-floor suite.

Example:
    >>> path = make_tiny_cnn("tiny.onnx")  # doctest: +SKIP
    >>> path = make_identity("empty.onnx")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgekd.deploy.fileio import write_bytes


def make_tiny_cnn(path: str | os.PathLike, *, in_channels: int = 1, input_size: int = 8, channels: int = 8,
                  num_classes: int = 10, seed: int = 0, batch: int | str = "N", opset: int = 17) -> Path:
    """Conv3x3 → ReLU → global average pool → flatten → Gemm, random weights; input ``input``, output ``logits``.

    ``batch`` is a symbolic name (dynamic batch) or an int (fixed batch).
    """
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = rng.standard_normal((channels, in_channels, 3, 3)).astype(np.float32) * 0.5
    b = rng.standard_normal(channels).astype(np.float32) * 0.1
    fc = rng.standard_normal((num_classes, channels)).astype(np.float32)
    fc_b = rng.standard_normal(num_classes).astype(np.float32) * 0.1
    nodes = [helper.make_node("Conv", ["input", "w", "b"], ["c"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"], axis=1),
             helper.make_node("Gemm", ["f", "fc", "fc_b"], ["logits"], transB=1)]
    inits = [numpy_helper.from_array(a, n) for a, n in ((w, "w"), (b, "b"), (fc, "fc"), (fc_b, "fc_b"))]
    graph = helper.make_graph(
        nodes, "tiny_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, in_channels, input_size, input_size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, num_classes])], inits)
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), path)


def make_identity(path: str | os.PathLike, *, shape: tuple[int, ...] = (1, 8, 8), opset: int = 17) -> Path:
    """A near-empty model (one ``Identity``): what a ``session.run`` costs with no compute at all."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["logits"])], "identity",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", *shape])])
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), path)


def _save(model, path: str | os.PathLike) -> Path:
    import onnx

    model.ir_version = min(model.ir_version, 9)  # loadable by older onnxruntime builds on devices
    onnx.checker.check_model(model, full_check=True)
    return write_bytes(path, model.SerializeToString())
