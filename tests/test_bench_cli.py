"""`edgekd bench` and benchmarks.onnx_bench on an ONNX file, an INT8 ONNX file and a bundle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekd.benchmarks.onnx_bench import bench_onnx, load_target
from edgekd.benchmarks.tiny_models import make_tiny_cnn
from edgekd.cli import main as cli_main

REPO = Path(__file__).resolve().parents[1]
FAST = dict(warmup_s=0.0, warmup_runs=2, min_runs=20, min_time_s=0.02)
FAST_ARGS = ["--warmup-s", "0", "--warmup-runs", "2", "--min-runs", "20", "--min-time-s", "0.02"]
NORM = {"scale": 1 / 16, "mean": [0.5], "std": [0.25]}


def _logits(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


class _Calib:
    def __init__(self, x: np.ndarray):
        self.items = iter([{"input": x[i:i + 1]} for i in range(len(x))])

    def get_next(self):
        return next(self.items, None)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    """FP32 + INT8 (static QDQ) ONNX, a bundle, and labelled data: normalised and raw."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from edgekd.deploy.bundle import write_bundle

    d = tmp_path_factory.mktemp("bench")
    fp32 = make_tiny_cnn(d / "tiny.onnx")
    x = np.random.default_rng(1).standard_normal((120, 1, 8, 8)).astype(np.float32)
    y = _logits(fp32, x).argmax(1)
    y[:12] = (y[:12] + 1) % 10  # 90 % of the labels agree with the model
    int8 = d / "tiny-int8.onnx"
    reader = type("Reader", (_Calib, CalibrationDataReader), {})(x[:32])
    quantize_static(str(fp32), str(int8), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    meta = {"input": {"name": "input", "shape": [1, 1, 8, 8], "dtype": "float32", "layout": "NCHW"},
            "normalization": NORM, "labels": [str(i) for i in range(10)], "precision": "fp32", "role": "student"}
    bundle = write_bundle(d / "bundle", fp32, meta)
    raw = (x * 0.25 + 0.5) * 16  # inverse of the bundle's normalization
    np.savez(d / "norm.npz", inputs=x, labels=y)
    np.savez(d / "raw.npz", inputs=raw, labels=y)
    return {"dir": d, "fp32": fp32, "int8": int8, "bundle": bundle, "x": x, "y": y,
            "int8_top1": float((_logits(int8, x).argmax(1) == y).mean())}


def test_bench_onnx_rows(models):
    rows = bench_onnx(models["fp32"], batches=(1, 4), data=(models["x"], models["y"]), **FAST)
    assert [r["batch"] for r in rows] == [1, 4]
    for r in rows:
        assert r["format"] == "onnx" and r["precision"] == "fp32" and r["params"] == 8 * 9 + 8 + 80 + 10
        assert r["top1"] == pytest.approx(0.9) and r["samples"] == 120
        assert set(r["latency_ms"]) >= {"p50", "p90", "p95", "p99", "mean", "std", "min", "max"}
        assert r["latency"]["runs"] >= 20 and r["throughput_sps"] > 0 and "noisy" in r and "cv" in r
        assert r["cold_start_ms"]["total"] >= r["cold_start_ms"]["session_create"] > 0
        assert r["providers"] == ["CPUExecutionProvider"] and r["peak_rss_bytes"] > 0
        assert r["size_bytes"] == models["fp32"].stat().st_size


def test_bench_int8_detected(models):
    assert load_target(models["int8"]).precision == "int8"
    rows = bench_onnx(models["int8"], data=(models["x"], models["y"]), **FAST)
    assert rows[0]["precision"] == "int8" and rows[0]["top1"] == pytest.approx(models["int8_top1"])


def test_bench_bundle_applies_normalization_to_raw_data(models):
    rows = bench_onnx(models["bundle"], data=models["dir"] / "raw.npz", **FAST)
    assert rows[0]["kind"] == "bundle" and rows[0]["role"] == "student"
    assert rows[0]["top1"] == pytest.approx(0.9)
    raw_arrays = ((models["x"] * 0.25 + 0.5) * 16, models["y"])
    assert bench_onnx(models["bundle"], data=raw_arrays, raw=True, **FAST)[0]["top1"] == pytest.approx(0.9)


def test_fixed_batch_is_a_recorded_failure(models):
    fixed = make_tiny_cnn(models["dir"] / "fixed.onnx", batch=1)
    rows = bench_onnx(fixed, batches=(1, 2), **FAST)
    assert "error" not in rows[0] and "fixed batch size of 1" in rows[1]["error"]


@pytest.mark.parametrize("kind", ["fp32", "int8", "bundle"])
def test_cli_bench_writes_json_and_table(models, kind, tmp_path, capsys):
    out = tmp_path / "bench.json"
    data = models["dir"] / ("raw.npz" if kind == "bundle" else "norm.npz")
    rc = cli_main(["bench", str(models[kind]), "--batch", "1,3", "--data", str(data), "--json", str(out),
                   *FAST_ARGS])
    assert rc == 0
    text = capsys.readouterr().out
    assert "p50" in text and "providers that ran: CPUExecutionProvider" in text and "top-1" in text
    doc = json.loads(out.read_text())
    assert doc["schema_version"] == 1 and doc["kind"] == "bench"
    assert [r["batch"] for r in doc["artifacts"]] == [1, 3]
    assert doc["device"]["providers"] == ["CPUExecutionProvider"] and doc["device"]["cores"] >= 1


def test_cli_bad_batch_is_usage_error(models, capsys):
    assert cli_main(["bench", str(models["fp32"]), "--batch", "0,x"]) == 2
    assert "--batch" in capsys.readouterr().err


def test_cli_trt_runtime_needs_runner(models, tmp_path, capsys):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not an engine")
    rc = cli_main(["bench", str(engine), *FAST_ARGS])
    assert rc != 0 and "error:" in capsys.readouterr().err
    if not (REPO / "deploy" / "runtime" / "trt.py").exists():
        assert rc == 7  # DependencyError: the TensorRT runtime is not in this build


def test_cli_bench_never_imports_torch(models, tmp_path):
    """Run the command where `import torch` fails and leaves a marker: it must succeed, marker absent."""
    blocker = tmp_path / "blocked" / "torch"
    blocker.mkdir(parents=True)
    marker = tmp_path / "torch-was-imported"
    blocker.joinpath("__init__.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nraise ImportError('torch is blocked in this test')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker.parent), str(REPO)])}
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "edgekd", "bench", str(models["bundle"]), "--batch", "1,2",
                           "--data", str(models["dir"] / "raw.npz"), "--json", str(out), *FAST_ARGS],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert not marker.exists()
    assert json.loads(out.read_text())["artifacts"][0]["top1"] == pytest.approx(0.9)


def test_engine_bench_drives_any_runner_protocol(models, monkeypatch, tmp_path):
    """bench_engine only needs the runner protocol; OnnxrtRunner stands in for TrtRunner on a CPU machine."""
    import shutil

    from edgekd.benchmarks import trt_bench
    from edgekd.deploy.runtime.ort import OnnxrtRunner

    engine = tmp_path / "tiny.engine"
    shutil.copyfile(models["fp32"], engine)
    (tmp_path / "tiny.engine.json").write_text(json.dumps({"input": {"name": "input", "shape": [1, 1, 8, 8]}}))
    monkeypatch.setattr(trt_bench, "trt_runner_class", lambda: OnnxrtRunner)
    rows = trt_bench.bench_engine(engine, batches=(1, 4), data=(models["x"], models["y"]), precision="fp32", **FAST)
    assert [r["batch"] for r in rows] == [1, 4] and all(r["format"] == "tensorrt" for r in rows)
    assert rows[0]["top1"] == pytest.approx(0.9) and rows[1]["latency_ms"]["p50"] > 0


def test_bench_bundle_with_image_folder(models, tmp_path):
    """ImageFolder data goes through the bundle's normalization exactly like Predictor.predict."""
    pil = pytest.importorskip("PIL.Image")
    from edgekd.benchmarks.datasets import load_image_folder
    from edgekd.deploy.runtime.bundle import load_bundle

    rng = np.random.default_rng(3)
    for cls in ("0", "3", "7"):
        (tmp_path / cls).mkdir()
        for i in range(4):
            pil.fromarray(rng.integers(0, 17, (8, 8), dtype=np.uint8) * 15, mode="L").save(tmp_path / cls / f"{i}.png")
    meta_input = {"name": "input", "shape": [1, 1, 8, 8]}
    images, y = load_image_folder(tmp_path, meta_input, [str(i) for i in range(10)])
    assert images.shape == (12, 8, 8) and sorted(set(y.tolist())) == [0, 3, 7]  # folder names → label indices
    labels, _ = load_bundle(models["bundle"]).predict(images)
    expected = float(np.mean([int(label) == t for label, t in zip(labels, y, strict=True)]))
    assert bench_onnx(models["bundle"], data=tmp_path, **FAST)[0]["top1"] == pytest.approx(expected)
