"""Smoke tests of the benchmark suites (benchmarks/suites/): each runs its real code path on the shared tiny run
with the smallest budget, prints its table (``--no-write``) and leaves every RESULTS.md alone."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgekd.benchmarks.results import load_results
from edgekd.benchmarks.suites import (
    bench_overhead,
    bench_stability,
    bench_teacher_student,
    distill_throughput,
    quantize_tradeoff,
)
from edgekd.deploy.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]
#: the least timing that still warms up, times and summarises (the numbers themselves mean nothing here)
TINY = ["--min-time-s", "0", "--min-runs", "6", "--warmup-s", "0"]


def table(text: str) -> tuple[list[str], list[list[str]]]:
    """Header and body rows of the first Markdown table in ``text``, as stripped cells."""
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    header, *rows = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines if "---|" not in ln]
    return header, rows


def run_suite(module, capsys, *argv: str) -> str:
    """``module.main(argv)``: must return 0; returns what it printed."""
    assert module.main(list(argv)) == 0
    return capsys.readouterr().out


@pytest.fixture
def no_md(tmp_path) -> list[str]:
    """``--no-write`` aimed at a scratch RESULTS.md, so a suite that wrote anyway is caught."""
    return ["--no-write", "--results-md", str(tmp_path / "RESULTS.md")]


@pytest.fixture
def torch_one_thread():
    """One torch thread during the test (a shared 2-core machine), restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_bench_overhead(tiny_run, capsys, no_md, tmp_path):
    out = run_suite(bench_overhead, capsys, "--run", str(tiny_run), "--rounds", "2", "--min-time-s", "0",
                    "--min-runs", "20", *no_md)
    header, rows = table(out)
    assert len(header) == 8 and header[3] == "p50 ratio"
    assert [r[0] for r in rows] == ["near-empty (Identity)", "tiny CNN (170 params)", "digits student (fp32)",
                                    "digits teacher (fp32)"]
    assert rows[0][-1] == "0.0000"  # the floor is measured against itself
    assert all(float(c) > 0 for r in rows for c in r[1:7])
    assert "Largest harness/bare p50 deviation" in out and "2 alternating rounds" in out
    assert not (tmp_path / "RESULTS.md").exists()


def test_bench_stability(tiny_run, capsys, no_md, tmp_path):
    out = run_suite(bench_stability, capsys, "--run", str(tiny_run), "--repeats", "2", "--rounds", "2", *TINY,
                    *no_md)
    header, rows = table(out)
    assert header == ["repeat", "p50 ms", "p90 ms", "p99 ms", "within-run CV", "runs"]
    assert [r[0] for r in rows] == ["1", "2"]
    assert all(r[5] == "6" for r in rows)  # min_runs 6 over 2 rounds, no minimum time: exactly 6 calls
    assert f"Model: {tiny_run / 'onnx' / 'student.onnx'}; batch 1; threads 1; 2 repeats." in out
    assert "p50 across repeats: median" in out
    assert not (tmp_path / "RESULTS.md").exists()


def test_bench_stability_writes_its_own_section(tmp_path, capsys):
    md = tmp_path / "RESULTS.md"
    md.write_text("# Benchmark results\n\n<!-- other:start -->\nkept\n<!-- other:end -->\n")
    for _ in range(2):  # a rerun replaces its section
        run_suite(bench_stability, capsys, "--repeats", "2", "--batch", "4", *TINY, "--results-md", str(md))
    text = md.read_text()
    assert text.count("### Stability — ") == 1 and "<!-- harness/stability/" in text
    assert "tiny generated CNN (170 params); batch 4" in text and "kept" in text


