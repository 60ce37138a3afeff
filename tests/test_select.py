"""Automated distillation, the student choice: structural signatures, a synthetic device profile (a candidate
over budget is never chosen; one the profile lacks is an error naming it), and the whole `edgekd run` with the
choice and the search on, timed here."""

from __future__ import annotations

import json

import pytest

from tests.conftest import TINY, stage_artifact

BASE = ["data.limit=300", "teacher.train.epochs=1", "train.epochs=1", "distill.baseline=false",
        "students.rank_epochs=1"]
#: three candidates; the widest would rank first on accuracy
CANDIDATES = [{"name": "tiny", "model": "edgekd:cnn", "kwargs": {"channels": [4, 8, 8], "hidden": 8}},
              {"name": "small", "model": "edgekd:cnn", "kwargs": {"channels": [8, 16, 16], "hidden": 16}},
              {"name": "wide", "model": "edgekd:cnn", "kwargs": {"channels": [32, 64, 128], "hidden": 128}}]
#: the synthetic device's p50 at batch 1, in ms
DEVICE_MS = {"tiny": 0.4, "small": 0.8, "wide": 5.0}


def _recipe(*extra: str, candidates=CANDIDATES):
    from edgekd.recipe import load_recipe

    return load_recipe("digits", [*BASE, f"students.candidates={json.dumps(candidates)}", *extra])


@pytest.fixture(scope="module")
def device_rows(tmp_path_factory) -> dict:
    """What a device's `edgekd bench --json` would hold for each candidate (exported once: the rows carry the
    real structural signatures)."""
    from edgekd.benchmarks.results import Latency, ResultRow
    from edgekd.data import load_data
    from edgekd.tuning.students import export_candidates

    r = _recipe()
    exported = export_candidates(r, load_data(r.data, r.seed), tmp_path_factory.mktemp("candidates"))
    return {e.name: ResultRow(e.path.stem, "onnx", "fp32", "onnxruntime 1.x", 1, path=f"/device/{e.path.name}",
                              params=e.params, latency=Latency(*[DEVICE_MS[e.name]] * 8, runs=100),
                              extra={"signature": e.signature}) for e in exported}


def _profile(tmp_path, rows: dict, names=tuple(DEVICE_MS)) -> str:
    """A synthetic device profile (an `edgekd bench --json` document) holding the candidates in ``names``."""
    from edgekd.benchmarks.results import Device, bench_document
    from edgekd.deploy.typed import to_json

    doc = bench_document([rows[n] for n in names], settings={},
                         device=Device(cpu="ARMv8 (synthetic)", cores=6, machine="aarch64"))
    path = tmp_path / "jetson.json"
    path.write_text(json.dumps(to_json(doc)))
    return str(path)


