"""End to end: `edgekd run` writes every promised file, results.json follows the schema, each stage saves a
typed record, `--stages` re-runs part of a finished run (or refuses without touching it), the bundle runs with
numpy + onnxruntime alone."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from edgekd.runfolder import RunFolder
from tests.conftest import ROOT, TINY, stage_artifact, torch_blocked_env

ARTIFACTS = {"teacher-pytorch", "student-pytorch", "baseline-pytorch", "teacher-onnx-fp32", "student-onnx-fp32",
             "student-onnx-int8", "student-onnx-int8-dynamic", "student-onnx-fp16"}
STAGES = ["teacher", "select", "tune", "distill", "export", "quantize", "benchmark", "report"]


def test_run_writes_every_file(tiny_run):
    for rel in ("results.json", "report.md", "pareto.png", "recipe.yaml", "data.json", "RUN_COMPLETE",
                "bundle/model.onnx", "bundle/model.json", "bundle/SHA256SUMS", "onnx/student.onnx",
                "onnx/teacher.onnx", "onnx/student-int8.onnx", "onnx/student-int8-dynamic.onnx",
                "onnx/student-fp16.onnx", "weights/student.safetensors",
                *(f"stages/{s}.json" for s in STAGES)):
        assert (tiny_run / rel).is_file(), rel
    assert not list(tiny_run.rglob("*.tmp")), "no temp files left behind"
    report = (tiny_run / "report.md").read_text()
    for section in ("## Artifacts", "## Distillation", "## Export parity", "## Quantization", "## Bundle",
                    "## Device", "pareto.png"):
        assert section in report
    assert not list((tiny_run / "onnx").glob("*.data")), "ONNX files are self-contained"


def test_results_follow_the_schema(tiny_run):
    from edgekd.benchmarks.results import load_results

    doc = load_results(tiny_run / "results.json")  # strict: every key and type checked
    assert doc.schema_version == 2 and doc.kind == "run"
    assert doc.device.cores >= 1 and doc.device.torch and doc.device.onnxruntime
    assert {a.name for a in doc.artifacts} == ARTIFACTS
    for a in doc.artifacts:
        assert a.role in ("teacher", "student", "baseline") and a.format in ("pytorch", "onnx")
        assert a.precision in ("fp32", "fp16", "int8") and a.batch == 1
        assert 0.0 <= a.top1 <= 1.0 and 0.0 <= a.val_top1 <= 1.0 and a.size_bytes > 0 and a.params > 0
        assert a.latency.p50 <= a.latency.p90 <= a.latency.p99 and len(a.latency.round_p50s) >= 1
        assert a.throughput_sps > 0 and a.throughput_batch == 64
    d = doc.distillation
    assert d["gain"] == pytest.approx(d["student_top1"] - d["baseline_top1"])
    parity = {m["name"]: m["details"]["parity"] for m in doc.export["models"]}
    assert parity["student-onnx-fp32"]["max_abs_diff"] <= 1e-4
    assert {m["details"]["exporter"] for m in doc.export["models"]} == {"dynamo"}
    assert doc.bundle.chosen in {a.name for a in doc.artifacts if a.role == "student" and a.format == "onnx"}
    assert doc.bundle.decision.startswith(f"ship {doc.bundle.chosen}")


def test_results_validate_against_the_published_json_schema(tiny_run, tmp_path):
    """docs/results.schema.json is generated from the classes and validates real files (run and bench)."""
    jsonschema = pytest.importorskip("jsonschema")
    from edgekd.benchmarks.results import results_schema
    from edgekd.cli import main

    published = json.loads((ROOT / "docs" / "results.schema.json").read_text())
    assert published == results_schema(), "regenerate: python -m edgekd.benchmarks.results --schema"
    jsonschema.validate(json.loads((tiny_run / "results.json").read_text()), published)
    bench = tmp_path / "bench.json"
    assert main(["bench", str(tiny_run / "bundle"), "--json", str(bench), "--min-runs", "10", "--min-time-s",
                 "0.01", "--warmup-s", "0", "--rounds", "1"]) == 0
    jsonschema.validate(json.loads(bench.read_text()), published)
    broken = json.loads(bench.read_text())
    broken["artifacts"][0]["latency"]["p50"] = "fast"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, published)


def test_every_stage_record_loads_back_typed(tiny_run):
    from edgekd.pipeline import load_fresh, pipeline
    from edgekd.recipe import load_recipe

    run = RunFolder(tiny_run)
    records, artifacts, stale = load_fresh(run, load_recipe(run.recipe), pipeline())
    assert list(records) == ["data", *STAGES] and not stale
    assert artifacts["distill"].student.weights.path == "weights/student.safetensors"
    assert {m.name for m in artifacts["quantize"].models} == {"student-onnx-int8", "student-onnx-int8-dynamic",
                                                              "student-onnx-fp16"}


@pytest.fixture
def finished(tiny_run, tmp_path):
    """A private copy of the finished tiny run (tests below change it)."""
    return shutil.copytree(tiny_run, tmp_path / "run")


def _run(out, *extra):
    from edgekd.cli import main

    sets = [a for o in TINY for a in ("--set", o)]
    return main(["run", "--out", str(out), "-q", *sets, *extra])


def test_stages_rebenchmark_a_finished_run(finished):
    before = json.loads((finished / "results.json").read_text())
    weights = (finished / "weights" / "student.safetensors").read_bytes()
    assert _run(finished, "--stages", "benchmark,report") == 0
    after = json.loads((finished / "results.json").read_text())
    assert {a["name"] for a in after["artifacts"]} == {a["name"] for a in before["artifacts"]}
    assert after["created"] >= before["created"] and after["distillation"] == before["distillation"]
    assert (finished / "weights" / "student.safetensors").read_bytes() == weights, "training was not re-run"
    assert (finished / "RUN_COMPLETE").is_file()


def test_stages_reexport_a_finished_run_and_mark_it_incomplete(finished):
    assert _run(finished, "--stages", "export", "--set", "export.exporter=torchscript") == 0
    assert stage_artifact(finished, "export")["exporter"] == "torchscript"
    assert not (finished / "RUN_COMPLETE").exists(), "quantize/benchmark/report are now stale"
    assert _run(finished, "--resume") == 0, "resume re-runs only the stale stages"
    assert (finished / "RUN_COMPLETE").is_file()
    assert {m["details"]["exporter"] for m in json.loads((finished / "results.json").read_text())["export"][
        "models"]} == {"torchscript"}


@pytest.mark.parametrize("args,match", [
    (["--stages", "report", "--set", "bench.rounds=3"], "needs 'benchmark'"),
    (["--stages", "export,report"], "would make it stale"),
    (["--stages", "benchmark", "--set", "train.epochs=3"], "train section"),
])
def test_a_refused_stage_subset_leaves_the_folder_byte_identical(finished, capsys, args, match):
    before = RunFolder(finished).snapshot()
    assert _run(finished, *args) == 2
    err = capsys.readouterr().err
    assert "cannot run this stage subset" in err and match in err.replace("\n", " ") and "nothing was changed" in err
    assert RunFolder(finished).snapshot() == before


def test_a_replaced_weights_file_makes_its_stage_stale(finished, capsys):
    (finished / "weights" / "student.safetensors").write_bytes(b"tampered")
    assert _run(finished, "--stages", "benchmark,report") == 2
    assert "changed since it was made" in capsys.readouterr().err


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
    # Independently: normalise as the data record's contract says and run the bundled ONNX file directly.
    pre = stage_artifact(tiny_run, "data")["preprocessing"]
    x = ((digits.images[:64, None] * pre["scale"] - pre["mean"][0]) / pre["std"][0]).astype(np.float32)
    sess = ort.InferenceSession(str(tiny_run / "bundle" / "model.onnx"))
    expected = [str(i) for i in sess.run(None, {"input": x})[0].argmax(1)]
    assert json.loads(proc.stdout) == expected


def test_teacher_is_cached_and_reused(tiny_run, tmp_path):
    from edgekd.pipeline import run_pipeline
    from edgekd.recipe import load_recipe

    first = stage_artifact(tiny_run, "teacher")
    assert first["source"] == "trained now"
    res = run_pipeline(load_recipe("digits", TINY), tmp_path / "again", stages=["data", "teacher"])
    assert res.artifacts["teacher"].source.startswith("cache ")
    assert res.artifacts["teacher"].model.test_top1 == pytest.approx(first["model"]["test_top1"])
    assert res.ran == ("data", "teacher") and not res.complete


def test_distill_stages_alone_write_records(tmp_path):
    from edgekd.pipeline import run_pipeline
    from edgekd.recipe import load_recipe

    out = tmp_path / "d"
    res = run_pipeline(load_recipe("digits", TINY + ["distill.baseline=false"]), out,
                       stages=["data", "teacher", "select", "tune", "distill"])
    assert res.artifacts["distill"].baseline is None and not (out / "results.json").exists()
    assert (out / "weights" / "student.safetensors").is_file() and not (out / "RUN_COMPLETE").exists()
    assert not (out / "onnx").exists()


@pytest.mark.slow
def test_default_recipe_meets_accuracy_targets(tmp_path):
    """The shipped recipe, full training budget (one of its seeds): the README's accuracy claims hold."""
    from edgekd.pipeline import run_pipeline
    from edgekd.recipe import load_recipe

    fast_bench = ["bench.min_runs=20", "bench.min_time_s=0.05", "bench.warmup_s=0.02", "bench.rounds=2",
                  "distill.seeds=1"]
    res = run_pipeline(load_recipe("digits", fast_bench), tmp_path / "full")
    rows = {r.name: r for r in res.artifacts["benchmark"].rows}
    assert rows["student-onnx-fp32"].top1 >= rows["teacher-pytorch"].top1 - 0.03
    assert rows["student-onnx-int8"].top1 >= rows["student-onnx-fp32"].top1 - 0.01
    parity = res.artifacts["export"].models[0].details["parity"]
    assert parity["max_abs_diff"] <= 1e-4
    assert rows["teacher-pytorch"].params >= 100_000 and rows["student-pytorch"].params * 10 <= rows[
        "teacher-pytorch"].params