def test_suite_runs_as_module(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "edgekd.benchmarks.suites.bench_stability", "--repeats", "2", *TINY,
                           "--no-write", "--results-md", str(tmp_path / "RESULTS.md")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "`python -m edgekd.benchmarks.suites.bench_stability`" in done.stdout
    assert not (tmp_path / "RESULTS.md").exists()


def test_bench_teacher_student(tiny_run, capsys, no_md, tmp_path):
    out = run_suite(bench_teacher_student, capsys, str(tiny_run), "--rounds", "2", "--threads", "1,2",
                    "--batches", "1,4", *TINY, "--json", str(tmp_path / "ts.json"), *no_md)
    header, rows = table(out)
    assert header[0] == "artifact" and header[8] == "speedup vs teacher ONNX" and len(header) == 10
    names = ["student-onnx-fp32", "student-onnx-int8", "teacher-onnx-fp32"]
    assert [(r[0], r[1], r[2]) for r in rows] == [(n, t, b) for t in "12" for b in ("1", "4") for n in names]
    pipeline = {a.name: a.top1 for a in load_results(tiny_run / "results.json").artifacts}
    for r in rows:
        assert r[9] == f"{pipeline[r[0]]:.2%}"
        assert (r[8] == "1.00×") if r[0].startswith("teacher") else r[8].endswith(("×", "× ≈"))
    doc = load_results(tmp_path / "ts.json")
    assert doc.kind == "bench" and len(doc.artifacts) == 12 and doc.settings["suite"] == "teacher_student"
    assert {(a.name, a.role) for a in doc.artifacts} == {(n, n.split("-")[0]) for n in names}
    assert all(len(a.latency.round_p50s) == 2 for a in doc.artifacts)


def test_quantize_tradeoff(tiny_run, capsys, no_md, tmp_path):
    out = run_suite(quantize_tradeoff, capsys, str(tiny_run), "--rounds", "2", "--batches", "1,4",
                    "--methods", "minmax", "--presets", "x86,tensorrt", *TINY, "--json", str(tmp_path / "q.json"),
                    *no_md)
    header, rows = table(out)
    assert len(header) == 16 and header[-4:] == ["p50 ms b1", "÷ FP32 b1", "p50 ms b4", "÷ FP32 b4"]
    assert [r[0] for r in rows] == ["fp32", "int8-minmax-x86", "int8-minmax-tensorrt", "int8-dynamic", "fp16"]
    assert all("failed" not in " ".join(r) for r in rows)
    assert rows[0][11] == "100.00%" and rows[0][13] == "1.00×" and rows[0][15] == "1.00×"
    assert rows[1][4] == "uint8/int8" and rows[2][4] == "int8/int8"
    assert "- batch 1: the fastest static INT8" in out and "- batch 4: the fastest static INT8" in out
    assert "INT8 calibrated on 64 training images" in out and "tensorrt preset" in out
    saved = json.loads((tmp_path / "q.json").read_text())
    assert [v["name"] for v in saved] == [r[0] for r in rows]
    assert all(len(v["latency"][b]["round_p50s"]) == 2 for v in saved for b in ("1", "4"))
    assert not (tmp_path / "RESULTS.md").exists()


def test_quantize_tradeoff_refuses_an_unknown_preset(tiny_run):
    with pytest.raises(UsageError, match="unknown preset"):
        quantize_tradeoff.main([str(tiny_run), "--presets", "x86,avx9", "--no-write"])


def test_distill_throughput(capsys, tmp_path, torch_one_thread):
    small = '{"channels": [4, 8, 8], "hidden": 8}'
    out = run_suite(distill_throughput, capsys, "--epochs", "1", "--teacher-epochs", "1", "--size", "8",
                    "--batch", "512", "--teacher", "edgekd:cnn", "--student", "edgekd:cnn", "--teacher-kwargs", small,
                    "--student-kwargs", small, "--no-write", "--results", str(tmp_path / "RESULTS.md"))
    header, rows = table(out)
    assert header == ["path", "teacher outputs", "samples/s", "× vs (a)", "wall s", "student test top-1"]
    assert [(r[0][:3], r[1]) for r in rows] == [("(a)", "online"), ("(b)", "cache-memory"), ("(c)", "online")]
    assert rows[0][3] == "1.00×" and out.startswith("### ") and ": edgekd:cnn → edgekd:cnn, batch 512" in out
    assert not (tmp_path / "RESULTS.md").exists()


def test_distill_throughput_section_keeps_other_devices(tmp_path):
    md = tmp_path / "RESULTS.md"
    rows = [{"path": "(a) tutorial loop", "teacher_outputs": "online", "samples_per_s": 100.0, "wall_s": 2.0,
             "test_top1": 0.9},
            {"path": "(b) edgekd Trainer + cache", "teacher_outputs": "cache-memory", "samples_per_s": 250.0,
             "wall_s": 0.8, "test_top1": 0.91}]
    setup = {"device": "Device A", "teacher": "t (1 params)", "student": "s (1 params)", "teacher_top1": 0.95,
             "train": 100, "torch": "x"}
    args = argparse.Namespace(
        teacher="t", student="s", teacher_kwargs={}, student_kwargs={"hidden": 8}, device="cpu", epochs=1,
        teacher_epochs=1, batch=64, size=8, tile=1, repeats=1, lr=0.01, temperature=4.0, alpha=0.9)
    first = distill_throughput.markdown(rows, setup, args)
    assert "| (b) edgekd Trainer + cache | cache-memory | 250 | 2.50× | 0.8 | 91.00% |" in first
    assert "--student-kwargs '{\"hidden\": 8}'" in first
    distill_throughput.write_section(md, first)
    distill_throughput.write_section(md, distill_throughput.markdown(rows, {**setup, "device": "Device B"}, args))
    distill_throughput.write_section(md, first)  # a rerun on device A replaces A's subsection only
    text = md.read_text()
    assert text.count("### Device A: t → s") == 1 and text.count("### Device B: t → s") == 1
    assert text.count("## Distillation throughput") == 1


def test_selection_rules(capsys, tmp_path, torch_one_thread):
    """Every rule's picks come from validation only and are scored on test; the gain is paired by seed."""
    from edgekd.benchmarks.suites import selection_rules

    recipe = tmp_path / "tiny.yaml"
    recipe.write_text("name: tiny\ndata: {limit: 400}\nteacher:\n  kwargs: {channels: [8, 16], hidden: 16}\n"
                      "  train: {epochs: 2}\nstudent:\n  kwargs: {channels: [4, 8], hidden: 8}\n"
                      "train: {epochs: 3}\n")
    out = run_suite(selection_rules, capsys, "--recipe", str(recipe), "--seeds", "2", "--no-write",
                    "--results", str(tmp_path / "RESULTS.md"))
    header, rows = table(out)
    assert header[0] == "rule" and [r[0] for r in rows] == ["last", "best-val-loss", "best-val-top1",
                                                            "smoothed-val-top1"]
    assert rows[0][4] == "[3, 3] / [3, 3]"  # "last" keeps the final epoch of every training
    assert not (tmp_path / "RESULTS.md").exists()
    scored = selection_rules.score([{"kind": k, "history": [
        {"epoch": 1, "val_top1": 0.5, "val_loss": 1.0, "test_top1": 0.50},
        {"epoch": 2, "val_top1": 0.9, "val_loss": 0.8, "test_top1": 0.60},  # a one-image validation spike
        {"epoch": 3, "val_top1": 0.8, "val_loss": 0.5, "test_top1": 0.80}]} for k in ("kd", "baseline")],
        ["last", "best-val-top1", "best-val-loss"])
    assert [s["epochs"][0] for s in scored] == [[3], [2], [3]]


def test_fashion_mnist_suite_on_a_laid_out_folder(capsys, tmp_path, torch_one_thread):
    """The real-data suite's code path on a Fashion-MNIST-shaped folder (synthetic images, the real layout):
    the 3-seed table, the INT8 drop and the cached-views vs online-teacher comparison."""
    from edgekd.benchmarks.suites import fashion_mnist
    from edgekd.datasets import layout_fashion_mnist
    from tests.test_datasets import fake_archives

    layout_fashion_mnist(tmp_path / "fm", tmp_path / "src", fake_archives(tmp_path / "src", 300, 100))
    tiny = ["train.epochs=2", "teacher.train.epochs=1", "bench.min_runs=10", "bench.min_time_s=0.01",
            "bench.warmup_s=0", "bench.rounds=2", "quantize.calib_samples=32"]
    out = run_suite(fashion_mnist, capsys, "--root", str(tmp_path / "fm"), "--out", str(tmp_path / "runs"),
                    "--seeds", "2", "--compare-seeds", "1", *[a for s in tiny for a in ("--set", s)], "--no-write",
                    "--results", str(tmp_path / "RESULTS.md"))
    header, rows = table(out)
    assert header[0] == "teacher" and len(rows[0]) == 7 and rows[0][5] in ("gain", "loss", "within noise")
    assert "| 0 |" in out and "| 1 |" in out, "one row per seed"
    assert "| auto | cache-memory (random crop with 2-pixel padding, horizontal flip; 2 view(s) replayed) |" in out
    assert "| off | online (random crop with 2-pixel padding, horizontal flip; a fresh view each epoch) |" in out
    assert "Augmentation itself: " in out and "without" in out, "the augmented student is compared with the recipe's"
    assert not (tmp_path / "RESULTS.md").exists()
