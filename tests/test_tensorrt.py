"""TensorRT: trtexec command generation, ONNX checks, layer-precision check and engine refusal (everywhere);
a real engine build and run where `tensorrt` and a CUDA GPU are present (skipped elsewhere, with the reason).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

from edgekd.deploy.engines import BUILDERS, get_builder
from edgekd.deploy.engines.tensorrt import (
    LEGACY,
    STRONGLY_TYPED,
    asymmetric_zero_points,
    batch_profile,
    check_layer_precisions,
    choose_build_path,
    trtexec_plan,
)
from edgekd.deploy.engines.trtexec import trtexec_command
from edgekd.deploy.errors import DependencyError, SecurityError, UsageError
from edgekd.deploy.runtime.onnxinfo import read_onnx
from edgekd.deploy.runtime.trt import EngineMismatch, check_engine, read_sidecar, sha256_bytes, sidecar_path

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The default student (random weights) as FP32 ONNX, plus TensorRT-preset and x86-preset INT8 QDQ."""
    from edgekd.deploy.export import export_onnx
    from edgekd.deploy.quantize import quantize_static
    from edgekd.models import create_model

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("trt")
    model = create_model("edgekd:cnn", num_classes=10, in_channels=1, input_size=8, channels=[8, 16, 32],
                         hidden=32).eval()
    fp32 = export_onnx(model, torch.zeros(1, 1, 8, 8), folder / "student.onnx").path
    calib = np.random.default_rng(0).standard_normal((128, 1, 8, 8)).astype(np.float32)
    trt8 = quantize_static(fp32, folder / "student-int8-trt.onnx", calib, preset="tensorrt").path
    x86 = quantize_static(fp32, folder / "student-int8-x86.onnx", calib, preset="x86").path
    return {"fp32": fp32, "int8": trt8, "x86": x86, "folder": folder, "calib": calib}


# ---- trtexec command lines (everywhere) --------------------------------------------------------------

def test_trtexec_strongly_typed_command():
    cmd = trtexec_command("m.onnx", "out/m.engine", "fp16", input_name="input", min_shape=(1, 1, 8, 8),
                          opt_shape=(8, 1, 8, 8), max_shape=(64, 1, 8, 8), workspace_mb=512,
                          timing_cache="cache.bin")
    args = shlex.split(cmd)
    assert args[0] == "trtexec" and "--onnx=m.onnx" in args and "--saveEngine=out/m.engine" in args
    assert "--stronglyTyped" in args and "--fp16" not in args and "--int8" not in args
    assert {"--minShapes=input:1x1x8x8", "--optShapes=input:8x1x8x8", "--maxShapes=input:64x1x8x8"} <= set(args)
    assert "--memPoolSize=workspace:512" in args and "--timingCacheFile=cache.bin" in args
    assert "--profilingVerbosity=detailed" in args


@pytest.mark.parametrize(("precision", "flags"), [("fp32", []), ("fp16", ["--fp16"]),
                                                  ("int8", ["--int8", "--fp16"])])
def test_trtexec_legacy_flags(precision, flags):
    args = shlex.split(trtexec_command("m.onnx", "m.engine", precision, strongly_typed=False))
    assert [a for a in args if a in ("--fp16", "--int8")] == flags and "--stronglyTyped" not in args
    assert "--timingCacheFile=m.engine.timing.cache" in args


def test_trtexec_quotes_paths_and_validates():
    args = shlex.split(trtexec_command("my models/m.onnx", "m.engine", "fp32"))
    assert "--onnx=my models/m.onnx" in args
    with pytest.raises(UsageError, match="precision"):
        trtexec_command("m.onnx", "m.engine", "int4")
    with pytest.raises(UsageError, match="min/opt/max"):
        trtexec_command("m.onnx", "m.engine", "fp16", min_shape=(1, 3))


