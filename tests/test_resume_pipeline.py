"""Promise 3: a run killed with SIGKILL resumes with --resume and ends bit-identical (CPU)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT, TINY, run_cli

BUDGET = [o for o in TINY if not o.startswith("train.epochs")] + ["train.epochs=4", "distill.baseline=false"]

KILLER = """
import os, signal, sys
from edgekd.pipeline import UI, run_pipeline
from edgekd.distill.trainer import Reporter
from edgekd.recipe import load_recipe

class KillAt(Reporter):
    def epoch_end(self, epoch, metrics):
        if epoch == 2:
            os.kill(os.getpid(), signal.SIGKILL)   # dies before epoch 2's checkpoint is written

class KillingUI(UI):
    def reporter(self, name):
        return KillAt() if name == "student" else Reporter()

run_pipeline(load_recipe("digits", sys.argv[2:]), sys.argv[1], stages=["data", "teacher", "select", "tune", "distill"],
             ui=KillingUI())
"""


def _sets(overrides):
    return [a for o in overrides for a in ("--set", o)]


def test_sigkill_then_resume_is_bit_identical(tmp_path):
    import torch
    from safetensors.torch import load_file

    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = subprocess.run([sys.executable, "-c", KILLER, str(killed), *BUDGET], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    assert (killed / "checkpoints" / "student" / "last.pt").is_file()
    assert not (killed / "weights" / "student.safetensors").exists()
    assert not (killed / "RUN_COMPLETE").exists()

    resumed = run_cli("distill", "--out", str(killed), "--resume", "-q", *_sets(BUDGET))
    assert resumed.returncode == 0, resumed.stderr
    fresh = run_cli("distill", "--out", str(clean), "-q", *_sets(BUDGET))
    assert fresh.returncode == 0, fresh.stderr

    a = load_file(str(killed / "weights" / "student.safetensors"))
    b = load_file(str(clean / "weights" / "student.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"


def test_resume_with_a_changed_recipe_is_refused(tiny_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    proc = run_cli("run", "--out", str(run), "--resume", *_sets(TINY + ["distill.temperature=2.0"]))
    assert proc.returncode == 9, proc.stderr
    assert "distill.temperature: 4.0 → 2.0" in proc.stderr and "Traceback" not in proc.stderr


def test_resume_of_a_finished_run_reruns_nothing(tiny_run, tmp_path):
    import shutil

    run = shutil.copytree(tiny_run, tmp_path / "run")
    before = (run / "results.json").read_bytes()
    proc = run_cli("run", "--out", str(run), "--resume", "-q", *_sets(TINY))
    assert proc.returncode == 0, proc.stderr
    assert "stages run: none; run complete" in proc.stdout and (run / "results.json").read_bytes() == before


def test_resume_without_a_run_is_a_clear_error(tmp_path):
    proc = run_cli("run", "--out", str(tmp_path / "nothing"), "--resume")
    assert proc.returncode == 9 and "holds no run to continue" in proc.stderr


@pytest.mark.parametrize("damage", [b"", b"not a checkpoint at all"])
def test_corrupt_checkpoint_is_a_clear_error_not_a_fresh_start(tiny_run, tmp_path, damage):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "stages" / "distill.json").unlink()  # killed during distillation: its checkpoint is needed
    (run / "checkpoints" / "student" / "last.pt").write_bytes(damage)
    proc = run_cli("run", "--out", str(run), "--resume", *_sets(TINY))
    assert proc.returncode == 9, proc.stderr
    assert "corrupt" in proc.stderr and "Traceback" not in proc.stderr