@pytest.mark.parametrize("method", [
    ["distill.method=dkd", "distill.alpha=1.0", "distill.beta=8.0"],
    ["distill.method=fitnet", "distill.student_layers=[features.1, features.2]",
     "distill.teacher_layers=[features.1, features.2]"],
    ["distill.method=at", "distill.feature_weight=100", "distill.student_layers=[features.2]",
     "distill.teacher_layers=[features.2]"],
], ids=["dkd", "fitnet", "at"])
def test_every_kd_method_runs_through_edgekd_distill(tmp_path, method):
    from edgekd.cli import main

    out = tmp_path / "m"
    sets = [a for o in TINY + method + ["distill.baseline=false"] for a in ("--set", o)]
    assert main(["distill", "--out", str(out), "-q", *sets]) == 0
    dist = stage_artifact(out, "distill")
    assert dist["method"] == method[0].split("=")[1]
    assert dist["teacher_outputs"] == ("online" if "dkd" not in method[0] else "cache-memory")
    assert 0.0 < dist["student"]["test_top1"] <= 1.0


def test_wrong_feature_layer_fails_before_anything_is_written(tmp_path, capsys):
    from edgekd.cli import main

    out = tmp_path / "m"
    assert main(["distill", "--out", str(out), "--set", "distill.method=fitnet",
                 "--set", "distill.student_layers=[features.9]", "--set", "distill.teacher_layers=[features.1]"]) == 2
    err = capsys.readouterr().err
    assert "features.9" in err and "Traceback" not in err
    assert not out.exists()


