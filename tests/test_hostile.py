"""A hostile or careless user: edgekd never deletes or overwrites what it did not make, runs no foreign code
from a recipe, refuses bombs, tampered bundles, garbage inputs and empty splits with one clear line and its
exit code, lets one process write a run folder, sees content changes, resumes from any point, and handles
SIGTERM like Ctrl-C. Real subprocesses, signals and files throughout."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgekd.cli import main
from tests.conftest import ROOT, TINY, run_cli


def _sets(overrides) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def _one_error(err: str, words: str) -> None:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert sum(line.startswith("error:") for line in lines) == 1, err
    assert "Traceback" not in err and words in err, err


# ------------------------------------------------------------------------- 1. never delete what we did not make
def test_bundle_out_never_replaces_a_foreign_folder(tiny_run, tmp_path, capsys):
    desktop = tmp_path / "Desktop"
    desktop.mkdir()
    (desktop / "thesis.docx").write_text("years of work")
    assert main(["bundle", str(tiny_run), "--out", str(desktop)]) == 2
    _one_error(capsys.readouterr().err, "not an edgekd bundle")
    assert (desktop / "thesis.docx").read_text() == "years of work"


@pytest.mark.parametrize("inside", ["", "bundle", "weights"])
def test_bundle_out_inside_the_run_is_refused(tiny_run, tmp_path, capsys, inside):
    run = shutil.copytree(tiny_run, tmp_path / "run")
    before = sorted(p.name for p in run.iterdir())
    assert main(["bundle", str(run), "--out", str(run / inside)]) == 2
    _one_error(capsys.readouterr().err, "inside the run folder")
    assert sorted(p.name for p in run.iterdir()) == before


def test_single_file_outputs_never_overwrite_foreign_files(tiny_run, tmp_path, capsys):
    notes = tmp_path / "notes.onnx"
    notes.write_text("not a model, mine")
    src = tiny_run / "onnx" / "student.onnx"
    assert main(["quantize", str(src), "--mode", "dynamic", "--out", str(notes)]) == 2
    _one_error(capsys.readouterr().err, "edgekd did not write it")
    assert main(["quantize", str(src), "--mode", "dynamic", "--out", str(src)]) == 2
    _one_error(capsys.readouterr().err, "is the input model")
    report = tmp_path / "report"
    report.mkdir()
    (report / "report.md").write_text("# my own report\n")
    assert main(["report", str(tiny_run / "results.json"), "--out", str(report)]) == 2
    assert (report / "report.md").read_text() == "# my own report\n"
    assert notes.read_text() == "not a model, mine"


def test_engine_print_trtexec_never_overwrites_a_foreign_file_and_checks_first(tiny_run, tmp_path):
    """`engine --print-trtexec` writes ENGINE.fp16.onnx (and `tune --export-candidates DIR` DIR/NN-*.onnx, below):
    neither replaces a user's file, and a refused command line writes nothing."""
    side = tmp_path / "e.engine.fp16.onnx"
    side.write_text("my own file")
    src = str(tiny_run / "onnx" / "student.onnx")
    proc = run_cli("engine", src, "--out", str(tmp_path / "e.engine"), "--print-trtexec")
    assert proc.returncode == 2 and "edgekd did not write it" in proc.stderr, proc.stderr
    assert side.read_text() == "my own file"
    proc = run_cli("engine", src, "--out", str(tmp_path / "f.engine"), "--print-trtexec", "--min-batch", "8",
                   "--max-batch", "2")
    assert proc.returncode == 2 and "batch profile" in proc.stderr, proc.stderr
    assert not (tmp_path / "f.engine.fp16.onnx").exists(), "nothing written before the check that refuses"


def test_tune_export_candidates_never_overwrites_a_foreign_file(tmp_path):
    folder = tmp_path / "cands"
    folder.mkdir()
    (folder / "00-cnn-x0.5.onnx").write_text("user's own model")
    proc = run_cli("tune", str(ROOT / "models" / "digits_automated.yaml"), "--out", str(tmp_path / "t"),
                   "--export-candidates", str(folder), "-q", "--set", "data.limit=600")
    assert proc.returncode == 2 and "edgekd did not write it" in proc.stderr, proc.stderr
    assert [p.name for p in folder.iterdir()] == ["00-cnn-x0.5.onnx"]
    assert (folder / "00-cnn-x0.5.onnx").read_text() == "user's own model"


