"""Preprocessing inside the model: a graph that takes raw ``uint8`` pixels, so an app feeds decoded image bytes.

Apps that re-implement normalisation get it wrong (a digits bundle fed 0–255 pixels instead of 0–16 drops to
~48 % top-1). :func:`add_raw_pixel_input` puts the contract's arithmetic in front of any classifier ONNX file —
FP32, FP16 or INT8 Q/DQ alike, which is why it edits the graph rather than wrapping a PyTorch module (the bundle
usually ships a quantized model that was never a module):

``uint8 pixels (N, H, W, C) or (N, C, H, W) → Transpose (NHWC only) → Cast(float) → Mul(scale) → Sub(mean) →
Div(std) → the original input``

— the same float32 operations, in the same order, as :meth:`ImagePreprocessing.apply`, so the logits match
external preprocessing exactly. The input keeps its name; the file's ``edgekd.preprocessing`` metadata becomes the
raw-pixel contract (``in_graph: true``, ``pixel_dtype: uint8``, the layout). Datasets whose pixels are not 0–255
(scikit-learn's digits: 0–16) get the range folded into the scale: the model always takes 8-bit pixels, what an
image decoder gives. Resizing and cropping stay outside (the contract still says how).

Example:
    >>> contract = add_raw_pixel_input("student-int8.onnx", "student-raw.onnx", pre, layout="NHWC")  # doctest: +SKIP
    >>> session.run(None, {"input": np.asarray(Image.open("shoe.png"))[None, ..., None]})  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from edgekd.deploy.errors import UsageError
from edgekd.deploy.fileio import atomic_write_via
from edgekd.deploy.runtime.preprocess import ImagePreprocessing

LAYOUTS = ("NHWC", "NCHW")
PREFIX = "edgekd_pixels"


def raw_pixel_contract(pre: ImagePreprocessing, layout: str = "NHWC") -> ImagePreprocessing:
    """The contract of the raw-pixel model: 8-bit pixels (0–255) in ``layout``, normalised inside the graph."""
    if layout not in LAYOUTS:
        raise UsageError(f"raw-pixel layout {layout!r} is not one of {LAYOUTS}")
    if pre.in_graph:
        raise UsageError("the model already takes raw pixels (its preprocessing is in the graph)")
    if pre.pixel_max is None:
        raise UsageError("this data has no pixel range (a factory's already-normalised tensors): a raw-pixel input "
                         "cannot be derived", hint="give the data source an ImagePreprocessing with pixel_max")
    return dataclasses.replace(pre, pixel_min=0.0, pixel_max=255.0, scale=pre.scale * pre.pixel_max / 255.0,
                               pixel_dtype="uint8", layout=layout, in_graph=True)


def float_contract(raw: ImagePreprocessing) -> ImagePreprocessing:
    """The same arithmetic done outside the model (what the graph prefix replaces), for parity checks."""
    return dataclasses.replace(raw, pixel_dtype="float32", layout="NCHW", in_graph=False)


def add_raw_pixel_input(src: str | os.PathLike, dst: str | os.PathLike, pre: ImagePreprocessing,
                        layout: str = "NHWC") -> ImagePreprocessing:
    """Write ``dst``: ``src`` behind a uint8-pixel prefix (module docstring); returns the raw-pixel contract."""
    import onnx

    raw = raw_pixel_contract(pre, layout)
    model = onnx.load(str(src))
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    inp = next(i for i in graph.input if i.name not in inits)
    name, inner = inp.name, f"{PREFIX}_normalized"
    _rename_uses(graph, name, inner)
    elem = inp.type.tensor_type.elem_type
    batch = inp.type.tensor_type.shape.dim[0]
    c, h, w = raw.channels, raw.height, raw.width
    dims = (h, w, c) if layout == "NHWC" else (c, h, w)
    new_input = onnx.helper.make_tensor_value_info(name, onnx.TensorProto.UINT8,
                                                   [batch.dim_param or batch.dim_value or "batch", *dims])
    graph.input.remove(inp)
    graph.input.insert(0, new_input)
    nodes, consts = _prefix_nodes(name, inner, raw, layout, elem)
    graph.initializer.extend(consts)
    ordered = _topological([*nodes, *graph.node], {i.name for i in graph.input} | inits | {i.name for i in consts})
    del graph.node[:]
    graph.node.extend(ordered)
    _set_metadata(model, raw)

    def write(tmp: Path) -> None:
        onnx.save_model(model, str(tmp), save_as_external_data=False)
        onnx.checker.check_model(str(tmp), full_check=True)

    atomic_write_via(dst, write)
    return raw


def _topological(nodes: list, available: set[str]) -> list:
    """Nodes in an order where each runs after its inputs' producers (some converters append nodes out of order,
    e.g. the FP16 converter's input Cast); the original order is kept where it already holds."""
    ready, pending, out = set(available) | {""}, list(nodes), []
    while pending:
        rest = [n for n in pending if not all(i in ready for i in n.input)]
        done = [n for n in pending if all(i in ready for i in n.input)]
        if not done:  # inputs from outer scopes or a cycle: leave the rest as it was
            return out + rest
        for n in done:
            out.append(n)
            ready.update(n.output)
        pending = rest
    return out


