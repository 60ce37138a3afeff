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
        "bench.warmup_s=0.02", "quantize.calib_samples=64", "data.limit=600"]


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


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: int = 300):
    """Run `python -m edgekd.cli ARGS` in a subprocess; returns CompletedProcess (text)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "edgekd.cli", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd or ROOT, timeout=timeout)


def torch_blocked_env(tmp_path: Path) -> dict:
    """Environment whose PYTHONPATH shadows torch with a package that fails to import."""
    fake = tmp_path / "no_torch"
    (fake / "torch").mkdir(parents=True, exist_ok=True)
    (fake / "torch" / "__init__.py").write_text("raise ImportError('torch is blocked in this test')\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake), str(ROOT)])}