SWAPPER = """
import sys
from pathlib import Path
from edgekd.deploy.bundle import write_bundle
from edgekd.deploy.runtime.bundle import read_manifest
import dataclasses
out, model = Path(sys.argv[1]), Path(sys.argv[2])
manifest = read_manifest(Path(sys.argv[3]))
i = 0
while True:  # rewrite the bundle forever, alternating the artifact name, until killed
    write_bundle(out, model, dataclasses.replace(manifest, artifact=f"v{i % 2}"))
    i += 1
"""


def test_sigkill_during_bundle_swaps_leaves_the_old_or_the_new_bundle(tiny_run, tmp_path):
    from edgekd.deploy.bundle import recover
    from edgekd.deploy.runtime.bundle import open_bundle

    out = tmp_path / "shipped"
    args = [sys.executable, "-c", SWAPPER, str(out), str(tiny_run / "bundle" / "model.onnx"), str(tiny_run / "bundle")]
    for delay in (0.3, 0.45, 0.6, 0.75, 0.9, 1.05):
        proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(delay)
        proc.kill()
        assert proc.wait() == -9, proc.stderr.read()
        recover(out)  # what the next write does first
        if out.exists():
            assert open_bundle(out).manifest.artifact in ("v0", "v1")
        assert not list(tmp_path.glob(".shipped.*")), "leftovers of the crashed swap were removed"


def test_a_crash_between_the_two_renames_is_recovered(tiny_run, tmp_path, monkeypatch):
    """Where the atomic exchange is unavailable, two renames; a crash between them parks the old bundle, and
    the next write (or recover) puts it back."""
    import edgekd.deploy.bundle as bundle_mod
    from edgekd.deploy.runtime.bundle import open_bundle, read_manifest

    out = shutil.copytree(tiny_run / "bundle", tmp_path / "shipped")
    monkeypatch.setattr(bundle_mod, "_exchange", lambda a, b: False)
    real_replace = os.replace

    def crash_after_first(src, dst):
        if Path(dst) == out and Path(src).is_dir():  # the second rename: new bundle into place
            raise KeyboardInterrupt("killed between the renames")
        real_replace(src, dst)

    monkeypatch.setattr(bundle_mod.os, "replace", crash_after_first)
    with pytest.raises(KeyboardInterrupt):
        bundle_mod.write_bundle(out, out / "model.onnx", read_manifest(out))
    assert not out.exists() and list(tmp_path.glob(".shipped.*.old")), "old bundle parked, new one not yet in"
    monkeypatch.setattr(bundle_mod.os, "replace", real_replace)
    bundle_mod.recover(out)
    assert open_bundle(out).manifest.artifact == read_manifest(tiny_run / "bundle").artifact


@pytest.mark.parametrize("existing", [False, True])
def test_look_alike_parked_and_staging_folders_of_a_user_survive(tiny_run, tmp_path, existing):
    """recover() touches only folders that carry edgekd's mark: a user's `.shipped.x.old` (even one holding a
    bundle) and `.shipped.x.staging` are neither removed nor moved into place."""
    if existing:
        shutil.copytree(tiny_run / "bundle", tmp_path / "shipped")
    backup = shutil.copytree(tiny_run / "bundle", tmp_path / ".shipped.my-backup.old")
    (backup / "precious.txt").write_text("precious")
    notes = tmp_path / ".shipped.notes.staging"
    notes.mkdir()
    (notes / "p2.txt").write_text("precious2")
    proc = run_cli("bundle", str(tiny_run), "--out", str(tmp_path / "shipped"))
    assert proc.returncode == 0, proc.stderr
    assert (backup / "precious.txt").read_text() == "precious" and (notes / "p2.txt").read_text() == "precious2"
    assert not (tmp_path / "shipped" / "precious.txt").exists()
    assert sorted(p.name for p in tmp_path.glob(".shipped.*")) == [".shipped.my-backup.old", ".shipped.notes.staging"]


