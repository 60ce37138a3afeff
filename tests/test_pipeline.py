"""End to end: `edgekd run` writes every promised file, results.json follows the schema, the bundle runs
with numpy + onnxruntime alone."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT, torch_blocked_env

ARTIFACTS = {"teacher-pytorch", "student-pytorch", "baseline-pytorch", "teacher-onnx-fp32",
             "student-onnx-fp32", "student-onnx-int8"}


def test_run_writes_every_file(tiny_run):
    for rel in ("results.json", "report.md", "pareto.png", "recipe.yaml", "data.json", "RUN_COMPLETE",
                "bundle/model.onnx", "bundle/model.json", "bundle/SHA256SUMS", "onnx/student.onnx",
                "onnx/teacher.onnx", "onnx/student-int8.onnx", "weights/student.safetensors"):
        assert (tiny_run / rel).is_file(), rel
    assert not list(tiny_run.rglob("*.tmp")), "no temp files left behind"
    report = (tiny_run / "report.md").read_text()
    for section in ("## Artifacts", "## Distillation", "## Export parity", "## Quantization", "## Bundle",
                    "## Device", "pareto.png"):
        assert section in report
    assert not list((tiny_run / "onnx").glob("*.data")), "ONNX files are self-contained"


def test_results_follow_the_schema(tiny_run):
    res = json.loads((tiny_run / "results.json").read_text())
    assert res["schema_version"] == 1
    assert {"cpu", "cores", "os", "python", "torch", "onnxruntime"} <= set(res["device"])
    assert isinstance(res["device"]["cores"], int)
    assert {a["name"] for a in res["artifacts"]} == ARTIFACTS
    for a in res["artifacts"]:
        assert a["role"] in ("teacher", "student", "baseline")
        assert a["format"] in ("pytorch", "onnx", "tensorrt")
        assert a["precision"] in ("fp32", "fp16", "int8")
        assert 0.0 <= a["top1"] <= 1.0 and a["size_bytes"] > 0 and a["params"] > 0 and a["batch"] == 1
        assert set(a["latency_ms"]) == {"p50", "p90", "p99", "mean"}
        assert a["latency_ms"]["p50"] <= a["latency_ms"]["p90"] <= a["latency_ms"]["p99"]
        assert a["throughput_sps"] > 0
    d = res["distillation"]
    assert {"temperature", "alpha", "teacher_top1", "student_top1", "baseline_top1", "gain"} <= set(d)
    assert d["gain"] == pytest.approx(d["student_top1"] - d["baseline_top1"])
    assert res["export"]["max_abs_diff"] <= 1e-4
    assert 0.99 <= res["export"]["top1_agreement"] <= 1.0
    assert res["bundle"]["chosen"] in ("student-onnx-fp32", "student-onnx-int8")
    assert set(res["bundle"]["reasons"]) == {"student-onnx-fp32", "student-onnx-int8"}


def test_bundle_choice_is_the_fastest_within_tolerance(tiny_run):
    from edgekd.shipping import choose_bundle

    res = json.loads((tiny_run / "results.json").read_text())
    rows = [dict(r) for r in res["artifacts"]]
    fp32 = next(r for r in rows if r["name"] == "student-onnx-fp32")
    int8 = next(r for r in rows if r["name"] == "student-onnx-int8")
    int8["latency_ms"] = {**int8["latency_ms"], "p50": fp32["latency_ms"]["p50"] * 1.5}  # a slower INT8
    chosen, reasons = choose_bundle(rows, tolerance=0.01)
    assert chosen["name"] == "student-onnx-fp32"
    assert "slower" in reasons["student-onnx-int8"]
    int8["latency_ms"]["p50"] = fp32["latency_ms"]["p50"] / 2
    int8["val_top1"] = fp32["val_top1"] - 0.05  # fast but inaccurate: never chosen
    chosen, reasons = choose_bundle(rows, tolerance=0.01)
    assert chosen["name"] == "student-onnx-fp32" and "rejected" in reasons["student-onnx-int8"]


def test_bundle_predicts_without_torch(tiny_run, tmp_path):
    import onnxruntime as ort
    from sklearn.datasets import load_digits

    digits = load_digits()
    np.savez(tmp_path / "imgs.npz", x=digits.images[:64])
    script = (
        "import sys, json, numpy as np\n"
        "from edgekd.deploy.runtime import load_bundle\n"
        f"p = load_bundle({str(tiny_run / 'bundle')!r})\n"
        f"labels, probs = p.predict(np.load({str(tmp_path / 'imgs.npz')!r})['x'])\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert probs.shape == (64, 10) and np.allclose(probs.sum(1), 1, atol=1e-4)\n"
        "print(json.dumps(labels))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=torch_blocked_env(tmp_path), cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    # Independently: normalise as data.json says and run the chosen ONNX file directly.
    norm = json.loads((tiny_run / "data.json").read_text())["normalization"]
    x = ((digits.images[:64, None] * norm["scale"] - norm["mean"][0]) / norm["std"][0]).astype(np.float32)
    sess = ort.InferenceSession(str(tiny_run / "bundle" / "model.onnx"))
    expected = [str(i) for i in sess.run(None, {"input": x})[0].argmax(1)]
    assert json.loads(proc.stdout) == expected


def test_teacher_is_cached_and_reused(tiny_run, tmp_path):
    from edgekd.pipeline import run_pipeline
    from edgekd.recipe import load_recipe
    from tests.conftest import TINY

    first = json.loads((tiny_run / "results.json").read_text())
    assert first["teacher_source"] == "trained now"
    res = run_pipeline(load_recipe("digits", TINY), tmp_path / "again", stages=["data", "teacher"])
    assert res["teacher_source"].startswith("cache ")
    assert res["teacher_test_top1"] == pytest.approx(first["distillation"]["teacher_top1"])


def test_distill_stages_alone_write_results(tmp_path):
    from edgekd.pipeline import run_pipeline
    from edgekd.recipe import load_recipe
    from tests.conftest import TINY

    out = tmp_path / "d"
    run_pipeline(load_recipe("digits", TINY + ["distill.baseline=false"]), out,
                 stages=["data", "teacher", "distill"])
    res = json.loads((out / "results.json").read_text())
    assert res["distillation"]["baseline_top1"] is None and res["artifacts"] == []
    assert (out / "weights" / "student.safetensors").is_file() and (out / "RUN_COMPLETE").is_file()
    assert not (out / "onnx").exists()


@pytest.mark.slow
def test_default_recipe_meets_accuracy_targets(tmp_path):
    """The shipped recipe, full training budget: the README's accuracy claims hold."""
    from edgekd.pipeline import run_pipeline
    from edgekd.recipe import load_recipe

    fast_bench = ["bench.min_runs=20", "bench.min_time_s=0.05", "bench.warmup_s=0.02"]
    results = run_pipeline(load_recipe("digits", fast_bench), tmp_path / "full")["final"]
    top1 = {a["name"]: a["top1"] for a in results["artifacts"]}
    assert top1["student-onnx-fp32"] >= top1["teacher-pytorch"] - 0.03
    assert top1["student-onnx-int8"] >= top1["student-onnx-fp32"] - 0.01
    assert results["export"]["max_abs_diff"] <= 1e-4
    teacher_params = next(a["params"] for a in results["artifacts"] if a["name"] == "teacher-pytorch")
    student_params = next(a["params"] for a in results["artifacts"] if a["name"] == "student-pytorch")
    assert teacher_params >= 100_000 and student_params * 10 <= teacher_params


