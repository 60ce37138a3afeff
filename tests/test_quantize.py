"""deploy.quantize: static INT8 (each calibration method), presets, dynamic INT8, FP16, typed failures."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekd.deploy.errors import UsageError
from edgekd.deploy.quantize import (
    METHODS,
    PRESETS,
    QuantizationFailed,
    convert_fp16,
    quantize,
    quantize_dynamic,
    quantize_static,
    resolve_preset,
)
from edgekd.deploy.runtime.ort import create_session


@pytest.fixture(scope="module")
def student(digits_student):
    return digits_student


def _top1(path, x, y) -> float:
    session, _ = create_session(path, "cpu")
    return float((session.run(None, {session.get_inputs()[0].name: x})[0].argmax(1) == y).mean())


def _initializers(path) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}


@pytest.mark.parametrize("method", list(METHODS))
def test_static_int8_each_method_runs_and_keeps_accuracy(student, tmp_path, method):
    out = tmp_path / f"int8-{method}.onnx"
    res = quantize_static(student["path"], out, student["calib"], method=method, preset="x86")
    model = onnx.load(str(out))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and res.format == "QDQ" and res.precision == "int8"
    conv_w = [v for k, v in _initializers(out).items() if v.dtype == np.int8 and v.ndim == 4]
    assert conv_w, "conv weights should be stored as int8"
    scales = [v for k, v in _initializers(out).items() if k.endswith("_scale") and v.ndim == 1 and v.size > 1]
    assert scales, "weights should be quantized per channel"
    fp32, int8 = (_top1(p, student["val_x"], student["val_y"]) for p in (student["path"], out))
    assert int8 >= fp32 - 0.03
    props = {p.key: p.value for p in model.metadata_props}
    assert props["edgekd.version"] == "test" and props["edgekd.precision"] == "int8"
    assert json.loads(props["edgekd.quantization"])["method"] == method
    assert res.calib_samples == len(student["calib"]) and not res.warnings and res.preprocessed


def test_x86_preset_uses_reduce_range_and_unsigned_activations(student, tmp_path):
    res = quantize_static(student["path"], tmp_path / "x86.onnx", student["calib"], preset="x86")
    assert res.settings["reduce_range"] and res.settings["activation_type"] == "uint8"
    zps = [v for k, v in _initializers(res.path).items() if k.endswith("zero_point")]
    assert any(z.dtype == np.uint8 for z in zps)
    weights = [v for v in _initializers(res.path).values() if v.dtype == np.int8 and v.ndim == 4]
    assert all(np.abs(w).max() <= 64 for w in weights), "reduce_range keeps weights in 7 bits"


def test_tensorrt_preset_is_symmetric(student, tmp_path):
    res = quantize_static(student["path"], tmp_path / "trt.onnx", student["calib"], preset="tensorrt")
    zps = [v for k, v in _initializers(res.path).items() if k.endswith("zero_point")]
    assert zps and all(not z.any() for z in zps), "TensorRT needs zero points 0"
    assert all(z.dtype in (np.int8, np.int32) for z in zps), "S8S8 (int32 only for biases)"
    assert res.settings["activation_symmetric"] and res.settings["weight_symmetric"]


@pytest.mark.parametrize(("isa", "expected"), [
    ({"arch": "x86_64", "avx2": True, "vnni": False}, "x86"),
    ({"arch": "x86_64", "avx2": True, "avx512": True, "vnni": True}, "x86-vnni"),
    ({"arch": "aarch64", "neon": True}, "arm64"),
])
def test_auto_preset_follows_the_cpu(isa, expected):
    assert resolve_preset("auto", isa).name == expected


def test_auto_preset_recorded_with_isa(student, tmp_path):
    res = quantize_static(student["path"], tmp_path / "auto.onnx", student["calib"])
    assert res.preset in PRESETS and {"avx2", "vnni", "neon", "arch"} <= set(res.cpu_isa)


def test_few_calibration_samples_warn(student, tmp_path):
    res = quantize_static(student["path"], tmp_path / "few.onnx", student["calib"][:20])
    assert any("20 calibration samples" in w for w in res.warnings)


def test_bad_arguments_are_usage_errors(student, tmp_path):
    with pytest.raises(UsageError, match="calibration method"):
        quantize_static(student["path"], tmp_path / "a.onnx", student["calib"], method="kl")
    with pytest.raises(UsageError, match="preset"):
        quantize_static(student["path"], tmp_path / "a.onnx", student["calib"], preset="riscv")
    with pytest.raises(UsageError, match="shape"):
        quantize_static(student["path"], tmp_path / "a.onnx", student["calib"][:, :, :4])
    with pytest.raises(UsageError, match="calibration data"):
        quantize("static", student["path"], tmp_path / "a.onnx")
    assert not (tmp_path / "a.onnx").exists()


def _two_inputs(tmp_path):
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 4])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 4])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["s"]),
                               helper.make_node("MatMul", ["s", "w"], ["y"])], "g", [a, b], [out], [w])
    src = tmp_path / "two.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(src))
    return src


def test_quantizer_failure_is_typed_and_leaves_no_file(tmp_path):
    """Integer calibration data for float inputs: ONNX Runtime fails inside calibration."""
    src = _two_inputs(tmp_path)
    feed = {"a": np.ones((128, 4), np.int32), "b": np.ones((128, 4), np.int32)}
    with pytest.raises(QuantizationFailed) as info:
        quantize_static(src, tmp_path / "out.onnx", feed)
    assert info.value.step == "quantize_static" and "step 'quantize_static'" in info.value.message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two.onnx"]


def test_several_inputs_are_calibrated_from_a_feed(tmp_path):
    src = _two_inputs(tmp_path)
    with pytest.raises(UsageError, match=r"lacks input\(s\) \['b'\]"):
        quantize_static(src, tmp_path / "out.onnx", np.ones((128, 4), np.float32))
    feed = {"a": np.random.default_rng(0).standard_normal((128, 4)).astype(np.float32),
            "b": np.random.default_rng(1).standard_normal((128, 4)).astype(np.float32)}
    res = quantize_static(src, tmp_path / "out.onnx", feed)
    assert res.calib_samples == 128 and (tmp_path / "out.onnx").is_file()


def test_dynamic_int8_runs(student, tmp_path):
    res = quantize_dynamic(student["path"], tmp_path / "dyn.onnx", sample=student["calib"][:2])
    assert res.mode == "dynamic" and res.precision == "int8"
    assert _top1(res.path, student["val_x"], student["val_y"]) >= _top1(
        student["path"], student["val_x"], student["val_y"]) - 0.05


def test_fp16_keeps_fp32_io(student, tmp_path):
    res = convert_fp16(student["path"], tmp_path / "fp16.onnx", sample=student["calib"][:2])
    model = onnx.load(res.path)
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert any(i.data_type == TensorProto.FLOAT16 for i in model.graph.initializer)
    onnx.checker.check_model(model, full_check=True)  # nodes in topological order (the converter's Casts are not)
    session, _ = create_session(res.path, "cpu")
    ref, _ = create_session(student["path"], "cpu")
    x = student["val_x"][:64]
    got, want = session.run(None, {"input": x})[0], ref.run(None, {"input": x})[0]
    assert got.dtype == np.float32 and np.abs(got - want).max() < 2e-2


def test_dispatch_by_mode(student, tmp_path):
    assert quantize("fp16", student["path"], tmp_path / "m.onnx").precision == "fp16"
    with pytest.raises(UsageError, match="mode"):
        quantize("int4", student["path"], tmp_path / "m.onnx")


# ---- `edgekd quantize` ------------------------------------------------------------------------------

def _npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def test_cli_static_preset_and_fp16(student, tmp_path, capsys):
    from edgekd.cli import main

    calib = _npz(tmp_path / "calib.npz", x=student["calib"])
    out = tmp_path / "int8.onnx"
    assert main(["quantize", str(student["path"]), "--calib", calib, "--out", str(out), "--preset", "tensorrt",
                 "--method", "percentile"]) == 0
    printed = capsys.readouterr().out
    assert out.is_file() and "static INT8 (QDQ, percentile, preset tensorrt)" in printed
    assert "activation_symmetric=True" in printed
    assert main(["quantize", str(student["path"]), "--mode", "fp16", "--out", str(tmp_path / "h.onnx")]) == 0
    assert onnx.load(str(tmp_path / "h.onnx")).graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT


def test_cli_accuracy_aware_falls_back_to_float(student, tmp_path, capsys):
    from edgekd.cli import main

    calib = _npz(tmp_path / "zeros.npz", x=np.full_like(student["calib"], 1e4))
    val = _npz(tmp_path / "val.npz", x=student["val_x"], y=student["val_y"])
    out = tmp_path / "aa.onnx"
    assert main(["quantize", str(student["path"]), "--calib", calib, "--val", val, "--tolerance", "0.01",
                 "--max-steps", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "decision: float model kept" in printed and "+ float [" in printed and not out.exists()


@pytest.mark.parametrize(("args", "code", "message"), [
    ([], 2, "static INT8 needs calibration data"),
    (["--calib", "missing.npz"], 3, "calibration data not found: missing.npz"),
    (["--mode", "dynamic", "--tolerance", "0.01"], 2, "--tolerance works with --mode static only"),
])
def test_cli_errors_are_one_line(student, tmp_path, args, code, message, capsys):
    from edgekd.cli import main

    assert main(["quantize", str(student["path"]), "--out", str(tmp_path / "o.onnx"), *args]) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "o.onnx").exists()


@pytest.mark.slow
def test_cli_calib_from_run(tiny_run, tmp_path, capsys):
    from edgekd.cli import main

    out = tmp_path / "run-int8.onnx"
    assert main(["quantize", str(tiny_run / "onnx" / "student.onnx"), "--calib-from", str(tiny_run),
                 "--calib-samples", "64", "--tolerance", "0.05", "--out", str(out)]) == 0
    assert "step 0" in capsys.readouterr().out


@pytest.mark.parametrize("mode", ["static", "dynamic", "fp16"])
def test_quantize_leaves_no_side_files_anywhere(student, tmp_path, monkeypatch, mode):
    """ORT's tools drop side files in the current folder and next to their input; ours must not."""
    import shutil

    src_dir, cwd, out_dir = tmp_path / "in", tmp_path / "cwd", tmp_path / "out"
    for d in (src_dir, cwd, out_dir):
        d.mkdir()
    src = src_dir / "m.onnx"
    shutil.copy(student["path"], src)
    monkeypatch.chdir(cwd)
    quantize(mode, src, out_dir / "q.onnx", student["calib"][:128] if mode == "static" else None)
    assert sorted(p.name for p in src_dir.iterdir()) == ["m.onnx"]
    assert list(cwd.iterdir()) == []
    assert sorted(p.name for p in out_dir.iterdir()) == ["q.onnx"]


@pytest.mark.parametrize("mode", ["static", "dynamic", "fp16"])
def test_every_mode_runs_the_intake_check_first(tmp_path, mode):
    from edgekd.deploy.errors import InputFileError

    with pytest.raises(InputFileError, match="not found"):
        quantize(mode, tmp_path / "missing.onnx", tmp_path / "q.onnx", np.zeros((8, 1, 8, 8), np.float32))
    assert not (tmp_path / "q.onnx").exists()