# ------------------------------------------------------------------------- 2. a recipe naming a factory is code
@pytest.mark.parametrize("sets", [
    ["teacher.model=os:system", "teacher.kwargs={command: 'touch {marker}'}"],
    ["data.source=os:system", "data.kwargs={command: 'touch {marker}'}"],
    ["student.model=subprocess:run", "student.kwargs={args: [touch, '{marker}']}"],
    ["student.model=builtins:exec", "student.kwargs={source: \"open('{marker}', 'w')\"}"],
])
def test_standard_library_factories_are_refused_and_never_run(tmp_path, sets):
    marker = tmp_path / "ran"
    proc = run_cli("distill", "--out", str(tmp_path / "o"), "-q",
                   *_sets([s.replace("{marker}", str(marker)) for s in sets]))
    assert proc.returncode == 4, proc.stderr
    _one_error(proc.stderr, "standard library or builtins")
    assert not marker.exists() and not (tmp_path / "o").exists()


def test_no_factories_refuses_every_factory(tmp_path, capsys):
    (tmp_path / "zoo.py").write_text("import torch\ndef net(num_classes):\n    return torch.nn.Linear(64, num_classes)\n")
    sys.path.insert(0, str(tmp_path))
    try:
        assert main(["distill", "--no-factories", "--out", str(tmp_path / "o"), "-q",
                     *_sets(["student.model=zoo:net"])]) == 4
    finally:
        sys.path.remove(str(tmp_path))
    _one_error(capsys.readouterr().err, "factories are switched off")
    assert os.environ.get("EDGEKD_NO_FACTORIES") is None, "the switch holds for that command only"


@pytest.mark.parametrize("body,words", [
    ("def net(num_classes, **kw):\n    return None\n", "returned NoneType, not a torch.nn.Module"),
    ("def net(num_classes):\n    return None\n", "does not accept the recipe's arguments"),
], ids=["returns-none", "rejects-kwargs"])
def test_a_model_factory_that_returns_no_module_or_rejects_the_kwargs_is_exit_2(tmp_path, capsys, monkeypatch,
                                                                                 body, words):
    module = f"badzoo_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{module}.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "o"
    assert main(["distill", "--out", str(out), "-q", "--set", f"student.model={module}:net", *_sets(TINY)]) == 2
    err = capsys.readouterr().err
    _one_error(err, words)
    assert f"model factory '{module}:net'" in err and not out.exists()


# ------------------------------------------------------------------------- 3. YAML bombs, huge values
BOMB = "name: bomb\na: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True))


def test_a_yaml_bomb_is_refused_before_it_expands(tmp_path):
    recipe = tmp_path / "bomb.yaml"
    recipe.write_text(BOMB)
    assert recipe.stat().st_size < 1024
    proc = run_cli("run", str(recipe), "--out", str(tmp_path / "o"), timeout=60)
    assert proc.returncode == 3
    _one_error(proc.stderr, "billion laughs")
    assert not (tmp_path / "o").exists()


def test_huge_values_are_truncated_in_errors(capsys):
    assert main(["run", "--set", f"train.epochs={'x' * 100_000}", "--out", "/nonexistent/o"]) == 2
    err = capsys.readouterr().err
    assert "expected an integer" in err and "(100002 characters)" in err and len(err) < 2000


@pytest.mark.parametrize("setting,code,words", [
    ("k" * 100_000 + "=1", 2, "unknown key"),
    ("teacher.model=" + "zz" * 50_000 + ":f", 2, "cannot import module"),
    ("name=" + "<" * 100_000, 2, "name: expected 1 to 100 letters"),
    ("data.source=imagefolder:/" + "d" * 100_000, 3, "path too long"),
], ids=["unknown-key", "model", "name", "imagefolder-path"])
def test_every_long_value_is_truncated_in_its_error(tmp_path, capsys, setting, code, words):
    """Whatever the message, a quoted value of 100,000 characters is shortened (one place: EdgekdError), and
    nothing is written."""
    out = tmp_path / "o"
    assert main(["run", "--out", str(out), "-q", "--set", setting]) == code
    err = capsys.readouterr().err
    _one_error(err, words)
    assert "characters" in err and len(err) < 2000, len(err)
    assert not out.exists()


