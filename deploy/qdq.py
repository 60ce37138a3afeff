"""Explicit Q/DQ graphs: check that an INT8 ONNX model is what TensorRT's explicit quantization and ONNX Runtime's
QDQ kernels both take.

TensorRT 10 (strongly typed) and 11 build INT8 only from explicit QuantizeLinear/DequantizeLinear pairs (the
calibrator API is gone). Its ONNX parser takes:

* zero points 0 (symmetric quantization) on every Q and DQ;
* INT8 on every DequantizeLinear input — no INT32 bias DQ (biases stay float; TensorRT fuses them itself);
* activation scales per tensor; weight scales per tensor or per *output* channel (Conv axis 0, Gemm ``transB=1``
  axis 0, ``transB=0`` / MatMul axis 1);
* scales that are constant and positive.

ONNX Runtime's CPU provider turns ``DQ → Conv/Gemm → Q`` into ``QLinearConv``/``QGemm`` with a float bias as well,
so one file serves both. :func:`check_explicit_qdq` reports each rule as a ✓/✗ line.

Example:
    >>> check = check_explicit_qdq("student-int8-qat.onnx")  # doctest: +SKIP
    >>> check.passed, check.lines
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import numpy as np

#: ops whose second input is a weight: output-channel axis of that weight (Gemm depends on transB)
WEIGHTED = {"Conv": 0, "ConvTranspose": 1, "MatMul": 1, "Gemm": None}


@dataclass
class QdqCheck:
    """What :func:`check_explicit_qdq` found; ``problems`` empty means every rule holds."""

    quantize_nodes: int
    dequantize_nodes: int
    per_channel_weights: int
    per_tensor_weights: int
    per_tensor_activations: int
    float_weight_layers: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def _weight_axis(node) -> int:
    if node.op_type != "Gemm":
        return WEIGHTED[node.op_type]
    trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
    return 0 if trans_b else 1


def _axis(node) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 1)


def check_explicit_qdq(path: str | os.PathLike) -> QdqCheck:
    """Check the Q/DQ nodes of ``path`` against the rules in the module docstring (no TensorRT needed)."""
    import onnx

    from edgekd.deploy.engines.tensorrt import asymmetric_zero_points

    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    qs = [n for n in graph.node if n.op_type == "QuantizeLinear"]
    dqs = [n for n in graph.node if n.op_type == "DequantizeLinear"]
    found: dict[str, list[str]] = {rule: [] for rule in RULES}
    bad_zp = asymmetric_zero_points(model)
    if bad_zp:
        found["zero points"].append(f"non-zero zero points {bad_zp[:3]} (TensorRT needs symmetric INT8)")
    if not qs:
        found["types"].append("no QuantizeLinear nodes: not an explicitly quantized model")
    _check_types(qs, dqs, inits, found["types"])
    _check_scales(qs + dqs, inits, found["scales"])
    per_channel, per_tensor_w, float_layers = _check_weights(graph, dqs, inits, found["weights"])
    check = QdqCheck(len(qs), len(dqs), per_channel, per_tensor_w, len(qs), float_layers,
                     [p for rule in RULES for p in found[rule]])
    check.lines = [f"{'✗' if found[rule] else '✓'} {rule}: {'; '.join(found[rule][:2]) if found[rule] else ok}"
                   for rule, ok in _ok_texts(check).items()]
    return check


RULES = ("zero points", "types", "weights", "scales")


def _ok_texts(c: QdqCheck) -> dict[str, str]:
    return {"zero points": "all 0 (symmetric)",
            "types": f"INT8 only ({c.quantize_nodes} Q, {c.dequantize_nodes} DQ; no INT32 bias)",
            "weights": f"{c.per_channel_weights} per-channel on the output-channel axis, {c.per_tensor_weights} "
                       f"per-tensor; {len(c.float_weight_layers)} layer(s) left in float",
            "scales": f"constant and positive; activations per tensor ({c.per_tensor_activations} quantizers)"}


def _name(node) -> str:
    return node.name or node.output[0]


def _check_types(qs, dqs, inits, problems: list[str]) -> None:
    from onnx import TensorProto

    for q in qs:
        zp = inits.get(q.input[2]) if len(q.input) > 2 else None
        if zp is None or zp.data_type != TensorProto.INT8:
            problems.append(f"QuantizeLinear {_name(q)} does not produce INT8 (its zero point's type decides)")
    for dq in dqs:
        src = inits.get(dq.input[0])
        if src is not None and src.data_type != TensorProto.INT8:
            problems.append(f"DequantizeLinear {_name(dq)} dequantizes {TensorProto.DataType.Name(src.data_type)} "
                            "(TensorRT takes INT8 only; keep biases float)")


def _check_scales(nodes, inits, problems: list[str]) -> None:
    from onnx import numpy_helper

    for node in nodes:
        scale = inits.get(node.input[1])
        if scale is None:
            problems.append(f"{node.op_type} {_name(node)}: scale is not a constant initializer")
        elif not (numpy_helper.to_array(scale) > 0).all():
            problems.append(f"{node.op_type} {_name(node)}: scale not positive")
        elif node.op_type == "QuantizeLinear" and int(np.prod(scale.dims)) > 1:
            problems.append(f"QuantizeLinear {_name(node)}: per-channel activation scales (TensorRT quantizes "
                            "activations per tensor)")


def _check_weights(graph, dqs, inits, problems: list[str]) -> tuple[int, int, list[str]]:
    """Per-channel weight scales must lie on the consumer's output-channel axis; counts and float layers."""
    weights = {dq.output[0]: dq for dq in dqs if dq.input[0] in inits}
    per_channel = per_tensor = 0
    float_layers = []
    for node in (n for n in graph.node if n.op_type in WEIGHTED and len(n.input) > 1):
        dq = weights.get(node.input[1])
        if dq is None:
            if node.input[1] in inits:
                float_layers.append(_name(node))
            continue
        src, scale = inits[dq.input[0]], inits.get(dq.input[1])
        n_scales = int(np.prod(scale.dims)) if scale is not None else 0
        if n_scales <= 1:
            per_tensor += 1
            continue
        want, axis = _weight_axis(node), _axis(dq) % len(src.dims)
        if axis != want or n_scales != src.dims[want]:
            problems.append(f"{node.op_type} {_name(node)}: weight scales along axis {axis} ({n_scales}), not the "
                            f"output-channel axis {want} ({src.dims[want]})")
        per_channel += 1
    return per_channel, per_tensor, float_layers
