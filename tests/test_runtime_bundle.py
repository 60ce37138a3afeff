"""The device side: bundles are verified before use, predict with numpy + onnxruntime, `edgekd verify`."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from edgekd.deploy.errors import ChecksumMismatch, InputFileError, UsageError
from edgekd.deploy.runtime import load_bundle
from edgekd.deploy.runtime.preprocess import ImagePreprocessing, parse_preprocessing
from tests.conftest import blocked_env, run_cli, torch_blocked_env


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


def test_contract_accepts_channels_last_and_single_images():
    pre = ImagePreprocessing(4, 5, 3, (1.0, 2.0, 3.0), (2.0, 2.0, 2.0), pixel_max=100.0, scale=0.5)
    hwc = np.arange(4 * 5 * 3, dtype=np.float32).reshape(4, 5, 3)
    out = pre.apply(hwc)
    assert out.shape == (1, 3, 4, 5)
    np.testing.assert_allclose(out[0, 1], (hwc[:, :, 1] * 0.5 - 2) / 2)
    assert pre.apply(np.stack([hwc.transpose(2, 0, 1)] * 2)).shape == (2, 3, 4, 5)


@pytest.mark.parametrize("bad,match", [
    (np.full((1, 8, 8), np.nan, np.float32), "NaN or infinite"),
    (np.full((1, 8, 8), 255.0, np.float32), r"span \[255, 255\].*\[0.0, 16.0\]"),
    (np.full((1, 8, 8), -1.0, np.float32), "span"),
    (np.zeros((1, 7, 8), np.float32), "shape"),
])
def test_contract_refuses_garbage_instead_of_answering(bad, match):
    pre = ImagePreprocessing(8, 8, 1, (0.3,), (0.4,), pixel_max=16.0, scale=1 / 16, pixel_dtype="float32",
                             channel_order="L")
    with pytest.raises(UsageError, match=match):
        pre.apply(bad)


@pytest.mark.parametrize("change,match", [
    ({"std": [0.0]}, "std values must be finite and > 0"),
    ({"std": [1.0, 1.0]}, "one per channel"),
    ({"mean": ["x"]}, "expected a number"),
    ({"colour": "red"}, "unknown key 'colour'"),
])
def test_contract_is_parsed_strictly(change, match):
    good = ImagePreprocessing(8, 8, 1, (0.3,), (0.4,), channel_order="L").to_dict()
    with pytest.raises(InputFileError, match=match):
        parse_preprocessing({**good, **change})


def test_verify_command_passes_and_fails_without_torch(bundle_copy, tmp_path):
    env = torch_blocked_env(tmp_path)
    ok = run_cli("verify", str(bundle_copy), env=env)
    assert ok.returncode == 0, ok.stderr
    assert "checksums" in ok.stdout and "inference" in ok.stdout
    (bundle_copy / "model.onnx").write_bytes(b"corrupt")
    bad = run_cli("verify", str(bundle_copy), env=env)
    assert bad.returncode == 5 and "checksum mismatch" in bad.stderr and "Traceback" not in bad.stderr


def test_bundle_predicts_with_numpy_and_onnxruntime_only(tiny_run, tmp_path):
    """The device side: torch, onnx and edgekd's training modules all unavailable."""
    import subprocess
    import sys

    code = ("import sys, numpy as np, edgekd, edgekd.deploy.runtime, edgekd.benchmarks.harness\n"
            "from edgekd import load_bundle\n"
            "p = load_bundle(sys.argv[1])\n"
            "labels, probs = p.predict(np.zeros((3, 8, 8), np.float32))\n"
            "assert len(labels) == 3 and probs.shape == (3, 10)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx', 'sklearn'))\n"
            "assert not bad, bad\n"
            "print('ok')\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tiny_run / "bundle")],
                          env=blocked_env(tmp_path, "torch", "onnx"), capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_a_file_dropped_into_a_bundle_is_refused(bundle_copy):
    (bundle_copy / "model.onnx.data").write_bytes(b"\0" * 64)
    with pytest.raises(ChecksumMismatch, match="not covered by SHA256SUMS"):
        load_bundle(bundle_copy)
