"""Shared fixtures: an isolated teacher cache and one tiny end-to-end run reused by several tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: A few-second budget for the default recipe: enough to exercise every stage for real.
TINY = ["train.epochs=2", "teacher.train.epochs=2", "bench.min_runs=20", "bench.min_time_s=0.05",
        "bench.warmup_s=0.02", "bench.rounds=2", "quantize.calib_samples=64", "data.limit=600",
        "distill.seeds=1"]


def pytest_configure(config):
    """Two CPU cores, and tests that start training subprocesses next to each other: one intra-op thread each
    (torch's default, every core per process, makes contended steps several times slower). Runs before any test
    module imports torch; subprocesses inherit it."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    os.environ["EDGEKD_CACHE_DIR"] = str(tmp_path_factory.mktemp("edgekd-cache"))
    yield


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A finished `edgekd run` on the default recipe with a tiny budget (shared, read-only)."""
    from edgekd.cli import main

    out = tmp_path_factory.mktemp("tiny-run") / "run"
    args = ["run", "--out", str(out), "-q"]
    for o in TINY:
        args += ["--set", o]
    assert main(args) == 0
    return out


@pytest.fixture(scope="session")
def digits_student(tmp_path_factory) -> dict:
    """A quickly trained edgekd student on sklearn digits, exported to ONNX, with calibration (train) and
    validation data. Shared, read-only."""
    import numpy as np
    import torch
    from sklearn.datasets import load_digits

    from edgekd.deploy.export import export_onnx
    from edgekd.models import create_model

    torch.manual_seed(0)
    d = load_digits()
    x = ((d.images.astype(np.float32) / 16.0 - 0.5) / 0.5)[:, None]
    y = d.target.astype(np.int64)
    model = create_model("edgekd:cnn", num_classes=10, in_channels=1, input_size=8, channels=[8, 16, 32],
                         hidden=32)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    xt, yt = torch.from_numpy(x[:1200]), torch.from_numpy(y[:1200])
    for _ in range(6):
        for i in range(0, 1200, 64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xt[i:i + 64]), yt[i:i + 64]).backward()
            opt.step()
    path = tmp_path_factory.mktemp("digits-student") / "student.onnx"
    export_onnx(model.eval(), torch.zeros(1, 1, 8, 8), path, metadata={"edgekd.version": "test"})
    return {"path": path, "calib": x[:256], "val_x": x[1200:1500], "val_y": y[1200:1500]}


def write_tiny_bundle(folder: Path, onnx_path: Path, preprocessing, labels=None, role: str = "student") -> Path:
    """A bundle of any classifier ONNX file (inputs/outputs read from the file)."""
    from edgekd.deploy.bundle import write_bundle
    from edgekd.deploy.runtime.bundle import BundleManifest
    from edgekd.deploy.runtime.onnxinfo import read_onnx
    from edgekd.deploy.runtime.runner import TensorSpec

    info = read_onnx(onnx_path)
    specs = tuple(TensorSpec(v.name, v.elem_type, v.dims) for v in info.graph_inputs)
    outs = tuple(TensorSpec(v.name, v.elem_type, v.dims) for v in info.outputs)
    classes = outs[0].shape[-1]
    manifest = BundleManifest("image-classification", specs, outs, preprocessing,
                              tuple(labels or [str(i) for i in range(classes)]), info.precision, role=role,
                              artifact=onnx_path.stem)
    return write_bundle(folder, onnx_path, manifest)


def stage_artifact(run: Path, stage: str) -> dict:
    """A stage's saved artifact (JSON) in a run folder."""
    import json

    path = run / ("data.json" if stage == "data" else f"stages/{stage}.json")
    return json.loads(path.read_text())["artifact"]


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: int = 300):
    """Run `python -m edgekd.cli ARGS` in a subprocess; returns CompletedProcess (text)."""
    # The checkout under test comes first, whatever edgekd is installed (an editable install elsewhere).
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    full_env = {**os.environ, "PYTHONPATH": pythonpath, **(env or {})}
    return subprocess.run([sys.executable, "-m", "edgekd.cli", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd or ROOT, timeout=timeout)


def blocked_env(tmp_path: Path, *modules: str) -> dict:
    """Environment whose PYTHONPATH shadows ``modules`` with packages that fail to import."""
    fake = tmp_path / "blocked"
    for name in modules:
        (fake / name).mkdir(parents=True, exist_ok=True)
        (fake / name / "__init__.py").write_text(  # what Python says when a package is not installed
            f"raise ModuleNotFoundError(\"No module named '{name}' (blocked in this test)\", name={name!r})\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake), str(ROOT)])}


def torch_blocked_env(tmp_path: Path) -> dict:
    """Environment whose PYTHONPATH shadows torch with a package that fails to import."""
    return blocked_env(tmp_path, "torch")