def _rename_uses(graph, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if i == old else i for i in node.input]
        for attr in node.attribute:
            for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                _rename_uses(g, old, new)


def _prefix_nodes(name: str, inner: str, raw: ImagePreprocessing, layout: str, elem: int) -> tuple[list, list]:
    import onnx
    from onnx import numpy_helper

    shape = (1, raw.channels, 1, 1)
    consts = [numpy_helper.from_array(np.asarray(raw.scale, np.float32), f"{PREFIX}_scale"),
              numpy_helper.from_array(np.asarray(raw.mean, np.float32).reshape(shape), f"{PREFIX}_mean"),
              numpy_helper.from_array(np.asarray(raw.std, np.float32).reshape(shape), f"{PREFIX}_std")]
    make = onnx.helper.make_node
    nodes, x = [], name
    if layout == "NHWC":
        nodes.append(make("Transpose", [x], [f"{PREFIX}_nchw"], perm=[0, 3, 1, 2], name=f"{PREFIX}_transpose"))
        x = f"{PREFIX}_nchw"
    last = inner if elem == onnx.TensorProto.FLOAT else f"{PREFIX}_float"
    nodes += [make("Cast", [x], [f"{PREFIX}_cast"], to=onnx.TensorProto.FLOAT, name=f"{PREFIX}_cast"),
              make("Mul", [f"{PREFIX}_cast", f"{PREFIX}_scale"], [f"{PREFIX}_scaled"], name=f"{PREFIX}_mul"),
              make("Sub", [f"{PREFIX}_scaled", f"{PREFIX}_mean"], [f"{PREFIX}_centred"], name=f"{PREFIX}_sub"),
              make("Div", [f"{PREFIX}_centred", f"{PREFIX}_std"], [last], name=f"{PREFIX}_div")]
    if last != inner:  # a model whose input is not float32 (e.g. float16 I/O) gets its own type
        nodes.append(make("Cast", [last], [inner], to=elem, name=f"{PREFIX}_cast_out"))
    return nodes, consts


def _set_metadata(model, raw: ImagePreprocessing) -> None:
    for key, value in raw.metadata().items():
        prop = next((p for p in model.metadata_props if p.key == key), None) or model.metadata_props.add()
        prop.key, prop.value = key, value


def check_raw_pixel_parity(plain: str | os.PathLike, raw_model: str | os.PathLike, raw: ImagePreprocessing,
                           images: np.ndarray | None = None, *, precision: str = "fp32", samples: int = 32):
    """``raw_model`` on uint8 pixels vs the ``plain`` model on the same pixels preprocessed outside, by the same
    arithmetic (:func:`float_contract`); ``images`` default to seeded random 8-bit images. Returns the
    :class:`~edgekd.deploy.verify.ParityReport`; raises ``ToleranceExceeded`` on a mismatch."""
    from edgekd.deploy.runtime.ort import OnnxrtRunner
    from edgekd.deploy.verify import check_parity

    if images is None:
        h, w, c = raw.height, raw.width, raw.channels
        images = np.random.default_rng(0).integers(0, 256, (samples, h, w, c), dtype=np.uint8)
    outside = float_contract(raw)
    with OnnxrtRunner(plain, "cpu") as runner:
        name = runner.inputs()[0].name

        def reference(pixels):
            return next(iter(runner.infer({name: outside.apply(pixels)}).values()))

        return check_parity(reference, raw_model, raw.apply(images), precision=precision,
                            min_agreement=1.0 if precision == "int8" else None, label=str(raw_model))