# ------------------------------------------------------------------------- 4. bundle integrity is complete
def _external_bundle(tmp_path: Path) -> Path:
    """A bundle whose weights live in external data in a subfolder (weights/w.bin)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgekd.deploy.runtime.preprocess import ImagePreprocessing
    from tests.conftest import write_tiny_bundle

    src = tmp_path / "src"
    (src / "weights").mkdir(parents=True)
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("Flatten", ["input"], ["f"]), helper.make_node("MatMul", ["f", "w"],
                                                                                             ["logits"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 2, 2])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save_model(model, str(src / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights/w.bin", size_threshold=0)
    pre = ImagePreprocessing(2, 2, 1, (0.0,), (1.0,), channel_order="L")
    return write_tiny_bundle(tmp_path / "bundle", src / "model.onnx", pre)


def test_external_data_in_a_subfolder_is_bundled_and_covered(tmp_path):
    from edgekd.deploy.bundle import verify_bundle
    from edgekd.deploy.errors import ChecksumMismatch
    from edgekd.deploy.runtime import load_bundle

    bundle = _external_bundle(tmp_path)
    assert "weights/w.bin" in (bundle / "SHA256SUMS").read_text()
    labels, _ = load_bundle(bundle).predict(np.full((2, 2, 2), 100.0, np.float32))
    assert len(labels) == 2
    cwd = os.getcwd()
    os.chdir(tmp_path)  # the checker resolves external data next to the model, not in the current folder
    try:
        assert any("onnx.checker" in line for line in verify_bundle(bundle))
    finally:
        os.chdir(cwd)
    data = bundle / "weights" / "w.bin"
    data.write_bytes(data.read_bytes()[::-1])
    with pytest.raises(ChecksumMismatch, match="weights/w.bin"):
        load_bundle(bundle)


@pytest.mark.parametrize("intruder", ["weights/evil.bin", "notes.txt", "link", "fifo"])
def test_unlisted_files_and_links_anywhere_in_a_bundle_are_refused(tmp_path, intruder):
    from edgekd.deploy.errors import ChecksumMismatch
    from edgekd.deploy.runtime import load_bundle

    bundle = _external_bundle(tmp_path)
    words = {"link": "symlink", "fifo": "not a plain file"}.get(intruder, "not covered by SHA256SUMS")
    if intruder == "link":
        (bundle / "link").symlink_to(bundle / "model.json")
    elif intruder == "fifo":
        os.mkfifo(bundle / "weights" / "pipe")
    else:
        (bundle / intruder).write_bytes(b"\0" * 16)
    with pytest.raises(ChecksumMismatch, match=words):
        load_bundle(bundle)


def test_external_data_escape_in_a_sparse_tensor_attribute_is_refused(tmp_path):
    from onnx import TensorProto, helper

    from edgekd.deploy.errors import SecurityError
    from edgekd.deploy.runtime.intake import check_model

    values = helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0])
    values.data_location = TensorProto.EXTERNAL
    values.external_data.add(key="location", value="../../etc/shadow")
    values.ClearField("float_data")
    sparse = helper.make_sparse_tensor(values, helper.make_tensor("i", TensorProto.INT64, [1], [0]), [4])
    node = helper.make_node("Constant", [], ["y"], sparse_value=sparse)
    graph = helper.make_graph([node], "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    path = tmp_path / "sparse.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString())
    with pytest.raises(SecurityError, match="outside the model folder"):
        check_model(path)


# ------------------------------------------------------------------------- 5. no answer from garbage
def test_non_finite_pixels_are_an_error_not_label_zero(tiny_run):
    from edgekd.deploy.errors import UsageError
    from edgekd.deploy.runtime import load_bundle

    predictor = load_bundle(tiny_run / "bundle")
    for bad in (np.full((1, 8, 8), np.nan, np.float32), np.full((1, 8, 8), np.inf, np.float32)):
        with pytest.raises(UsageError, match="NaN or infinite"):
            predictor.predict(bad)


def _edited_bundle(tiny_run: Path, tmp_path: Path, edit) -> Path:
    """A copy of the run's bundle with model.json edited and SHA256SUMS re-made (a consistent but wrong bundle)."""
    from edgekd.deploy.fileio import sha256_file

    bundle = shutil.copytree(tiny_run / "bundle", tmp_path / "bundle")
    meta = json.loads((bundle / "model.json").read_text())
    edit(meta)
    (bundle / "model.json").write_text(json.dumps(meta))
    names = [line.split("  ", 1)[1] for line in (bundle / "SHA256SUMS").read_text().splitlines()]
    (bundle / "SHA256SUMS").write_text("".join(f"{sha256_file(bundle / n)}  {n}\n" for n in names))
    return bundle


