"""Checkpoint and resume: a run killed with SIGKILL (mid-step, or inside the checkpoint write) resumes
and ends bit-identical to an uninterrupted run on CPU; bad checkpoints are refused with ResumeError."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from edgekd.checkpoint import load_tensors
from edgekd.deploy.errors import ResumeError

ROOT = Path(__file__).resolve().parent.parent
EPOCHS = 4

SCRIPT = textwrap.dedent('''
    """Train a tiny student by KD (dropout, AdamW, cosine + warm-up) and save its final weights."""
    import os, signal, sys
    import torch
    from edgekd.checkpoint import save_weights
    from edgekd.data import TensorSplit
    from edgekd.distill.cache import TeacherCache
    from edgekd.distill.losses import KDLoss
    from edgekd.distill.trainer import DistillObjective, Reporter, Trainer
    from edgekd.models import create_model
    from edgekd.recipe import TrainConfig

    mode, ckpt, out, kill_at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(160, 1, 8, 8, generator=g), torch.arange(160) % 4
    x[y == 1, :, :4] += 1.0
    x[y == 2, :, 4:] += 1.0
    train, val = TensorSplit(x[:128], y[:128]), TensorSplit(x[128:], y[128:])
    torch.manual_seed(1)
    teacher = create_model("edgekd:cnn", num_classes=4, in_channels=1, input_size=8, channels=[8, 16], hidden=16)
    torch.manual_seed(2)
    student = create_model("edgekd:cnn", num_classes=4, in_channels=1, input_size=8, channels=[4, 8], hidden=8,
                           dropout=0.3)


    class Killer(Reporter):
        steps = 0

        def step(self, loss, acc):
            self.steps += 1
            if mode == "kill-step" and self.steps == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)


    if mode == "kill-save":  # die after the temp file is written, before it is renamed into place
        real_replace, saves = os.replace, [0]

        def replace(src, dst):
            if str(dst).endswith("last.pt"):
                saves[0] += 1
                if saves[0] == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
            return real_replace(src, dst)

        os.replace = replace

    cfg = TrainConfig(epochs=EPOCHS, lr=0.01, warmup_epochs=1, device="cpu", grad_clip=5.0)
    objective = DistillObjective(KDLoss(4.0, 0.7), TeacherCache([teacher], train, 64, "cpu"))
    trainer = Trainer(student, train, val, cfg, objective, name="student", seed=3, batch_size=32,
                      checkpoint_dir=ckpt if mode != "full" else None, fingerprint={"recipe": "r1"},
                      reporter=Killer())
    result = trainer.fit(resume=mode == "resume")
    save_weights(student, out)
    print("resumed_from", result.resumed_from_epoch, "epochs", result.epochs_run)
''').replace("EPOCHS", str(EPOCHS))


def run(tmp_path: Path, mode: str, ckpt: Path, out: Path, kill_at: int = 0) -> subprocess.CompletedProcess:
    script = tmp_path / "train_script.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(script), mode, str(ckpt), str(out), str(kill_at)],
                          capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("full")
    proc = run(tmp, "full", tmp / "ckpt", tmp / "full.safetensors")
    assert proc.returncode == 0, proc.stderr
    return load_tensors(tmp / "full.safetensors")


@pytest.mark.parametrize("mode,kill_at,resumed_from", [("kill-step", 10, 2), ("kill-save", 2, 1)])
def test_sigkill_then_resume_is_bit_identical(tmp_path, uninterrupted, mode, kill_at, resumed_from):
    ckpt, out = tmp_path / "ckpt", tmp_path / "final.safetensors"
    killed = run(tmp_path, mode, ckpt, out, kill_at)  # 4 steps per epoch: step 10 is inside epoch 3
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not out.exists()
    assert load_tensors(ckpt / "last.pt")["epoch"] == resumed_from  # the previous checkpoint, intact
    resumed = run(tmp_path, "resume", ckpt, out)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed_from {resumed_from} epochs {EPOCHS}" in resumed.stdout
    final = load_tensors(out)
    assert final.keys() == uninterrupted.keys()
    for k, v in uninterrupted.items():
        assert torch.equal(final[k], v), k
    assert not [p.name for p in ckpt.iterdir() if p.name.endswith(".tmp")]  # stale temp files cleaned


# ---------------------------------------------------------------------------------- refused checkpoints
def _trainer(ckpt_dir, fingerprint=None, channels=(4, 8), epochs=2, patience=None):
    from edgekd.data import TensorSplit
    from edgekd.distill.trainer import CEObjective, Trainer
    from edgekd.models import create_model
    from edgekd.recipe import TrainConfig

    g = torch.Generator().manual_seed(0)
    data = TensorSplit(torch.randn(64, 1, 8, 8, generator=g), torch.arange(64) % 4)
    model = create_model("edgekd:cnn", num_classes=4, in_channels=1, input_size=8, channels=list(channels),
                         hidden=8)
    cfg = TrainConfig(epochs=epochs, device="cpu", lr=0.0 if patience else 0.01, early_stop_patience=patience)
    return Trainer(model, data, data, cfg, CEObjective(), batch_size=32, checkpoint_dir=ckpt_dir,
                   fingerprint=fingerprint or {"data": "d1", "train": "t1"})


def test_missing_and_corrupt_checkpoints_are_refused(tmp_path):
    with pytest.raises(ResumeError, match="no checkpoint"):
        _trainer(tmp_path).fit(resume=True)
    _trainer(tmp_path).fit()
    path = tmp_path / "last.pt"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ResumeError, match="corrupt"):
        _trainer(tmp_path).fit(resume=True)
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ResumeError, match="corrupt"):
        _trainer(tmp_path).fit(resume=True)


def test_changed_run_is_refused_with_the_difference_named(tmp_path):
    _trainer(tmp_path).fit()
    with pytest.raises(ResumeError, match="data: checkpoint 'd1' vs now 'd2'"):
        _trainer(tmp_path, {"data": "d2", "train": "t1"}).fit(resume=True)
    with pytest.raises(ResumeError, match="does not fit this run"):
        _trainer(tmp_path, channels=(4, 16)).fit(resume=True)


def test_resume_after_early_stop_does_not_train_on(tmp_path):
    first = _trainer(tmp_path, epochs=8, patience=1).fit()
    assert first.stopped_early and first.epochs_run == 2
    again = _trainer(tmp_path, epochs=8, patience=1).fit(resume=True)
    assert again.stopped_early and again.epochs_run == 2 and again.resumed_from_epoch == 2