def test_trtexec_plan_converts_fp16_and_checks_int8(models, tmp_path):
    plan = trtexec_plan(models["fp32"], tmp_path / "s.engine", "fp16", max_batch=32)
    typed = onnx.load(plan["onnx"])
    assert read_onnx(plan["onnx"]).precision == "fp16" and plan["onnx"].endswith("s.engine.fp16.onnx")
    assert typed.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT, "FP32 I/O kept"
    assert f"--onnx={plan['onnx']}" in shlex.split(plan["strongly_typed"])
    assert "--maxShapes=input:32x1x8x8" in shlex.split(plan["legacy"])
    assert "--stronglyTyped" in plan["strongly_typed"] and "--fp16" in plan["legacy"]
    int8 = trtexec_plan(models["int8"], tmp_path / "q.engine", "int8")
    assert f"--onnx={models['int8']}" in shlex.split(int8["strongly_typed"])
    with pytest.raises(UsageError, match="QuantizeLinear"):
        trtexec_plan(models["fp32"], tmp_path / "q.engine", "int8")
    with pytest.raises(UsageError, match="zero points"):
        trtexec_plan(models["x86"], tmp_path / "q.engine", "int8")


# ---- ONNX checks, build path, precision check (everywhere) -------------------------------------------

def test_onnx_precision_and_symmetry(models):
    assert read_onnx(models["fp32"]).precision == "fp32"
    assert read_onnx(models["int8"]).precision == "int8"
    assert asymmetric_zero_points(onnx.load(models["int8"])) == []
    assert asymmetric_zero_points(onnx.load(models["x86"]))


def test_batch_profile(models):
    assert batch_profile(models["fp32"], None, 1, 4, 16) == ("input", (1, 1, 8, 8), (4, 1, 8, 8), (16, 1, 8, 8))
    with pytest.raises(UsageError, match="min <= opt <= max"):
        batch_profile(models["fp32"], None, 8, 4, 16)
    with pytest.raises(UsageError, match="no input 'pixels'"):
        batch_profile(models["fp32"], "pixels", 1, 4, 16)


@pytest.mark.parametrize(("version", "has_flag", "path"), [
    ((8, 6, 1), False, LEGACY), ((8, 6, 1), True, LEGACY), ((10, 3, 0), True, STRONGLY_TYPED),
    ((11, 4, 0), True, STRONGLY_TYPED), ((10, 0, 0), False, LEGACY)])
def test_build_path_follows_version(version, has_flag, path):
    assert choose_build_path(version, has_flag) == path


def _layer(name, kind, *formats):
    return {"Name": name, "LayerType": kind, "Inputs": [{"Name": "i", "Format/Datatype": formats[0]}],
            "Outputs": [{"Name": "o", "Format/Datatype": f} for f in formats[1:]]}


def test_layer_precision_check():
    fp16 = {"Layers": [_layer("reformat_in", "Reformat", "Row major linear FP32", "Row major linear FP16 format"),
                       _layer("conv", "CaskConvolution", "Channel major FP16 format where channel % 8 == 0",
                              "Channel major FP16 format where channel % 8 == 0"),
                       _layer("gemm", "CaskGemm", "Row major linear FP16 format", "Row major linear FP32")]}
    check = check_layer_precisions(json.dumps(fp16), "fp16")
    assert check.passed and check.counts == {"FP16": 3} and check.in_requested == 3
    silently_fp32 = {"Layers": [_layer("conv", "CaskConvolution", "Row major linear FP32",
                                       "Row major linear FP32")]}
    bad = check_layer_precisions(silently_fp32, "fp16")
    assert not bad.passed and "no layer runs in FP16" in bad.note and bad.fp32_layers == ["conv"]
    int8 = {"Layers": [_layer("qconv", "CaskConvolution", "Row major Int8 format", "Row major Int8 format"),
                       _layer("head", "CaskGemm", "Row major linear FP32", "Row major linear FP32")]}
    assert check_layer_precisions(int8, "int8").counts == {"INT8": 1, "FP32": 1}
    names_only = check_layer_precisions({"Layers": ["conv", "gemm"]}, "fp16")
    assert not names_only.passed and "detailed profiling verbosity" in names_only.note


def test_builder_registry():
    assert "tensorrt" in BUILDERS and callable(get_builder("tensorrt"))
    with pytest.raises(UsageError, match="unknown engine backend"):
        get_builder("openvino-typo")


# ---- engine refusal (everywhere: pure checks on the sidecar) ------------------------------------------

def _sidecar(engine, data=b"engine-bytes", trt_version="10.3.0", gpu=None):
    engine.write_bytes(data)
    meta = {"format": "edgekd-tensorrt-engine", "tensorrt": trt_version, "precision": "fp16",
            "gpu": gpu or {"name": "Orin", "compute_capability": "8.7"}, "engine_sha256": sha256_bytes(data)}
    sidecar_path(engine).write_text(json.dumps(meta))
    return meta


