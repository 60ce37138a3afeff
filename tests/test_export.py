"""edgekd.deploy.export + verify: torchvision and edgekd models export (dynamo by default, TorchScript as a
recorded fallback) with parity at batch 1 and 7."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from edgekd.deploy.errors import NonFiniteError, ShapeMismatch, ToleranceExceeded
from edgekd.deploy.export import check_onnx, export_metadata, export_onnx, read_metadata, simplify_onnx
from edgekd.deploy.runtime.preprocess import ImagePreprocessing, from_metadata
from edgekd.deploy.verify import check_parity
from edgekd.models import create_model


def _reference(model):
    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    return run


def _inputs(shape, n=16, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


MODELS = [
    ("torchvision:resnet18", dict(num_classes=10, in_channels=3, input_size=32), (3, 32, 32)),
    ("torchvision:mobilenet_v3_small", dict(num_classes=10, in_channels=3, input_size=32), (3, 32, 32)),
    ("edgekd:cnn", dict(num_classes=10, in_channels=1, input_size=8, channels=[8, 16, 32], hidden=32),
     (1, 8, 8)),
]


@pytest.mark.parametrize(("name", "kwargs", "shape"), MODELS, ids=[m[0] for m in MODELS])
def test_export_parity_at_batch_1_and_7(tmp_path, name, kwargs, shape):
    torch.manual_seed(0)
    model = create_model(name, **kwargs).eval()
    x = _inputs(shape)
    c, h, w = shape
    contract = ImagePreprocessing(h, w, c, (0.0,) * c, (1.0,) * c, channel_order="L" if c == 1 else "RGB")
    meta = export_metadata("0.0-test", source_sha256="ab" * 32, preprocessing=contract, role="student")
    outcome = export_onnx(model, torch.from_numpy(x[:1]), tmp_path / "m.onnx", metadata=meta)
    assert outcome.exporter == "dynamo" and outcome.fallback_reason is None
    report = check_parity(_reference(model), outcome.path, x, batch_sizes=(1, 7))
    assert report.passed and report.max_abs_diff <= 1e-4 and report.batch_sizes == [1, 7]
    assert report.top1_agreement == 1.0 and report.first_divergent is None
    props = read_metadata(outcome.path)
    assert props["edgekd_version"] == "0.0-test" and props["edgekd.exporter"] == "dynamo"
    assert from_metadata(props) == contract and props["role"] == "student"
    assert not list(tmp_path.glob("*.data")), "models under 2 GB are one self-contained file"
    assert not any(n.metadata_props or n.doc_string for n in onnx.load(str(outcome.path)).graph.node), \
        "per-node debug annotations (stack traces, module paths) are stripped"


def test_exported_batch_axis_is_dynamic_and_named(tmp_path):
    model = create_model("edgekd:cnn", **MODELS[2][1]).eval()
    path = export_onnx(model, torch.zeros(1, 1, 8, 8), tmp_path / "m.onnx", input_names=["pixels"],
                       output_names=["scores"], dynamic_axes={"pixels": {0: "batch"}, "scores": {0: "batch"}}).path
    graph = onnx.load(str(path)).graph
    assert graph.input[0].name == "pixels" and graph.output[0].name == "scores"
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


@pytest.mark.parametrize("opset", [13, 18])
def test_opset_is_configurable_and_a_fallback_is_recorded(tmp_path, opset, caplog):
    """The dynamo exporter cannot convert this model down to opset 13: the TorchScript exporter takes over,
    and says so (outcome, metadata, warning) — never silently."""
    import contextlib

    model = create_model("edgekd:cnn", **MODELS[2][1]).eval()
    seen = pytest.warns(DeprecationWarning, match="legacy TorchScript") if opset == 13 else contextlib.nullcontext()
    with seen:  # torch's deprecation of the TorchScript exporter reaches the user: nothing filters it
        outcome = export_onnx(model, torch.zeros(1, 1, 8, 8), tmp_path / "m.onnx", opset=opset)
    model_proto = onnx.load(str(outcome.path))
    assert next(o.version for o in model_proto.opset_import if o.domain in ("", "ai.onnx")) == opset
    check_parity(_reference(model), outcome.path, _inputs((1, 8, 8)))
    if opset == 18:
        assert outcome.exporter == "dynamo" and outcome.fallback_reason is None
    else:
        assert outcome.exporter == "torchscript" and outcome.fallback_reason
        assert read_metadata(outcome.path)["edgekd.exporter"] == "torchscript"
        assert "exporting with torchscript instead" in caplog.text


def test_no_fallback_means_the_exporter_error_surfaces(tmp_path):
    model = create_model("edgekd:cnn", **MODELS[2][1]).eval()
    with pytest.raises(Exception, match="(?i)adapter|version"):
        export_onnx(model, torch.zeros(1, 1, 8, 8), tmp_path / "m.onnx", opset=13, fallback=None)
    assert list(tmp_path.iterdir()) == []


def test_nan_weight_is_refused_and_nothing_written(tmp_path):
    model = create_model("edgekd:cnn", **MODELS[2][1]).eval()
    with torch.no_grad():
        model.head[0].weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="head.0.weight"):
        export_onnx(model, torch.zeros(1, 1, 8, 8), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_simplify_is_verified_and_kept(tmp_path):
    torch.manual_seed(0)
    model = create_model("torchvision:mobilenet_v3_small", **MODELS[1][1]).eval()
    x = _inputs((3, 32, 32), n=8)
    outcome = export_onnx(model, torch.from_numpy(x[:1]), tmp_path / "m.onnx", metadata={"edgekd_version": "t"},
                          simplify=True)
    path = outcome.path
    assert outcome.simplified is not None
    check_onnx(path)
    assert check_parity(_reference(model), path, x).passed
    assert read_metadata(path)["edgekd_version"] == "t"


def test_simplify_rejected_when_parity_fails(tmp_path):
    """A wrong reference makes parity fail: the simplified graph is rejected, the original kept."""
    model = create_model("edgekd:cnn", **MODELS[2][1]).eval()
    path = export_onnx(model, torch.zeros(1, 1, 8, 8), tmp_path / "m.onnx").path
    before = path.read_bytes()
    res = simplify_onnx(path, lambda x: _reference(model)(x) + 1.0, _inputs((1, 8, 8)))
    assert not res.applied and "kept the original" in res.reason
    assert path.read_bytes() == before


def test_parity_failure_names_first_divergent_output(tmp_path):
    model = create_model("edgekd:cnn", **MODELS[2][1]).eval()
    path = export_onnx(model, torch.zeros(1, 1, 8, 8), tmp_path / "m.onnx").path
    with pytest.raises(ToleranceExceeded, match=r"output 'logits' is the first to diverge.*max abs diff 0\.5"):
        check_parity(lambda x: _reference(model)(x) + 0.5, path, _inputs((1, 8, 8)))


def test_parity_compares_every_output(tmp_path):
    """Two outputs; the second one diverges and is the one named."""
    class TwoHeads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.a(x), self.b(x)

    model = TwoHeads().eval()
    path = tmp_path / "two.onnx"
    export_onnx(model, torch.zeros(1, 4), path, input_names=["x"], output_names=["a", "b"],
                dynamic_axes={"x": {0: "n"}, "a": {0: "n"}, "b": {0: "n"}})
    x = _inputs((4,))

    def ref(v):
        with torch.inference_mode():
            a, b = model(torch.from_numpy(v))
        return {"a": a.numpy(), "b": b.numpy() + 1e-2}

    with pytest.raises(ToleranceExceeded, match="output 'b' is the first"):
        check_parity(ref, path, x)
    report = check_parity(lambda v: tuple(t.detach().numpy() for t in model(torch.from_numpy(v))), path, x)
    assert set(report.outputs) == {"a", "b"} and len(report.lines) == 2


def test_static_batch_is_caught(tmp_path):
    model = create_model("edgekd:cnn", **MODELS[2][1]).eval()
    path = tmp_path / "static.onnx"
    torch.onnx.export(model, (torch.zeros(1, 1, 8, 8),), dynamo=True, input_names=["input"],
                      output_names=["logits"]).save(str(path))  # no dynamic_shapes: a fixed batch of 1
    with pytest.raises(ShapeMismatch, match="fixed batch size 1"):
        check_parity(_reference(model), path, _inputs((1, 8, 8)))


def test_a_model_that_fails_parity_is_never_left_on_disk(tmp_path):
    """export_verified gates the temp file; the destination never appears when parity fails."""
    from edgekd.deploy.export import export_verified

    class Drifting(torch.nn.Module):
        """Exports as x*2 but answers PyTorch calls with x*2 + 1 after export (a train/eval mismatch)."""

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, x):
            out = x.flatten(1) * 2 * self.w
            return out if torch.onnx.is_in_onnx_export() else out + 1

    out = tmp_path / "m.onnx"
    x = np.random.default_rng(0).standard_normal((16, 1, 2, 2)).astype(np.float32)
    with pytest.raises(ToleranceExceeded, match=str(out)):
        export_verified(Drifting(), torch.from_numpy(x[:1]), out, x)
    assert list(tmp_path.iterdir()) == []