@pytest.mark.parametrize("method", [
    ["distill.method=dkd", "distill.alpha=1.0", "distill.beta=8.0"],
    ["distill.method=fitnet", "distill.student_layers=[features.1, features.2]",
     "distill.teacher_layers=[features.1, features.2]"],
    ["distill.method=at", "distill.feature_weight=100", "distill.student_layers=[features.2]",
     "distill.teacher_layers=[features.2]"],
], ids=["dkd", "fitnet", "at"])
def test_every_kd_method_runs_through_edgekd_distill(tmp_path, method):
    from tests.conftest import TINY, run_cli

    out = tmp_path / "m"
    sets = [a for o in TINY + method + ["distill.baseline=false"] for a in ("--set", o)]
    proc = run_cli("distill", "--out", str(out), "-q", *sets)
    assert proc.returncode == 0, proc.stderr
    res = json.loads((out / "results.json").read_text())
    assert res["distillation"]["method"] == method[0].split("=")[1]
    assert res["distillation"]["teacher_outputs"] == ("online" if "dkd" not in method[0] else "cache-memory")
    assert 0.0 < res["distillation"]["student_top1"] <= 1.0


def test_wrong_feature_layer_fails_before_anything_is_written(tmp_path):
    from tests.conftest import run_cli

    out = tmp_path / "m"
    proc = run_cli("distill", "--out", str(out), "--set", "distill.method=fitnet",
                   "--set", "distill.student_layers=[features.9]", "--set", "distill.teacher_layers=[features.1]")
    assert proc.returncode == 2, proc.stderr
    assert "features.9" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


def test_export_command_on_a_run_folder(tiny_run, tmp_path):
    from edgekd.deploy.export import read_metadata
    from tests.conftest import run_cli

    proc = run_cli("export", str(tiny_run), "--out", str(tmp_path), "--simplify")
    assert proc.returncode == 0, proc.stderr
    assert "✓ logits" in proc.stdout and "max abs diff" in proc.stdout
    meta = read_metadata(tmp_path / "student.onnx")
    assert json.loads(meta["normalization"]) == json.loads((tiny_run / "data.json").read_text())["normalization"]
    assert meta["role"] == "student" and len(meta["source_sha256"]) == 64


def test_a_moved_run_folder_still_bundles(tiny_run, tmp_path, monkeypatch):
    import shutil

    from tests.conftest import run_cli

    moved = tmp_path / "elsewhere" / "run"
    shutil.copytree(tiny_run, moved)
    res = json.loads((moved / "results.json").read_text())
    assert all(not a["path"].startswith("/") for a in res["artifacts"])
    proc = run_cli("bundle", str(moved), "--artifact", "student-onnx-fp32", "--out", str(tmp_path / "b"),
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert run_cli("verify", str(tmp_path / "b")).returncode == 0
