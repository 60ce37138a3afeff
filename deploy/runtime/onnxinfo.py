"""Read what an ONNX file declares — inputs, outputs, nodes, tensors, metadata — without the ``onnx`` package.

The device side checks a model before any session exists (:mod:`edgekd.deploy.runtime.intake`), and an app
must not need ``onnx`` (or torch) for that. ONNX files are protocol buffers; this module walks the wire
format directly (varints and length-delimited fields, `protobuf encoding`_) for the handful of
``onnx.proto`` fields the checks need, and skips everything else — weights included, without copying them.

.. _protobuf encoding: https://protobuf.dev/programming-guides/encoding/

Example:
    >>> info = read_onnx("model.onnx")  # doctest: +SKIP
    >>> info.inputs[0].name, info.inputs[0].dims, info.opset("")  # doctest: +SKIP
    ('input', ['batch', 1, 8, 8], 18)
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from edgekd.deploy.errors import InputFileError

# onnx.proto field numbers (https://github.com/onnx/onnx/blob/main/onnx/onnx.proto)
_MODEL = {"ir_version": 1, "producer_name": 2, "graph": 7, "opset_import": 8, "metadata_props": 14,
          "functions": 25}
_GRAPH = {"node": 1, "initializer": 5, "input": 11, "output": 12, "sparse_initializer": 15}
_NODE = {"input": 1, "output": 2, "name": 3, "op_type": 4, "attribute": 5, "domain": 7}
_ATTR = {"t": 5, "g": 6, "tensors": 10, "graphs": 11, "sparse_tensor": 22, "sparse_tensors": 23}
_TENSOR = {"dims": 1, "data_type": 2, "name": 8, "external_data": 13, "data_location": 14}
_FUNCTION = {"name": 1, "node": 7, "domain": 10}
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5

FLOAT16, INT64 = 10, 7
#: Operators that make a graph an INT8 one.
INT8_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
                      "MatMulInteger", "DynamicQuantizeLinear", "QGemm", "QLinearAdd", "DynamicQuantizeLSTM"})
#: TensorProto.DataType values this project names (onnx.TensorProto)
DTYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool", 10: "float16",
          11: "float64", 16: "bfloat16"}


@dataclass(frozen=True)
class ValueInfo:
    """A graph input or output: name, element type and dims (an ``int``, a symbolic name, or ``None``)."""

    name: str
    elem_type: str
    dims: tuple


@dataclass(frozen=True)
class TensorInfo:
    """An initializer or constant tensor; ``external`` is its external-data location, when it has one."""

    name: str
    dims: tuple[int, ...]
    data_type: int
    external: str | None = None


@dataclass(frozen=True)
class NodeInfo:
    name: str
    op_type: str
    domain: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass
class OnnxInfo:
    """What :func:`read_onnx` found; every graph (subgraphs and local functions included) is flattened."""

    path: Path
    ir_version: int = 0
    producer: str = ""
    opsets: dict[str, int] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    inputs: list[ValueInfo] = field(default_factory=list)
    outputs: list[ValueInfo] = field(default_factory=list)
    initializers: list[TensorInfo] = field(default_factory=list)  # main graph's, for parameter counts
    tensors: list[TensorInfo] = field(default_factory=list)  # every tensor of every graph and attribute
    nodes: list[NodeInfo] = field(default_factory=list)  # every node of every graph and function
    functions: set[tuple[str, str]] = field(default_factory=set)
    has_graph: bool = False

    def opset(self, domain: str = "") -> int | None:
        return self.opsets.get(domain, self.opsets.get("ai.onnx") if domain == "" else None)

    @property
    def precision(self) -> str:
        """``int8`` when the graph quantizes (QDQ or integer ops), ``fp16`` with FP16 weights, else ``fp32``."""
        if any(n.op_type in INT8_OPS for n in self.nodes):
            return "int8"
        if any(t.data_type == FLOAT16 for t in self.initializers):
            return "fp16"
        return "fp32"

    @property
    def params(self) -> int:
        """Weights in the main graph's initializers (quantization scales/zero points and int64 shapes left out)."""
        qparams = {i for n in self.nodes if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                   for i in n.inputs[1:]}
        return sum(_numel(t.dims) for t in self.initializers
                   if t.dims and t.name not in qparams and t.data_type != INT64
                   and not t.name.endswith(("_scale", "_zero_point")))

    @property
    def graph_inputs(self) -> list[ValueInfo]:
        """Inputs that are not initializers (what a caller must feed)."""
        inits = {t.name for t in self.initializers}
        return [v for v in self.inputs if v.name not in inits]


