"""deploy/examples/classify_image.py classifies an image file with a bundle, in a subprocess where torch and
onnx cannot be imported (the app needs numpy, onnxruntime, Pillow and edgekd's device runtime)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "deploy" / "examples" / "classify_image.py"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A bundle made from a quickly trained tiny digits CNN, plus the data it was trained on."""
    import torch
    from sklearn.datasets import load_digits

    from edgekd.deploy.export import export_onnx
    from edgekd.deploy.runtime.preprocess import ImagePreprocessing
    from edgekd.models import create_model
    from tests.conftest import write_tiny_bundle

    torch.manual_seed(0)
    d = load_digits()
    raw = d.images.astype(np.float32)
    mean, std = float((raw / 16).mean()), float((raw / 16).std())
    x = ((raw / 16 - mean) / std)[:, None]
    model = create_model("edgekd:cnn", num_classes=10, in_channels=1, input_size=8, channels=[8, 16, 32],
                         hidden=32)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    xt, yt = torch.from_numpy(x[:1200]), torch.from_numpy(d.target[:1200])
    for _ in range(4):
        for i in range(0, 1200, 64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xt[i:i + 64]), yt[i:i + 64]).backward()
            opt.step()
    folder = tmp_path_factory.mktemp("example")
    onnx_path = export_onnx(model.eval(), torch.zeros(1, 1, 8, 8), folder / "student.onnx").path
    contract = ImagePreprocessing(8, 8, 1, (mean,), (std,), pixel_max=16.0, scale=1 / 16, pixel_dtype="float32",
                                  channel_order="L", interpolation="box")
    bundle = write_tiny_bundle(folder / "bundle", onnx_path, contract, [f"digit-{i}" for i in range(10)])
    return {"dir": bundle, "raw": raw, "x": x, "onnx": onnx_path}


def _png(path: Path, raw: np.ndarray) -> Path:
    """An 8x8 digit (0..16) as a 32x32 8-bit PNG (nearest-neighbour upscale, so BOX downscale is exact)."""
    from PIL import Image

    pixels = np.round(raw * 255 / 16).astype(np.uint8).repeat(4, axis=0).repeat(4, axis=1)
    Image.fromarray(pixels).save(path)
    return path


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})}, cwd=ROOT)


def test_classify_image_matches_the_model_without_torch(bundle, tmp_path):
    from edgekd.deploy.runtime.ort import create_session
    from tests.conftest import blocked_env

    session, _ = create_session(bundle["onnx"], "cpu")
    blocked = blocked_env(tmp_path, "torch", "onnx")
    for index in (0, 1, 7):
        expected = int(session.run(None, {"input": bundle["x"][index:index + 1]})[0].argmax())
        proc = _run(str(bundle["dir"]), str(_png(tmp_path / f"d{index}.png", bundle["raw"][index])), "--top", "2",
                    env=blocked)
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.strip().splitlines()
        assert len(lines) == 2 and lines[0].split("\t")[0] == f"digit-{expected}"
        probs = [float(line.split("\t")[1]) for line in lines]
        assert probs[0] >= probs[1] and 0.0 <= probs[1] <= probs[0] <= 1.0


def test_classify_image_refuses_a_tampered_bundle(bundle, tmp_path):
    import shutil

    copy = Path(shutil.copytree(bundle["dir"], tmp_path / "bundle"))
    with open(copy / "model.onnx", "ab") as f:
        f.write(b"\0")
    proc = _run(str(copy), str(_png(tmp_path / "d.png", bundle["raw"][0])))
    assert proc.returncode != 0 and "checksum mismatch" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_classify_image_bad_image_is_one_line(bundle, tmp_path):
    bad = tmp_path / "not-an-image.png"
    bad.write_text("hello")
    proc = _run(str(bundle["dir"]), str(bad))
    assert proc.returncode != 0 and "cannot read image" in proc.stderr and "Traceback" not in proc.stderr