@pytest.mark.parametrize("edit,code,words", [
    (lambda m: m["preprocessing"].update(std=[0.0]), 3, "std values must be finite and > 0"),
    (lambda m: m["inputs"][0].update(name="pixels"), 5, "are not the model's"),
    (lambda m: m.update(labels=["only", "three", "labels"]), 3, "3 labels for 10 output classes"),
    (lambda m: m["preprocessing"].update(height=100_000, width=100_000), 8, "refusing to allocate it"),
], ids=["std-zero", "renamed-input", "label-count", "huge-size"])
def test_verify_checks_the_manifest_against_the_graph(tiny_run, tmp_path, capsys, edit, code, words):
    bundle = _edited_bundle(tiny_run, tmp_path, edit)
    assert main(["verify", str(bundle)]) == code
    _one_error(capsys.readouterr().err, words)


# ------------------------------------------------------------------------- 6. one writer per run folder
PAUSER = """
import sys, time
from pathlib import Path
from edgekd.pipeline import UI, run_pipeline
from edgekd.distill.trainer import Reporter
from edgekd.recipe import load_recipe

class Pause(Reporter):
    def fit_start(self, name, epochs, steps):
        Path(sys.argv[2]).touch()
        time.sleep(120)

class PausingUI(UI):
    def reporter(self, name):
        return Pause()

run_pipeline(load_recipe("digits", sys.argv[3:]), sys.argv[1], ui=PausingUI())
"""


def _start_paused(out: Path, started: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", PAUSER, str(out), str(started), *TINY], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for _ in range(600):
        if started.exists() or proc.poll() is not None:
            break
        time.sleep(0.1)
    assert started.exists(), proc.stderr.read() if proc.poll() is not None else "did not start in 60 s"
    return proc


def test_a_second_run_into_the_same_folder_is_refused_and_a_stale_lock_recovered(tmp_path, capsys):
    out = tmp_path / "run"
    first = _start_paused(out, tmp_path / "started")
    try:
        assert main(["run", "--out", str(out), "-q", *_sets(TINY)]) == 2
        _one_error(capsys.readouterr().err, f"is being written by edgekd pid {first.pid}")
    finally:
        first.kill()
        first.wait()
    assert (out / ".edgekd.lock").exists(), "SIGKILL leaves the lock file behind"
    assert main(["run", "--out", str(out), "-q", *_sets(TINY)]) == 0, "a stale lock does not block"
    assert (out / "RUN_COMPLETE").is_file() and not (out / ".edgekd.lock").exists()


# ------------------------------------------------------------------------- 7. caches and --resume see content
def test_image_folder_identity_changes_when_an_image_changes(tmp_path):
    pil = pytest.importorskip("PIL.Image")
    from edgekd.data import load_data
    from edgekd.recipe import load_recipe

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(10):
            pil.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    cfg = load_recipe("digits", [f"data.source=imagefolder:{tmp_path}", "data.val_fraction=0.2",
                                 "data.test_fraction=0.2"]).data
    first = load_data(cfg).identity
    assert load_data(cfg).identity == first
    pil.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "dog" / "3.png")  # same name, new content
    assert load_data(cfg).identity != first


# ------------------------------------------------------------------------- 8. bounded reads
def test_an_npz_that_declares_gigabytes_is_refused_from_its_header(tmp_path, tiny_run, capsys):
    import io
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (1_600_000_000, 1, 1, 1)})
    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("x.npy", header.getvalue() + bytes(4096))
        z.writestr("y.npy", header.getvalue())
    assert bomb.stat().st_size < 10_000
    assert main(["quantize", str(tiny_run / "onnx" / "student.onnx"), "--calib", str(bomb), "--out",
                 str(tmp_path / "q.onnx")]) == 8
    _one_error(capsys.readouterr().err, "GiB of arrays")
    assert main(["bench", str(tiny_run / "bundle"), "--data", str(bomb)]) == 8