def test_export_command_on_a_run_folder(tiny_run, tmp_path):
    from edgekd.deploy.export import read_metadata
    from edgekd.deploy.runtime.preprocess import from_metadata, parse_preprocessing
    from tests.conftest import run_cli

    proc = run_cli("export", str(tiny_run), "--out", str(tmp_path), "--simplify")
    assert proc.returncode == 0, proc.stderr
    assert "✓ logits" in proc.stdout and "max abs diff" in proc.stdout and "dynamo exporter" in proc.stdout
    meta = read_metadata(tmp_path / "student.onnx")
    assert from_metadata(meta) == parse_preprocessing(stage_artifact(tiny_run, "data")["preprocessing"])
    assert meta["role"] == "student" and len(meta["source_sha256"]) == 64


def test_a_moved_run_folder_still_bundles(tiny_run, tmp_path):
    from tests.conftest import run_cli

    moved = tmp_path / "elsewhere" / "run"
    shutil.copytree(tiny_run, moved)
    res = json.loads((moved / "results.json").read_text())
    assert all(not a["path"].startswith("/") for a in res["artifacts"])
    proc = run_cli("bundle", str(moved), "--artifact", "student-onnx-fp32", "--out", str(tmp_path / "b"),
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert run_cli("verify", str(tmp_path / "b")).returncode == 0


def test_seeds_report_the_gain_with_its_interval_everywhere(tmp_path, capsys):
    """`--seeds 3`: three students and baselines, the paired gain (mean ± std, 95% interval) in results.json,
    the report and the terminal, and which seed's student is shipped (chosen on validation, never test)."""
    from edgekd.stats import paired_gain

    out = tmp_path / "seeds"
    capsys.readouterr()
    assert _run(out, "--seeds", "3", "--stages", "data,teacher,distill") == 0  # (select, tune: off, added)
    printed = capsys.readouterr().out
    for name in ("student", "student-s1", "student-s2", "baseline", "baseline-s1", "baseline-s2"):
        assert (out / "weights" / f"{name}.safetensors").is_file(), name
    dist = stage_artifact(out, "distill")
    seeds = dist["seeds"]
    assert [s["seed"] for s in seeds] == [0, 1, 2]
    gain = dist["gain"]
    expected = paired_gain([s["student_top1"] for s in seeds], [s["baseline_top1"] for s in seeds])
    assert gain["n"] == 3 and gain["mean"] == pytest.approx(expected.mean) and gain["std"] == pytest.approx(expected.std)
    assert gain["ci_low"] <= gain["mean"] <= gain["ci_high"] and gain["verdict"] in ("gain", "loss", "within noise")
    shipped = max(seeds, key=lambda s: s["student_val_top1"])
    assert dist["shipped_seed"] == shipped["seed"] and "validation top-1" in dist["shipped_because"]
    assert "distillation: KD gain" in printed and "over 3 seeds (95% interval" in printed

    assert _run(out, "--seeds", "3", "--resume") == 0  # the rest of the pipeline: report and results.json
    doc = json.loads((out / "results.json").read_text())["distillation"]
    assert doc["gain_over_seeds"]["n"] == 3 and doc["shipped_seed"] == shipped["seed"]
    md = (out / "report.md").read_text()
    assert "## Seeds (test top-1" in md and f"| {shipped['seed']} (shipped) |" in md
    assert f"KD gain {100 * gain['mean']:+.2f} ± {100 * gain['std']:.2f} pp over 3 seeds" in md