def _conv_net(path, channels: int, seed: int):
    """A Conv-Relu-Flatten-Gemm ONNX file with random weights (``channels`` sets the structure)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name) for name, shape in
               (("w", (channels, 1, 3, 3)), ("fc", (channels * 36, 10)))]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"]), helper.make_node("Gemm", ["f", "fc"], ["logits"])]
    graph = helper.make_graph(nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], weights)
    onnx.save(helper.make_model(graph), str(path))
    return path


def test_signature_is_the_structure_not_the_weights(tmp_path):
    from edgekd.benchmarks.profile import structural_signature
    from edgekd.deploy.runtime.onnxinfo import read_onnx

    sigs = [structural_signature(read_onnx(_conv_net(tmp_path / f"m{i}.onnx", c, seed=i)))
            for i, c in enumerate((8, 8, 16))]
    assert sigs[0] == sigs[1] != sigs[2], "same structure, other weights: same; other width: different"


def test_a_candidate_over_budget_is_never_chosen(tmp_path, device_rows):
    from edgekd.pipeline import run_pipeline
    from edgekd.tuning import select_student

    recipe = _recipe("students.latency_budget_ms=1.0", f"students.profile={_profile(tmp_path, device_rows)}")
    art = select_student(recipe, tmp_path / "run")
    by_name = {c.name: c for c in art.candidates}
    assert art.chosen in ("tiny", "small") and by_name["wide"].over_budget
    assert by_name["wide"].val_top1 is None, "dropped before any training"
    assert [by_name[n].latency_ms for n in DEVICE_MS] == list(DEVICE_MS.values())
    assert all(c.latency_source.startswith("profile jetson.json (ARMv8 (synthetic)") for c in art.candidates)
    assert (tmp_path / "run" / "students.png").is_file()

    out = run_pipeline(recipe, tmp_path / "run", stages=["tune", "distill"], resume=True)
    assert out.artifacts["distill"].student.params == by_name[art.chosen].params, "distill trains the winner"
    exported = run_pipeline(recipe, tmp_path / "run", stages=["export"], resume=True)  # rebuilt from its record
    assert exported.artifacts["export"].models[0].params == by_name[art.chosen].params


def test_a_candidate_missing_from_the_profile_is_an_error_naming_it(tmp_path, device_rows):
    from edgekd.deploy.errors import UsageError
    from edgekd.tuning import select_student

    profile = _profile(tmp_path, device_rows, ("tiny", "wide"))
    recipe = _recipe("students.latency_budget_ms=1.0", f"students.profile={profile}")
    with pytest.raises(UsageError, match=r"no timed row at batch 1 for candidate\(s\) 'small'") as info:
        select_student(recipe, tmp_path / "run")
    assert "--export-candidates" in info.value.hint
    assert not (tmp_path / "run" / "stages" / "select.json").exists()


def test_no_candidate_within_budget_is_an_error(tmp_path, device_rows):
    from edgekd.deploy.errors import UsageError
    from edgekd.tuning import select_student

    recipe = _recipe("students.latency_budget_ms=0.1", f"students.profile={_profile(tmp_path, device_rows)}")
    with pytest.raises(UsageError, match="no candidate student meets students.latency_budget_ms 0.1: the "
                                         "fastest, 'tiny', has p50 0.4 ms"):
        select_student(recipe, tmp_path / "run")


def test_export_candidates_bench_them_and_choose_from_that_profile(tmp_path):
    """The device workflow: `edgekd tune --export-candidates`, `edgekd bench --json` on those files (here
    standing in for the device), then the choice reads that profile."""
    from edgekd.benchmarks.results import load_results
    from edgekd.cli import main
    from edgekd.tuning import select_student

    cands = f"students.candidates={json.dumps(CANDIDATES[:2])}"
    assert main(["tune", "--export-candidates", str(tmp_path / "c"), "--set", cands, *_sets(BASE)]) == 0
    files = sorted(str(p) for p in (tmp_path / "c").glob("*.onnx"))
    assert len(files) == 2
    assert main(["bench", *files, "--json", str(tmp_path / "device.json"), "--min-runs", "10", "--min-time-s",
                 "0.01", "--warmup-s", "0", "--rounds", "1"]) == 0
    rows = load_results(tmp_path / "device.json").artifacts
    assert all(r.extra["signature"].startswith("s1-") for r in rows)
    art = select_student(_recipe(f"students.profile={tmp_path / 'device.json'}", candidates=CANDIDATES[:2]),
                         tmp_path / "run")
    assert sorted(c.latency_ms for c in art.candidates) == sorted(r.p50 for r in rows)


def _sets(overrides) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


@pytest.mark.slow
def test_edgekd_run_with_choice_and_search_timed_here(tmp_path):
    from edgekd.cli import main

    out = tmp_path / "run"
    sets = [*TINY, "distill.baseline=false", "students.rank_epochs=1", "tune.enabled=true", "tune.trials=2",
            "tune.epochs_per_trial=1", f"students.candidates={json.dumps(CANDIDATES[:2])}"]
    assert main(["run", "--out", str(out), "-q", *_sets(sets)]) == 0
    choice = stage_artifact(out, "select")
    assert all(c["latency_ms"] > 0 and c["latency_source"].startswith("here") for c in choice["candidates"])
    assert stage_artifact(out, "distill")["temperature"] == stage_artifact(out, "tune")["best"]["temperature"]
    results = json.loads((out / "results.json").read_text())
    assert results["distillation"]["student_choice"]["chosen"] == choice["chosen"]
    report = (out / "report.md").read_text()
    for part in ("## Student choice", "students.png", "## Distillation search", "tune.png"):
        assert part in report
    assert (out / "RUN_COMPLETE").is_file()
