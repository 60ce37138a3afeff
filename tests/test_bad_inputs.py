"""Promise 6: 20+ bad inputs a new user would try, across run, distill, export, quantize, bench and
verify. Each gives one clear `error:` line (plus an optional `hint:`), a documented non-zero exit code, no
traceback, and leaves every existing file unchanged and no half-written file behind.

The cases run the CLI in-process (`edgekd.cli.main`, the same code the console script calls; a subprocess
per case would only add a second torch import); one case also runs as a real subprocess."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from tests.conftest import run_cli


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def workspace(tiny_run, tmp_path_factory):
    ws = tmp_path_factory.mktemp("bad-inputs")
    shutil.copytree(tiny_run / "bundle", ws / "bundle_tampered")
    (ws / "bundle_tampered" / "model.onnx").write_bytes(
        (ws / "bundle_tampered" / "model.onnx").read_bytes()[:-1] + b"\x00")
    (ws / "bundle_nosums").mkdir()
    shutil.copy(tiny_run / "bundle" / "model.onnx", ws / "bundle_nosums" / "model.onnx")
    (ws / "bad.yaml").write_text("name: x\ntrain:\n  epochs: [3\n")
    (ws / "typo.yaml").write_text("name: x\ntrian:\n  epochs: 3\ndistill:\n  temprature: 2\n")
    (ws / "lfs.safetensors").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 9\n")
    (ws / "not_onnx.onnx").write_text("this is a text file, not a model\n")
    (ws / "a_file").write_text("I am a file\n")
    import numpy as np

    np.savez(ws / "c.npz", x=np.zeros((128, 1, 8, 8), np.float32))
    (ws / "empty_run").mkdir()
    shutil.copy(tiny_run / "onnx" / "student.onnx", ws / "student.onnx")
    shutil.copy(tiny_run / "weights" / "student.safetensors", ws / "student.safetensors")
    return ws


CASES = [
    # (id, argv (with {ws}), exit code, words the message must contain)
    ("recipe-missing", ["run", "nope.yaml", "--out", "{ws}/o"], 3, "recipe not found"),
    ("recipe-bad-yaml", ["run", "{ws}/bad.yaml", "--out", "{ws}/o"], 3, "not valid YAML at line"),
    ("recipe-typos", ["run", "{ws}/typo.yaml", "--out", "{ws}/o"], 2, "did you mean 'train'"),
    ("set-no-equals", ["run", "--set", "train.epochs", "--out", "{ws}/o"], 2, "--set expects key=value"),
    ("set-wrong-type", ["run", "--set", "train.epochs=many", "--out", "{ws}/o"], 2, "expected an integer"),
    ("set-out-of-range", ["run", "--set", "distill.alpha=1.5", "--out", "{ws}/o"], 2, "outside [0.0, 1.0]"),
    ("out-is-a-file", ["run", "--out", "{ws}/a_file", "--set", "train.epochs=1"], 2, "is a file"),
    ("teacher-ckpt-missing", ["distill", "--set", "teacher.checkpoint={ws}/nope.pt", "--out", "{ws}/o"], 3,
     "checkpoint not found"),
    ("teacher-ckpt-lfs", ["distill", "--set", "teacher.checkpoint={ws}/lfs.safetensors", "--out", "{ws}/o"], 3,
     "Git LFS pointer"),
    ("teacher-ckpt-shapes", ["distill", "--set", "teacher.checkpoint={ws}/student.safetensors", "--out",
                             "{ws}/o"], 3, "shape mismatch"),
    ("data-unknown", ["distill", "--set", "data.source=mnist", "--out", "{ws}/o"], 2, "unknown data.source"),
    ("data-folder-missing", ["distill", "--set", "data.source=imagefolder:{ws}/photos", "--out", "{ws}/o"], 3,
     "image folder not found"),
    ("model-unknown", ["distill", "--set", "student.model=torchvision:resnet19", "--out", "{ws}/o"], 2,
     "unknown torchvision model"),
    ("resume-nothing", ["run", "--resume", "--out", "{ws}/empty_run"], 9, "no run to continue"),
    ("export-missing", ["export", "{ws}/nope.safetensors", "--out", "{ws}/o"], 3, "not found"),
    ("export-not-a-run", ["export", "{ws}/empty_run", "--out", "{ws}/o"], 3, "is not an edgekd run folder"),
    ("quantize-not-onnx", ["quantize", "{ws}/not_onnx.onnx", "--calib", "{ws}/c.npz", "--out", "{ws}/o.onnx"],
     3, "not a valid ONNX model"),
    ("quantize-calib-missing", ["quantize", "{ws}/student.onnx", "--calib", "{ws}/nope.npz", "--out",
                                "{ws}/o.onnx"], 3, "nope.npz"),
    ("bench-missing", ["bench", "{ws}/nope.onnx"], 3, "not found"),
    ("bench-bad-batch", ["bench", "{ws}/student.onnx", "--batch", "1,x"], 2, "batch"),
    ("verify-tampered", ["verify", "{ws}/bundle_tampered"], 5, "checksum mismatch"),
    ("verify-not-a-bundle", ["verify", "{ws}/bundle_nosums"], 3, "no SHA256SUMS"),
]


def _check(err: str, code: int, returncode: int, words: str) -> None:
    assert returncode == code, f"exit {returncode}, expected {code}: {err}"
    assert "Traceback" not in err
    lines = err.splitlines()
    error_lines = [line for line in lines if line.startswith("error:")]
    assert len(error_lines) == 1, err
    assert all(line.startswith(("error:", "hint:")) for line in lines), err
    assert words in err, err


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_clear_error(workspace, case, capsys):
    from edgekd.cli import main

    _, argv, code, words = case
    argv = [a.replace("{ws}", str(workspace)) for a in argv]
    before = _snapshot(workspace)
    returncode = main([*argv, "-q"])
    _check(capsys.readouterr().err.strip(), code, returncode, words)
    assert _snapshot(workspace) == before, "an existing file changed or a new file was written"


def test_the_console_script_behaves_the_same(workspace):
    _, argv, code, words = next(c for c in CASES if c[0] == "recipe-typos")
    proc = run_cli(*[a.replace("{ws}", str(workspace)) for a in argv], "-q")
    _check(proc.stderr.strip(), code, proc.returncode, words)