def _numel(dims) -> int:
    n = 1
    for d in dims:
        n *= int(d)
    return n


def _varint(buf, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 70:
            raise ValueError("varint too long")


def _fields(buf) -> Iterator[tuple[int, int, object]]:
    """``(field number, wire type, value)``: an ``int`` for scalars, a ``memoryview`` for bytes."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _varint(buf, pos)
        elif wire == _LEN:
            size, pos = _varint(buf, pos)
            if pos + size > end:
                raise ValueError(f"field {number} runs past the end of its message")
            value, pos = buf[pos:pos + size], pos + size
        elif wire == _I64:
            value, pos = int.from_bytes(buf[pos:pos + 8], "little"), pos + 8
        elif wire == _I32:
            value, pos = int.from_bytes(buf[pos:pos + 4], "little"), pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire} (field {number})")
        if pos > end:
            raise ValueError("message truncated")
        yield number, wire, value


def _text(value) -> str:
    return bytes(value).decode("utf-8", errors="replace")


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _entries(value) -> tuple[str, str]:
    """A StringStringEntryProto as ``(key, value)``."""
    key = val = ""
    for number, _, v in _fields(value):
        if number == 1:
            key = _text(v)
        elif number == 2:
            val = _text(v)
    return key, val


def _tensor(value) -> TensorInfo:
    name, dims, dtype, location, external = "", [], 0, 0, {}
    for number, wire, v in _fields(value):
        if number == _TENSOR["name"]:
            name = _text(v)
        elif number == _TENSOR["dims"]:
            dims += _packed(v) if wire == _LEN else [_signed(v)]
        elif number == _TENSOR["data_type"]:
            dtype = v
        elif number == _TENSOR["data_location"]:
            location = v
        elif number == _TENSOR["external_data"]:
            k, val = _entries(v)
            external[k] = val
    ext = external.get("location", "") if location == 1 else None
    return TensorInfo(name, tuple(dims), dtype, ext)


def _packed(value) -> list[int]:
    out, pos = [], 0
    while pos < len(value):
        v, pos = _varint(value, pos)
        out.append(_signed(v))
    return out


def _value_info(value) -> ValueInfo:
    name, elem, dims = "", 0, []
    for number, _, v in _fields(value):
        if number == 1:
            name = _text(v)
        elif number == 2:  # TypeProto
            for n2, _, tensor_type in _fields(v):
                if n2 == 1:  # TypeProto.Tensor
                    elem, dims = _tensor_type(tensor_type)
    return ValueInfo(name, DTYPES.get(elem, f"type{elem}"), tuple(dims))


def _tensor_type(value) -> tuple[int, list]:
    elem, dims = 0, []
    for number, _, v in _fields(value):
        if number == 1:
            elem = v
        elif number == 2:  # TensorShapeProto
            for n2, _, dim in _fields(v):
                if n2 == 1:
                    dims.append(_dimension(dim))
    return elem, dims


def _dimension(value):
    out = None
    for number, _, v in _fields(value):
        if number == 1:
            out = _signed(v)
        elif number == 2:
            out = _text(v)
    return out


class _Walker:
    """Collects nodes and tensors from the main graph, every subgraph and every local function."""

    def __init__(self, info: OnnxInfo):
        self.info = info

    def graph(self, value, main: bool = False) -> None:
        for number, _, v in _fields(value):
            if number == _GRAPH["node"]:
                self.node(v)
            elif number == _GRAPH["initializer"]:
                t = _tensor(v)
                self.info.tensors.append(t)
                if main:
                    self.info.initializers.append(t)
            elif number == _GRAPH["sparse_initializer"]:
                self.sparse(v)
            elif main and number == _GRAPH["input"]:
                self.info.inputs.append(_value_info(v))
            elif main and number == _GRAPH["output"]:
                self.info.outputs.append(_value_info(v))

    def sparse(self, value) -> None:
        for number, _, v in _fields(value):
            if number in (1, 2):  # values, indices
                self.info.tensors.append(_tensor(v))

    def node(self, value) -> None:
        name = op = domain = ""
        inputs, outputs = [], []
        for number, _, v in _fields(value):
            if number == _NODE["input"]:
                inputs.append(_text(v))
            elif number == _NODE["output"]:
                outputs.append(_text(v))
            elif number == _NODE["name"]:
                name = _text(v)
            elif number == _NODE["op_type"]:
                op = _text(v)
            elif number == _NODE["domain"]:
                domain = _text(v)
            elif number == _NODE["attribute"]:
                self.attribute(v)
        self.info.nodes.append(NodeInfo(name, op, domain, tuple(inputs), tuple(outputs)))

    def attribute(self, value) -> None:
        for number, _, v in _fields(value):
            if number in (_ATTR["t"], _ATTR["tensors"]):
                self.info.tensors.append(_tensor(v))
            elif number in (_ATTR["g"], _ATTR["graphs"]):
                self.graph(v)
            elif number in (_ATTR["sparse_tensor"], _ATTR["sparse_tensors"]):
                self.sparse(v)

    def function(self, value) -> None:
        name = domain = ""
        for number, _, v in _fields(value):
            if number == _FUNCTION["name"]:
                name = _text(v)
            elif number == _FUNCTION["domain"]:
                domain = _text(v)
            elif number == _FUNCTION["node"]:
                self.node(v)
        self.info.functions.add((domain, name))


def parse_onnx(data, path: str | os.PathLike = "<bytes>") -> OnnxInfo:
    """Parse serialized ModelProto bytes; raises ``ValueError`` when they are not one."""
    buf = memoryview(data)
    info = OnnxInfo(Path(path))
    walker = _Walker(info)
    for number, wire, v in _fields(buf):
        if number == _MODEL["graph"] and wire == _LEN:
            info.has_graph = True
            walker.graph(v, main=True)
        elif number == _MODEL["opset_import"] and wire == _LEN:
            domain, version = "", 0
            for n2, _, v2 in _fields(v):
                if n2 == 1:
                    domain = _text(v2)
                elif n2 == 2:
                    version = v2
            info.opsets[domain] = version
        elif number == _MODEL["metadata_props"] and wire == _LEN:
            key, val = _entries(v)
            info.metadata[key] = val
        elif number == _MODEL["functions"] and wire == _LEN:
            walker.function(v)
        elif number == _MODEL["ir_version"] and wire == _VARINT:
            info.ir_version = v
        elif number == _MODEL["producer_name"] and wire == _LEN:
            info.producer = _text(v)
    return info


def read_onnx(path: str | os.PathLike) -> OnnxInfo:
    """Read an ONNX file's structure (external data is never opened).

    Raises:
        InputFileError: the file is not a serialized ONNX model.
    """
    path = Path(path)
    if path.stat().st_size == 0:
        raise InputFileError(f"{path} is empty (0 bytes), not an ONNX model", hint="re-create or re-download it")
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)  # weights are skipped, never copied
    try:
        info = parse_onnx(mm, path)
    except ValueError as exc:
        raise InputFileError(f"{path} is not a valid ONNX model ({exc})",
                             hint="re-export it; the file may be truncated or of another format") from None
    finally:
        with contextlib.suppress(BufferError):  # a view still held by a traceback: the GC closes it
            mm.close()
    return info
