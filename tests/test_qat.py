"""Quantization-aware distillation (edgekd.distill.qat, the quantize mode `qat`) and the explicit-Q/DQ check
(edgekd.deploy.qdq): fake quantization that trains, a Q/DQ export that ONNX Runtime runs like the fake-quant model,
and the TensorRT rules (symmetric, INT8-only DQ, per-channel weights on the output-channel axis)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import torch.nn as nn

from edgekd.deploy.qdq import check_explicit_qdq
from edgekd.distill.qat import QMAX, QuantAct, QuantLayer, calibrate, export_qat, freeze, prepare_qat
from edgekd.models import create_model
from tests.conftest import TINY, run_cli, stage_artifact


@pytest.fixture(scope="module")
def digits_qat():
    """A briefly trained digits CNN (with BatchNorm), its data, and a calibrated fake-quant copy."""
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    d = load_digits()
    x = torch.from_numpy(((d.images.astype(np.float32) / 16.0 - 0.3) / 0.37)[:, None])
    y = torch.from_numpy(d.target.astype(np.int64))
    model = create_model("edgekd:cnn", num_classes=10, in_channels=1, input_size=8, channels=[8, 16, 32], hidden=32)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(3):
        for i in range(0, 1200, 64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i:i + 64]), y[i:i + 64]).backward()
            opt.step()
    model.eval()
    qmodel = prepare_qat(model, x[:2])
    calibrate(qmodel, [x[i:i + 128] for i in range(0, 512, 128)])
    return {"model": model, "qmodel": qmodel, "x": x, "y": y}


def test_prepare_folds_batchnorm_and_quantizes_every_layer(digits_qat):
    q, model, x = digits_qat["qmodel"], digits_qat["model"], digits_qat["x"]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in q.modules())
    layers = [m for m in q.modules() if isinstance(m, QuantLayer)]
    assert len(layers) == 5  # 3 convs, 2 linears
    assert [m.output_q is None for m in layers] == [False] * 4 + [True]  # float logits from the last layer only
    for act in (a for m in layers for a in (m.input_q, m.output_q) if a is not None):
        assert float(act.scale.detach()) == pytest.approx(max(float(act.amax), 1e-8) / QMAX)
    with torch.no_grad():
        fp32, fake = model(x[1200:]), q.eval()(x[1200:])
    # symmetric INT8 stays close to the float model on a trained network (the post-training start point)
    assert (fp32.argmax(1) == fake.argmax(1)).float().mean() > 0.9
    assert not torch.equal(fp32, fake)  # ... but it is quantized


def test_lsq_scale_learns_and_rounding_is_straight_through():
    act = QuantAct().train()
    act.scale.data.fill_(0.1)
    x = torch.tensor([0.04, 0.26, -0.31, 20.0], requires_grad=True)  # the last one clips at 127 · 0.1
    y = act(x)
    assert torch.allclose(y.detach(), torch.tensor([0.0, 0.3, -0.3, 12.7]), atol=1e-6)
    y.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 1.0, 0.0]  # straight-through inside the range, zero where clipped
    assert act.scale.grad is not None and float(act.scale.grad) != 0.0


def test_qat_export_is_explicit_symmetric_qdq_with_parity(digits_qat, tmp_path):
    import onnx
    from onnx import TensorProto

    from edgekd.deploy.engines.tensorrt import asymmetric_zero_points
    from edgekd.deploy.runtime.ort import OnnxrtRunner

    q, x = digits_qat["qmodel"], digits_qat["x"]
    q.train()
    opt = torch.optim.Adam(q.parameters(), 1e-4)
    for i in range(0, 256, 64):  # a few QAT steps: weights and scales move, the export must follow them
        opt.zero_grad()
        nn.functional.cross_entropy(q(x[i:i + 64]), digits_qat["y"][i:i + 64]).backward()
        opt.step()
    q.eval()
    done = export_qat(q, x[:1], tmp_path / "qat.onnx", x[1200:].numpy())
    assert done.exporter == "dynamo" and done.qdq.passed and done.parity.passed, done.qdq.lines
    assert done.parity.top1_agreement >= 0.99  # the graph as ONNX defines it computes the fake-quant model
    assert done.kernels["top1_agreement"] >= 0.95  # ONNX Runtime's fused integer kernels: recorded, close
    model = onnx.load(str(tmp_path / "qat.onnx"))
    assert asymmetric_zero_points(model) == []
    inits = {i.name: i for i in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm")]
    for node in convs:  # every weight is an INT8 initializer behind a per-output-channel DequantizeLinear
        dq = next(n for n in model.graph.node if node.input[1] in n.output)
        assert dq.op_type == "DequantizeLinear" and inits[dq.input[0]].data_type == TensorProto.INT8
        assert list(inits[dq.input[1]].dims) == [inits[dq.input[0]].dims[0]]
    assert not any(i.data_type == TensorProto.FLOAT and len(i.dims) > 1 for i in inits.values())  # no float weights
    assert {p.key: p.value for p in model.metadata_props}["edgekd.precision"] == "int8"
    with OnnxrtRunner(tmp_path / "qat.onnx", "cpu") as runner, torch.no_grad():
        got = runner.infer({"input": x[1200:].numpy()})["logits"]
        ref = freeze(q)(x[1200:]).numpy()
    diff = np.abs(got - ref)
    assert (diff < 1e-5).mean() > 0.5 and diff.mean() < 0.05  # mostly bit-exact; rare rounding-boundary steps


def test_qdq_check_flags_what_tensorrt_rejects(digits_student, tmp_path):
    """ONNX Runtime's static INT8: asymmetric activations (x86 presets) and INT32 bias DQ (ORT's default) are flagged;
    the tensorrt preset (symmetric, float biases) passes."""
    from edgekd.deploy.quantize import quantize_static

    x = digits_student["calib"]
    quantize_static(digits_student["path"], tmp_path / "vnni.onnx", x, preset="x86-vnni")
    quantize_static(digits_student["path"], tmp_path / "trt.onnx", x, preset="tensorrt")
    vnni, trt = check_explicit_qdq(tmp_path / "vnni.onnx"), check_explicit_qdq(tmp_path / "trt.onnx")
    assert not vnni.passed and vnni.lines[0].startswith("✗ zero points")
    assert any("INT32" in p for p in vnni.problems)  # ORT quantizes biases to INT32 unless told not to
    assert trt.passed, trt.problems
    assert not check_explicit_qdq(digits_student["path"]).passed  # a float model is not explicit Q/DQ


@pytest.mark.slow
def test_pipeline_qat_mode_makes_a_candidate(tiny_run, tmp_path):
    """`--stages quantize` with quantize.qat_when=always on a copy of the shared tiny run: a QAT candidate whose
    validation top-1 was measured in ONNX Runtime, with its Q/DQ check and parity recorded."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    args = ["run", "--out", str(run), "-q", "--stages", "quantize"]
    for o in [*TINY, "quantize.modes=[qat]", "quantize.qat_when=always", "quantize.qat_epochs=1"]:
        args += ["--set", o]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    art = stage_artifact(run, "quantize")
    (model,) = art["models"]
    assert model["name"] == "student-onnx-int8-qat" and model["variant"] == "qat" and model["precision"] == "int8"
    assert 0.0 <= model["details"]["val_top1"] <= 1.0 and model["details"]["tensorrt_ready"] is True
    attempt = art["attempts"]["qat"]
    assert attempt["decision"] == "qat" and attempt["exporter"] == "dynamo" and attempt["parity"]["passed"]
    assert (run / model["file"]["path"]).is_file()


def test_pipeline_qat_skipped_when_post_training_is_good(tiny_run):
    """The default run lists `qat` but trains only when post-training INT8 misses the tolerance (recorded)."""
    attempt = stage_artifact(tiny_run, "quantize")["attempts"]["qat"]
    assert attempt["decision"] in ("skipped", "qat")
    missed = attempt["float_val_top1"] - attempt["start_val_top1"] > 0.01 + 1e-12
    assert (attempt["decision"] == "qat") == missed