def test_engine_without_sidecar_is_refused(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"x")
    with pytest.raises(SecurityError, match="sidecar m.engine.json is missing"):
        read_sidecar(engine)
    sidecar_path(engine).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(SecurityError, match="not an edgekd engine sidecar"):
        read_sidecar(engine)


def test_engine_from_other_version_gpu_or_tampered_is_refused(tmp_path):
    engine = tmp_path / "m.engine"
    meta = _sidecar(engine)
    orin = {"name": "Orin", "compute_capability": "8.7"}
    check_engine(engine, engine.read_bytes(), read_sidecar(engine), "10.3.0", orin)  # same: accepted
    with pytest.raises(EngineMismatch, match="TensorRT 10.3.0, this is TensorRT 8.6.2"):
        check_engine(engine, engine.read_bytes(), meta, "8.6.2", orin)
    with pytest.raises(EngineMismatch, match="this GPU is NVIDIA H100"):
        check_engine(engine, engine.read_bytes(), meta, "10.3.0", {"name": "NVIDIA H100", "compute_capability": "9.0"})
    with pytest.raises(SecurityError, match="SHA-256 does not match"):
        check_engine(engine, b"other-bytes", meta, "10.3.0", orin)


# ---- CLI ------------------------------------------------------------------------------------------------

def test_cli_print_trtexec(models, tmp_path, capsys):
    from edgekd.cli import main

    assert main(["engine", str(models["int8"]), "--out", str(tmp_path / "e.engine"), "--precision", "int8",
                 "--max-batch", "16", "--print-trtexec"]) == 0
    out = capsys.readouterr().out
    assert "trtexec --onnx=" in out and "--stronglyTyped" in out and "--int8 --fp16" in out
    assert "--maxShapes=input:16x1x8x8" in out and not (tmp_path / "e.engine").exists()


def test_cli_without_tensorrt_prints_command_and_hint(models, tmp_path):
    pytest.importorskip("onnxruntime")
    if _has_tensorrt():
        pytest.skip("tensorrt is installed here: the missing-dependency path cannot be shown")
    proc = subprocess.run([sys.executable, "-m", "edgekd.cli", "engine", str(models["fp32"]), "--out",
                           str(tmp_path / "e.engine")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == DependencyError.exit_code
    assert "trtexec --onnx=" in proc.stdout and "pip install 'edgekd[tensorrt]'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_runtime_trt_imports_without_torch_or_tensorrt(tmp_path):
    from conftest import torch_blocked_env

    code = "import edgekd.deploy.runtime.trt as t, sys; assert 'torch' not in sys.modules; print('ok')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**__import__("os").environ, **torch_blocked_env(tmp_path)}, timeout=60)
    assert proc.returncode == 0, proc.stderr


# ---- real TensorRT (only where tensorrt + a CUDA GPU exist) -------------------------------------------

def _has_tensorrt() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


def _require_trt_gpu():
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (pip install 'edgekd[tensorrt]')")
    from edgekd.deploy.runtime.trt import gpu_info

    try:
        gpu_info()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"no CUDA GPU usable here: {exc}")


@pytest.mark.trt
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_real_engine_build_and_run(models, tmp_path, precision):
    _require_trt_gpu()
    from edgekd.deploy.engines.tensorrt import build_engine
    from edgekd.deploy.runtime.ort import create_session
    from edgekd.deploy.runtime.trt import TrtRunner

    src = models["int8"] if precision == "int8" else models["fp32"]
    res = build_engine(src, tmp_path / "m.engine", precision=precision, max_batch=16)
    assert res.build_path in (STRONGLY_TYPED, LEGACY) and res.precision_check.passed
    side = read_sidecar(res.path)
    assert side["precision"] == precision and side["build_path"] == res.build_path
    x = models["calib"][:7]
    session, _ = create_session(src, "cpu")
    want = session.run(None, {"input": x})[0]
    with TrtRunner(res.path) as runner:
        got = runner.infer({"input": x})["logits"]
    assert got.shape == want.shape and (got.argmax(1) == want.argmax(1)).mean() >= 0.8
    (tmp_path / "m.engine").write_bytes((tmp_path / "m.engine").read_bytes() + b"\0")
    with pytest.raises(SecurityError), TrtRunner(res.path):
        pass
