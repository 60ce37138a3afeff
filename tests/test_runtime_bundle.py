"""The device side: bundles are verified before use, predict with numpy + onnxruntime, `edgekd verify`."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from deploy.errors import ChecksumMismatch, InputFileError
from deploy.runtime import load_bundle
from deploy.runtime.bundle import preprocess
from tests.conftest import run_cli, torch_blocked_env


@pytest.fixture
def bundle_copy(tiny_run, tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(tiny_run / "bundle", dst)
    return dst


def test_tampered_model_is_refused(bundle_copy):
    with open(bundle_copy / "model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ChecksumMismatch, match="checksum mismatch for .*model.onnx"):
        load_bundle(bundle_copy)


def test_tampered_metadata_is_refused(bundle_copy):
    meta = bundle_copy / "model.json"
    meta.write_text(meta.read_text().replace('"labels"', '"labelz"'))
    with pytest.raises(ChecksumMismatch, match="model.json"):
        load_bundle(bundle_copy)


def test_missing_sums_is_refused(bundle_copy):
    (bundle_copy / "SHA256SUMS").unlink()
    with pytest.raises(InputFileError, match="no SHA256SUMS"):
        load_bundle(bundle_copy)


def test_preprocess_accepts_channels_last_and_single_images():
    meta = {"shape": [None, 3, 4, 5]}
    norm = {"scale": 0.5, "mean": [1, 2, 3], "std": [2, 2, 2]}
    hwc = np.arange(4 * 5 * 3, dtype=np.float32).reshape(4, 5, 3)
    out = preprocess(hwc, meta, norm)
    assert out.shape == (1, 3, 4, 5)
    np.testing.assert_allclose(out[0, 1], (hwc[:, :, 1] * 0.5 - 2) / 2)
    assert preprocess(np.stack([hwc.transpose(2, 0, 1)] * 2), meta, norm).shape == (2, 3, 4, 5)


def test_verify_command_passes_and_fails_without_torch(bundle_copy, tmp_path):
    env = torch_blocked_env(tmp_path)
    ok = run_cli("verify", str(bundle_copy), env=env)
    assert ok.returncode == 0, ok.stderr
    assert "checksums" in ok.stdout and "inference" in ok.stdout
    (bundle_copy / "model.onnx").write_bytes(b"corrupt")
    bad = run_cli("verify", str(bundle_copy), env=env)
    assert bad.returncode == 5 and "checksum mismatch" in bad.stderr and "Traceback" not in bad.stderr


def test_import_edgekd_and_runtime_never_import_torch(tmp_path):
    import subprocess
    import sys

    code = ("import sys, edgekd, deploy.runtime, deploy.runtime.ort, deploy.intake, benchmarks.harness\n"
            "from edgekd import load_bundle\n"
            "assert 'torch' not in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", code], env=torch_blocked_env(tmp_path), capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr


def test_a_file_dropped_into_a_bundle_is_refused(bundle_copy):
    (bundle_copy / "model.onnx.data").write_bytes(b"\0" * 64)
    with pytest.raises(ChecksumMismatch, match="not covered by SHA256SUMS"):
        load_bundle(bundle_copy)
