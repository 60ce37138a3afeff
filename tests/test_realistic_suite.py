"""Smoke test of the realistic-size suite (benchmarks/suites/realistic_models.py): the real code path — torchvision
model, FLOP count, measured peak, ONNX export, static INT8, PyTorch / ONNX Runtime / OpenVINO runners timed
interleaved — on the smallest input and budget; it prints its table (``--no-write``) and leaves RESULTS.md alone."""

from __future__ import annotations

import pytest

from edgekd.benchmarks.suites import realistic_models
from tests.test_suites import run_suite, table, torch_one_thread  # noqa: F401 - a fixture


@pytest.mark.usefixtures("torch_one_thread")
def test_realistic_suite_smoke(capsys, tmp_path):
    out = run_suite(realistic_models, capsys, "--models", "mobilenet_v3_small", "--size", "32", "--rounds", "1",
                    "--min-time-s", "0", "--min-runs", "3", "--warmup-s", "0", "--peak-size", "256",
                    "--candidates", "pytorch-fp32,ort-fp32,ort-int8,openvino-fp32", "--exporter", "torchscript",
                    "--no-write", "--results-md", str(tmp_path / "RESULTS.md"))
    header, rows = table(out)
    assert header[4:7] == ["candidate", "runtime", "p50 ms"] and header[-2] == "% of FP32 peak"
    assert [r[4] for r in rows] == ["pytorch-fp32", "ort-fp32", "ort-int8", "openvino-fp32"]
    timed = [r for r in rows if r[5] != "not installed"]
    assert len(timed) >= 3  # OpenVINO is optional (the edgekd[openvino] extra)
    for r in timed:
        assert float(r[6]) > 0 and r[10].endswith("%"), r
    assert float(rows[0][2]) > 0.001  # GFLOP of MobileNetV3-small at 32×32, from the FLOP counter
    assert rows[0][8] == "1.00×"  # PyTorch eager is the reference of the speed-up column
    assert "Measured FP32 peak" in out and "fastest is" in out
    assert not (tmp_path / "RESULTS.md").exists()


def test_openvino_runner_matches_onnxruntime(tiny_run):
    """The OpenVINO runner (runtime `openvino` of edgekd bench) runs an FP32 and an INT8 Q/DQ model like ONNX Runtime."""
    pytest.importorskip("openvino")
    import numpy as np

    from edgekd.deploy.runtime.openvino import OpenVinoRunner
    from edgekd.deploy.runtime.ort import OnnxrtRunner

    x = np.random.default_rng(0).standard_normal((16, 1, 8, 8)).astype(np.float32)
    for name in ("student", "student-int8"):
        path = tiny_run / "onnx" / f"{name}.onnx"
        with OnnxrtRunner(path, "cpu", 1) as ort_runner, OpenVinoRunner(path, threads=1) as ov_runner:
            assert ov_runner.inputs()[0].dtype == "float32" and ov_runner.info().runtime.startswith("openvino")
            want, got = ort_runner.infer({"input": x})["logits"], ov_runner.infer({"input": x})["logits"]
            call = ov_runner.bind({"input": x})
            call()
        assert (want.argmax(1) == got.argmax(1)).mean() >= (1.0 if name == "student" else 0.9)
        if name == "student":
            assert np.abs(want - got).max() < 1e-3