# ------------------------------------------------------------------------- 9 + 11. no figures from nothing
@pytest.mark.parametrize("sets,code,words", [
    (["data.limit=12"], 2, "would be empty"),
    (["train.lr=.nan"], 2, "expected a finite number"),
    (["bench.min_runs=0"], 2, "outside [1"),
    (["bundle.tolerance=-0.1"], 2, "outside [0.0, 1.0]"),
    (["seed=-1"], 2, "seed: -1 is outside [0, 4294967295]"),
    (["seed=99999999999999"], 2, "seed: 99999999999999 is outside [0, 4294967295]"),
    (["name=" + "n" * 300], 2, "name: expected 1 to 100 letters"),
    (["name=../../escape"], 2, "name: expected 1 to 100 letters"),
], ids=["limit", "lr", "min_runs", "tolerance", "seed-negative", "seed-huge", "name-long", "name-path"])
def test_degenerate_values_are_refused_before_any_work(tmp_path, capsys, sets, code, words):
    out = tmp_path / "o"
    assert main(["run", "--out", str(out), "-q", *_sets(sets)]) == code
    _one_error(capsys.readouterr().err, words)
    assert not out.exists()


@pytest.mark.parametrize("argv,words", [
    (["export", "{run}", "--atol", "inf"], "not a finite number"),
    (["bench", "{run}/bundle", "--min-runs", "-1"], "not a finite number"),
])
def test_gates_cannot_be_switched_off_from_the_command_line(tiny_run, capsys, argv, words):
    with pytest.raises(SystemExit) as exc:
        main([a.replace("{run}", str(tiny_run)) for a in argv])
    assert exc.value.code == 2 and words in capsys.readouterr().err


# ------------------------------------------------------------------------- 10. --resume from any point
KILL_AT_STUDENT = """
import os, signal, sys
from edgekd.pipeline import UI, run_pipeline
from edgekd.distill.trainer import Reporter
from edgekd.recipe import load_recipe

class Die(Reporter):
    def fit_start(self, name, epochs, steps):
        os.kill(os.getpid(), signal.SIGKILL)   # after the teacher stage, before any student checkpoint

class KillingUI(UI):
    def reporter(self, name):
        return Die() if name == "student" else Reporter()

run_pipeline(load_recipe("digits", sys.argv[2:]), sys.argv[1], ui=KillingUI())
"""


def test_resume_after_the_teacher_before_any_student_checkpoint(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", KILL_AT_STUDENT, str(out), *TINY], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    assert (out / "stages" / "teacher.json").is_file() and not (out / "checkpoints" / "student").exists()
    resumed = run_cli("run", "--out", str(out), "--resume", *_sets(TINY))
    assert resumed.returncode == 0, resumed.stderr
    assert "found data, teacher" in resumed.stderr and "running distill, export" in resumed.stderr
    assert (out / "RUN_COMPLETE").is_file()


# ------------------------------------------------------------------------- 12. every user error has its code
def test_sigterm_is_handled_like_ctrl_c_and_the_run_resumes(tmp_path):
    out = tmp_path / "run"
    sets = _sets([o for o in TINY if not o.startswith("teacher.train.epochs")] + ["teacher.train.epochs=8"])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "edgekd.cli", "run", "--out", str(out), "-q", *sets], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    checkpoint = out / "checkpoints" / "teacher" / "last.pt"
    for _ in range(1200):
        if checkpoint.exists() or proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1].startswith("interrupted (SIGTERM)") and "--resume" in err
    assert not list(out.rglob("*.tmp")), "nothing half-written is kept"
    resumed = run_cli("run", "--out", str(out), "--resume", "-q", *sets)
    assert resumed.returncode == 0, resumed.stderr
    assert (out / "RUN_COMPLETE").is_file()


def test_out_of_memory_is_exit_8(capsys):
    import torch

    from edgekd.cli import translate
    from edgekd.deploy.errors import ResourceError

    with pytest.raises(RuntimeError) as exc:
        torch.empty(10**13)  # the real allocator error, 40 TB
    translated = translate(exc.value)
    assert isinstance(translated, ResourceError) and translated.exit_code == 8
    assert "out of memory" in translated.message


