"""Run reports (report.md + pareto.png) and `edgekd report` merging results from two devices."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from edgekd.benchmarks.tiny_models import make_tiny_cnn
from edgekd.cli import main as cli_main
from edgekd.deploy.errors import InputFileError
from edgekd.report import compare, find_reference, load_results, merge_reports, write_run_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JETSON = {"cpu": "ARMv8 Processor rev 1 (v8l)", "cores": 6, "os": "Linux-5.15.136-tegra-aarch64",
          "python": "3.10.12", "onnxruntime": "1.18.0", "isa": ["neon", "dotprod"], "machine": "aarch64",
          "jetson": {"model": "NVIDIA Jetson Orin Nano Developer Kit", "l4t": "36.3.0", "nvpmodel": "15W",
                     "clocks_locked": True}}


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def row(name, role, fmt, precision, top1, p50, size, params, batch=1) -> dict:
    return {"name": name, "role": role, "format": fmt, "precision": precision, "path": f"{name}.bin",
            "size_bytes": size, "params": params, "top1": top1, "batch": batch,
            "latency_ms": {"p50": p50, "p90": p50 * 1.1, "p99": p50 * 1.4, "mean": p50 * 1.05},
            "throughput_sps": batch * 1e3 / p50}


def run_results(device: dict) -> dict:
    return {
        "schema_version": 1, "recipe": {"name": "digits"}, "device": device,
        "artifacts": [row("teacher-pytorch", "teacher", "pytorch", "fp32", 0.98, 2.0, 640_000, 160_000),
                      row("teacher-onnx-fp32", "teacher", "onnx", "fp32", 0.98, 0.5, 641_000, 160_000),
                      row("student-pytorch", "student", "pytorch", "fp32", 0.97, 0.8, 40_000, 10_000),
                      row("student-onnx-fp32", "student", "onnx", "fp32", 0.97, 0.05, 41_000, 10_000),
                      row("student-onnx-int8", "student", "onnx", "int8", 0.965, 0.09, 20_000, 10_000),
                      row("baseline-pytorch", "baseline", "pytorch", "fp32", 0.95, 0.8, 40_000, 10_000)],
        "distillation": {"temperature": 4.0, "alpha": 0.7, "teacher_top1": 0.98, "student_top1": 0.97,
                         "baseline_top1": 0.95, "gain": 0.02},
        "export": {"opset": 17, "max_abs_diff": 2e-6, "top1_agreement": 1.0,
                   "student": {"max_abs_diff": 2e-6, "top1_agreement": 1.0, "tolerance": 1e-4, "samples": 256,
                               "passed": True}},
        "bundle": {"chosen": "student-onnx-fp32", "tolerance": 0.01,
                   "reasons": {"student-onnx-fp32": "chosen: fastest within accuracy tolerance",
                               "student-onnx-int8": "not chosen: 1.80× slower than student-onnx-fp32"}}}


def test_compare_against_teacher_pytorch():
    rows = run_results(JETSON)["artifacts"]
    ref = find_reference(rows, 1)
    assert ref["name"] == "teacher-pytorch"
    cmp = compare(rows[3], ref)
    assert cmp["speedup"] == pytest.approx(40.0)
    assert cmp["size_ratio"] == pytest.approx(41_000 / 640_000)
    assert cmp["acc_delta"] == pytest.approx(-0.01)


def test_run_report(tmp_path):
    paths = write_run_report(run_results(JETSON), tmp_path)
    md = paths["report"].read_text()
    for text in ("| student-onnx-int8 | student | onnx | int8 | 1 | 96.50% | 0.09 |", "40×", "-1.00 pp",
                 "## Distillation", "+2.00 pp", "## Export parity", "## Bundle", "**student-onnx-fp32**",
                 "1.80× slower", "![latency vs accuracy](pareto.png)", "Jetson Orin Nano"):
        assert text in md, text
    width, height = png_size(paths["pareto"])
    assert width > 300 and height > 200 and paths["pareto"].stat().st_size > 5000


def test_edgekd_report_merges_two_devices(tmp_path, capsys):
    here = tmp_path / "here.json"
    model = make_tiny_cnn(tmp_path / "student.onnx")
    assert cli_main(["bench", str(model), "--batch", "1,4", "--role", "student", "--json", str(here),
                     "--warmup-s", "0", "--min-runs", "20", "--min-time-s", "0.02"]) == 0
    jetson = tmp_path / "jetson" / "results.json"
    jetson.parent.mkdir()
    jetson.write_text(json.dumps(run_results(JETSON)))
    out = tmp_path / "report"
    assert cli_main(["report", str(here), str(jetson), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert md.count("## Device: ") == 2 and "NVIDIA Jetson Orin Nano Developer Kit (6 cores, aarch64)" in md
    assert "## Teacher vs student" in md and "| student | onnx | fp32 | 4 |" in md
    for name in ("pareto.png", "devices.png", "batches.png"):
        width, height = png_size(out / name)
        assert width > 300 and height > 200 and (out / name).stat().st_size > 5000, name
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,iVBORw0KGgo") == 3 and "<table>" in html
    assert "report.html" in capsys.readouterr().out


def test_load_results_rejects_other_schema(tmp_path):
    bad = tmp_path / "r.json"
    bad.write_text(json.dumps({"schema_version": 2, "artifacts": []}))
    with pytest.raises(InputFileError, match="schema_version"):
        load_results(bad)
    bad.write_text("{not json")
    with pytest.raises(InputFileError, match="not valid JSON"):
        merge_reports([bad], tmp_path / "out")
