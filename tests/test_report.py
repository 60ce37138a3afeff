"""Run reports (report.md + pareto.png) and `edgekd report` merging results from several devices/settings."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest

from edgekd.benchmarks.results import (
    BundleChoice,
    Device,
    Latency,
    ResultRow,
    ResultsDocument,
    load_results,
    versus_teacher,
)
from edgekd.benchmarks.tiny_models import make_tiny_cnn
from edgekd.cli import main as cli_main
from edgekd.deploy.errors import InputFileError
from edgekd.deploy.fileio import write_json
from edgekd.deploy.typed import to_json
from edgekd.report import merge_reports, write_run_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JETSON = Device(cpu="ARMv8 Processor rev 1 (v8l)", cores=6, machine="aarch64", os="Linux-5.15.136-tegra-aarch64",
                python="3.10.12", onnxruntime="1.18.0", isa=("neon", "dotprod"),
                jetson={"model": "NVIDIA Jetson Orin Nano Developer Kit", "l4t": "36.3.0", "nvpmodel": "15W",
                        "clocks_locked": True})


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def lat(p50: float, spread: float = 0.02) -> Latency:
    rounds = tuple(p50 * (1 + spread * k) for k in (-1, 0, 1))
    return Latency(p50, p50 * 1.1, p50 * 1.2, p50 * 1.4, p50 * 1.05, p50 * 0.05, min(rounds), max(rounds), 100,
                   round_p50s=rounds)


def row(name, role, fmt, precision, top1, p50, size, params, runtime="onnxruntime 1.18.0", **kw) -> ResultRow:
    return ResultRow(name, fmt, precision, runtime if fmt == "onnx" else "pytorch 2.3.0", role=role, path=f"{name}.bin",
                     size_bytes=size, params=params, top1=top1, val_top1=kw.pop("val", top1), latency=lat(p50),
                     throughput_sps=1e3 / p50, **kw)


def run_doc(device: Device = JETSON, name: str = "<script>digits</script>") -> ResultsDocument:
    rows = (row("teacher-pytorch", "teacher", "pytorch", "fp32", 0.98, 2.0, 640_000, 160_000),
            row("teacher-onnx-fp32", "teacher", "onnx", "fp32", 0.98, 0.5, 641_000, 160_000),
            row("student-pytorch", "student", "pytorch", "fp32", 0.97, 0.8, 40_000, 10_000),
            row("student-onnx-fp32", "student", "onnx", "fp32", 0.97, 0.05, 41_000, 10_000, variant="export"),
            row("student-onnx-int8", "student", "onnx", "int8", 0.965, 0.09, 20_000, 10_000, variant="static"),
            row("baseline-pytorch", "baseline", "pytorch", "fp32", 0.95, 0.8, 40_000, 10_000))
    choice = BundleChoice("student-onnx-fp32", "rule", {"student-onnx-fp32": "chosen: fastest",
                                                        "student-onnx-int8": "not chosen: slower"}, 0.01,
                          "ship student-onnx-fp32: fastest")
    return ResultsDocument("run", device, rows, recipe={"name": name}, bundle=choice,
                           distillation={"method": "kd", "temperature": 4.0, "alpha": 0.7, "teacher_top1": 0.98,
                                         "student_top1": 0.97, "baseline_top1": 0.95, "gain": 0.02})


def test_speedup_compares_like_with_like():
    rows = list(run_doc().artifacts)
    onnx_student = versus_teacher(rows[3], rows)
    assert onnx_student.reference == "teacher-onnx-fp32" and onnx_student.speedup == pytest.approx(10.0)
    assert onnx_student.cross_reference == "teacher-pytorch" and onnx_student.cross_speedup == pytest.approx(40.0)
    torch_student = versus_teacher(rows[2], rows)
    assert torch_student.speedup == pytest.approx(2.5) and torch_student.cross_speedup is None
    assert onnx_student.top1_delta == pytest.approx(-0.01)


def test_run_report(tmp_path):
    paths = write_run_report(run_doc(), tmp_path)
    md = paths["report"].read_text()
    for text in ("| student-onnx-int8 | student | int8 (static) |", "10×", "40×", "-1.00 pp", "## Distillation",
                 "+2.00 pp", "## Bundle", "**student-onnx-fp32**", "![latency vs accuracy](pareto.png)",
                 "Jetson Orin Nano"):
        assert text in md, text
    assert not re.search(r"(?<!\\)<script", md) and r"\<script\>digits\</script\>" in md, "no HTML from names"
    width, height = png_size(paths["pareto"])
    assert width > 300 and height > 200 and paths["pareto"].stat().st_size > 5000


def test_report_escapes_what_users_control(tmp_path):
    doc = run_doc(Device(cpu="evil | cpu [x](http://e.vil) <img src=x>", cores=2))
    md = write_run_report(doc, tmp_path)["report"].read_text()
    assert not re.search(r"(?<!\\)\[x(?<!\\)\]\(", md) and not re.search(r"(?<!\\)<img", md)
    assert "evil \\| cpu" in md, "a | cannot open a table cell"


def _bench_file(tmp_path: Path, model: Path, name: str, threads: int, data: Path | None = None) -> Path:
    out = tmp_path / f"{name}.json"
    assert cli_main(["bench", str(model), str(model.with_name("b.onnx")), "--name", "student-onnx-fp32",
                     "--name", "student-onnx-wide", "--role", "student", "--threads", str(threads), "--batch",
                     "1,4", "--json", str(out), "--warmup-s", "0", "--min-runs", "20", "--min-time-s", "0.02",
                     "--rounds", "2", *(["--data", str(data)] if data else [])]) == 0
    return out


def test_merging_bench_files_of_different_settings_names_the_difference_and_recommends(tmp_path, capsys):
    import numpy as np

    model = make_tiny_cnn(tmp_path / "a.onnx")
    make_tiny_cnn(tmp_path / "b.onnx", channels=32)
    data = tmp_path / "data.npz"
    np.savez(data, inputs=np.random.default_rng(0).standard_normal((32, 1, 8, 8)).astype(np.float32),
             labels=np.arange(32) % 10)
    one, two = _bench_file(tmp_path, model, "laptop-1t", 1, data), _bench_file(tmp_path, model, "laptop-2t", 2)
    out = tmp_path / "report"
    assert cli_main(["report", str(one), str(two), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "## What differs between the sources" in md and "| threads | 1 | 2 |" in md
    assert "## What to ship on each device" in md
    ship = [line for line in md.splitlines() if line.startswith("| ") and "laptop-1t" in line][0]
    assert "student-onnx-" in ship and "ship student-onnx-" in ship
    assert "## laptop-1t — " in md and "## laptop-2t — " in md
    for name in ("pareto.png", "devices.png", "batches.png"):
        assert not (out / name).exists() or png_size(out / name)[0] > 300
    no_accuracy = [line for line in md.splitlines() if line.startswith("| ") and "laptop-2t" in line][0]
    assert "accuracy not measured" in no_accuracy, "without --data the choice says it is by latency alone"
    html = (out / "report.html").read_text()
    assert "<table>" in html and "**" not in html and "<strong>" in html
    assert html.count("data:image/png;base64,iVBORw0KGgo") == 3
    assert "report.html" in capsys.readouterr().out


def test_merging_a_run_and_a_device_recommends_per_device(tmp_path):
    here = tmp_path / "here" / "results.json"
    here.parent.mkdir()
    write_json(here, to_json(run_doc(Device(cpu="Intel Xeon", cores=2, machine="x86_64"))))
    jetson = tmp_path / "jetson" / "results.json"
    jetson.parent.mkdir()
    write_json(jetson, to_json(run_doc()))
    paths = merge_reports([here, jetson], tmp_path / "out")
    md = paths["report"].read_text()
    rows = [line for line in md.splitlines() if line.startswith("| Intel Xeon") or line.startswith("| NVIDIA Jetson")]
    assert len(rows) == 2 and all("student-onnx-fp32" in r for r in rows)
    assert "| device | Intel Xeon (2 cores, x86\\_64) | NVIDIA Jetson Orin Nano Developer Kit (6 cores, aarch64) |" in md
    assert png_size(paths["pareto"])[0] > 300


def test_load_results_rejects_other_schema_and_bad_json(tmp_path):
    bad = tmp_path / "r.json"
    bad.write_text(json.dumps({"schema_version": 1, "artifacts": []}))
    with pytest.raises(InputFileError, match="schema_version"):
        load_results(bad)
    bad.write_text("{not json")
    with pytest.raises(InputFileError, match="not valid JSON"):
        merge_reports([bad], tmp_path / "out")
    doc = to_json(run_doc())
    doc["artifacts"][0]["latency"]["p50"] = "fast"
    bad.write_text(json.dumps(doc))
    with pytest.raises(InputFileError, match=r"artifacts\[0\].latency.p50: expected a number"):
        load_results(bad)


@pytest.mark.skipif(__import__("shutil").which("chromium") is None, reason="Chromium is not installed "
                    "(sudo apt-get install chromium): the merged report is not checked in a real browser")
def test_merged_report_in_a_real_browser(tmp_path):
    """The merged report of two bench files, rendered by headless Chromium: not blank, plots drawn, no raw
    markdown (benchmarks/suites/report_browser.py; the screenshot is the thing to look at)."""
    import numpy as np

    from edgekd.benchmarks.suites.report_browser import page_checks, screenshot

    model = make_tiny_cnn(tmp_path / "a.onnx")
    make_tiny_cnn(tmp_path / "b.onnx", channels=32)
    data = tmp_path / "data.npz"
    np.savez(data, inputs=np.random.default_rng(0).standard_normal((32, 1, 8, 8)).astype(np.float32),
             labels=np.arange(32) % 10)
    one, two = _bench_file(tmp_path, model, "laptop-1t", 1, data), _bench_file(tmp_path, model, "laptop-2t", 2, data)
    paths = merge_reports([one, two], tmp_path / "report")
    png = screenshot(paths["html"], tmp_path / "report.png", height=2400)
    assert page_checks(paths["html"], png) == []
    assert png_size(png) == (1400, 2400)


def test_the_bundle_rule_ties_tolerance_and_budget():
    """One rule: within the accuracy tolerance of FP32, faster only beyond the noise, ties to the more accurate
    then the smaller; an artifact over the latency budget never ships."""
    from edgekd.stages.report import choose_bundle

    fp32 = row("student-onnx-fp32", "student", "onnx", "fp32", 0.970, 0.050, 41_000, 10_000, variant="export")
    int8_tie = row("student-onnx-int8", "student", "onnx", "int8", 0.970, 0.049, 20_000, 10_000, variant="static")
    choice = choose_bundle([fp32, int8_tie], 0.01)
    assert choice.chosen == "student-onnx-int8", "a noise-level tie goes to the smaller at equal accuracy"
    assert "ties with student-onnx-int8 within the measured noise" in choice.reasons["student-onnx-fp32"]
    fast_but_worse = row("student-onnx-int8", "student", "onnx", "int8", 0.950, 0.020, 20_000, 10_000,
                         variant="static")
    choice = choose_bundle([fp32, fast_but_worse], 0.01)
    assert choice.chosen == "student-onnx-fp32" and "more than 1.00 pp below" in choice.reasons["student-onnx-int8"]
    clearly_faster = row("student-onnx-int8", "student", "onnx", "int8", 0.965, 0.025, 20_000, 10_000,
                         variant="static")
    assert choose_bundle([fp32, clearly_faster], 0.01).chosen == "student-onnx-int8"
    choice = choose_bundle([fp32, clearly_faster], 0.01, budget_ms=0.04)
    assert choice.chosen == "student-onnx-int8" and "over the latency budget" in choice.reasons["student-onnx-fp32"]
    choice = choose_bundle([fp32, clearly_faster], 0.01, budget_ms=0.01)
    assert choice.chosen is None and choice.decision.startswith("no bundle: no student artifact within tolerance "
                                                                "meets the latency budget of 0.01 ms")


def test_the_bundle_budget_is_the_choice_budget_only_when_timed_here():
    from edgekd.recipe import load_recipe
    from edgekd.stages.report import bundle_budget

    assert bundle_budget(load_recipe("digits")) is None
    assert bundle_budget(load_recipe("digits", ["bundle.latency_budget_ms=0.5"])) == 0.5
    automated = load_recipe(str(Path(__file__).resolve().parents[1] / "models" / "digits_automated.yaml"))
    assert bundle_budget(automated) == automated.students.latency_budget_ms is not None
    on_a_device = load_recipe(str(Path(__file__).resolve().parents[1] / "models" / "digits_automated.yaml"),
                              ["students.profile=jetson.json"])
    assert bundle_budget(on_a_device) is None, "another device's budget cannot be judged by this machine's timing"