def test_an_onnx_runtime_allocation_failure_is_exit_8(tiny_run):
    """ONNX Runtime's arena running out (a batch too large for the memory limit) is out of resources, not a
    refused input."""
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (1_500_000_000, 1_500_000_000))

    cmd = [sys.executable, "-m", "edgekd.cli", "bench", str(tiny_run / "bundle"), "--batch", "200000",
           "--min-runs", "2", "--min-time-s", "0.01", "--warmup-s", "0"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, preexec_fn=limit)
    assert proc.returncode == 8, proc.stderr
    _one_error(proc.stderr, "out of memory in ONNX Runtime")
    assert "smaller batch" in proc.stderr


def test_verify_without_the_onnx_package_is_exit_7(tiny_run, tmp_path):
    from tests.conftest import blocked_env

    proc = run_cli("verify", str(tiny_run / "bundle"), env=blocked_env(tmp_path, "onnx"), timeout=120)
    assert proc.returncode == 7, proc.stderr
    _one_error(proc.stderr, "needs the Python package 'onnx'")


def test_unwritable_output_folder_is_exit_3(tmp_path, capsys):
    assert main(["run", "--out", "/sys/edgekd-cannot-write", "-q", *_sets(TINY)]) == 3
    _one_error(capsys.readouterr().err, "cannot write or read")


@pytest.mark.parametrize("argv", [
    ["report", "{run}/results.json", "--out", "{afile}/rep"],
    ["bundle", "{run}", "--out", "{afile}/b"],
    ["export", "{run}", "--out", "{afile}/x"],
    ["quantize", "{run}/onnx/student.onnx", "--mode", "dynamic", "--out", "{afile}/q.onnx"],
    ["bench", "{run}/bundle", "--min-runs", "2", "--min-time-s", "0.01", "--warmup-s", "0", "--json", "{afile}/b.json"],
    ["run", "--out", "{afile}/x", "-q"],
    ["report", "{run}/results.json", "--out", "/proc/edgekd-cannot-write"],
], ids=["report", "bundle", "export", "quantize", "bench", "run", "report-proc"])
def test_an_out_path_below_a_file_is_exit_3(tiny_run, tmp_path, capsys, argv):
    afile = tmp_path / "afile"
    afile.write_text("hi")
    extra = _sets(TINY) if argv[0] == "run" else []
    assert main([a.format(run=tiny_run, afile=afile) for a in argv] + extra) == 3
    err = capsys.readouterr().err
    _one_error(err, "is a file" if "proc" not in argv[-1] else "cannot write or read /proc/edgekd-cannot-write")
    assert afile.read_text() == "hi"


def test_a_corrupt_image_is_named(tmp_path, capsys):
    pil = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / "photos" / cls).mkdir(parents=True)
        for i in range(8):
            pil.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "photos" / cls / f"{i}.png")
    (tmp_path / "photos" / "b" / "5.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    assert main(["distill", "--out", str(tmp_path / "o"), "-q",
                 *_sets([f"data.source=imagefolder:{tmp_path / 'photos'}", "data.val_fraction=0.25",
                         "data.test_fraction=0.25", "student.kwargs={channels: [4], hidden: 4}"])]) == 3
    _one_error(capsys.readouterr().err, "5.png")


def test_onnx_runtime_invalid_argument_and_bad_zip_have_codes(tiny_run, tmp_path, capsys):
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, inputs=np.zeros((4, 3, 5, 5), np.float32), labels=np.zeros(4), normalized=True)
    assert main(["bench", str(tiny_run / "onnx" / "student.onnx"), "--data", str(wrong)]) == 2
    _one_error(capsys.readouterr().err, "ONNX Runtime refused it")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"PK\x03\x04 not really a zip")
    assert main(["quantize", str(tiny_run / "onnx" / "student.onnx"), "--calib", str(garbage), "--out",
                 str(tmp_path / "q.onnx")]) == 3
    _one_error(capsys.readouterr().err, "not a readable .npz")


def test_with_several_wrong_inputs_the_missing_file_is_named_first(tmp_path, capsys):
    assert main(["quantize", str(tmp_path / "missing.onnx"), "--calib", str(tmp_path / "missing.npz"), "--out",
                 str(tmp_path / "q.onnx")]) == 3
    _one_error(capsys.readouterr().err, "ONNX model not found")
