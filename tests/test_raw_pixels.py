"""Preprocessing inside the model (edgekd.deploy.raw_pixels, recipe export.raw_pixels): a uint8-pixel model gives the
logits of the bundle's preprocessing + the plain model on real images, ships in a bundle that says so, and runs in
plain onnxruntime without edgekd."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from edgekd.deploy.raw_pixels import add_raw_pixel_input, check_raw_pixel_parity, raw_pixel_contract
from edgekd.deploy.runtime.ort import OnnxrtRunner
from edgekd.deploy.runtime.preprocess import ImagePreprocessing, from_metadata


def _contract(path):
    from edgekd.deploy.export import read_metadata

    return from_metadata(read_metadata(path))


@pytest.fixture(scope="module")
def digit_pngs(tmp_path_factory):
    """Real images: scikit-learn's digits as 8-bit grayscale PNG files (what an app decodes)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    folder = tmp_path_factory.mktemp("pngs")
    images = load_digits().images[:200]
    paths = []
    for i, img in enumerate(images):
        paths.append(folder / f"{i}.png")
        Image.fromarray(np.round(img * 255 / 16).astype(np.uint8), mode="L").save(paths[-1])
    return paths


@pytest.mark.parametrize(("artifact", "layout"), [("student", "NHWC"), ("student", "NCHW"),
                                                  ("student-int8", "NHWC")])
def test_raw_pixel_model_matches_bundle_preprocessing_on_real_images(tiny_run, digit_pngs, tmp_path, artifact,
                                                                      layout):
    from PIL import Image

    plain = tiny_run / "onnx" / f"{artifact}.onnx"
    pre = _contract(plain)
    raw = add_raw_pixel_input(plain, tmp_path / "raw.onnx", pre, layout)
    assert raw.in_graph and raw.pixel_dtype == "uint8" and raw.layout == layout and _contract(tmp_path / "raw.onnx") == raw
    decoded = np.stack([np.asarray(Image.open(p)) for p in digit_pngs])  # (N, 8, 8) uint8, straight from the files
    external = np.stack([pre.load_image(p) for p in digit_pngs])  # the bundle path: 0..16 pixels, then apply()
    with OnnxrtRunner(plain, "cpu") as a, OnnxrtRunner(tmp_path / "raw.onnx", "cpu") as b:
        assert b.inputs()[0].dtype == "uint8"
        want = a.infer({"input": pre.apply(external)})["logits"]
        got = b.infer({"input": decoded[..., None] if layout == "NHWC" else decoded[:, None]})["logits"]
    assert np.abs(got - want).max() < 1e-4
    assert (got.argmax(1) == want.argmax(1)).all()
    report = check_raw_pixel_parity(plain, tmp_path / "raw.onnx", raw, precision="int8" if "int8" in artifact
                                    else "fp32")
    assert report.passed


def test_raw_pixel_bundle_predicts_from_decoded_bytes(tiny_run, digit_pngs, tmp_path):
    """The pipeline's bundle helper (report stage, `edgekd bundle`): the bundle records the raw-pixel contract and
    load_bundle predicts what the plain bundle predicts."""
    from PIL import Image

    from edgekd.deploy.bundle import write_bundle
    from edgekd.deploy.runtime import load_bundle
    from edgekd.recipe import RawPixelsConfig
    from edgekd.runs import _artifacts, open_run
    from edgekd.stages.report import bundle_manifest, bundle_model

    run, recipe = open_run(tiny_run)
    arts = _artifacts(run, recipe)
    row = next(r for r in arts["benchmark"].rows if r.name == arts["report"].bundle.chosen)
    path = run.path({m.name: m for s in ("export", "quantize") for m in arts[s].models}[row.name].file.path)
    with bundle_model(RawPixelsConfig(True, "NHWC"), arts["data"], path, row.precision) as (model, data):
        write_bundle(tmp_path / "raw", model, bundle_manifest(data, row, model, arts["benchmark"].device, "digits"))
    decoded = np.stack([np.asarray(Image.open(p)) for p in digit_pngs[:50]])
    with load_bundle(tmp_path / "raw") as raw, load_bundle(tiny_run / "bundle") as plain:
        m = raw.manifest
        assert m.preprocessing.in_graph and m.inputs[0].dtype == "uint8" and m.inputs[0].shape[1:] == (8, 8, 1)
        labels_raw, probs_raw = raw.predict(decoded)  # decoded image bytes straight in
        labels_plain, probs_plain = plain.predict(decoded.astype(np.float32) * 16 / 255)
    assert labels_raw == labels_plain and np.abs(probs_raw - probs_plain).max() < 1e-5


def test_raw_pixel_model_runs_in_plain_onnxruntime(tiny_run, tmp_path):
    """An app with onnxruntime and numpy only (edgekd made unimportable) feeds uint8 pixels."""
    plain = tiny_run / "onnx" / "student.onnx"
    add_raw_pixel_input(plain, tmp_path / "raw.onnx", _contract(plain), "NHWC")
    code = ("import sys, numpy as np, onnxruntime as ort\n"
            "sys.modules['edgekd'] = None  # import edgekd would fail\n"
            "s = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])\n"
            "x = np.full((2, 8, 8, 1), 128, np.uint8)\n"
            "print(s.get_inputs()[0].type, s.run(None, {s.get_inputs()[0].name: x})[0].shape)\n"
            "assert not any(m.startswith('edgekd') for m in sys.modules if sys.modules[m] is not None)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "raw.onnx")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "tensor(uint8) (2, 10)"


def test_raw_pixel_contract_rules():
    pre = ImagePreprocessing(8, 8, 1, (0.3,), (0.4,), pixel_max=16.0, scale=1 / 16, pixel_dtype="float32",
                             channel_order="L")
    raw = raw_pixel_contract(pre, "NCHW")
    assert raw.scale == pytest.approx(1 / 255) and raw.pixel_max == 255.0 and raw.input_shape == (1, 8, 8)
    assert raw.apply(np.full((8, 8), 255.0)).dtype == np.uint8
    from edgekd.deploy.errors import UsageError

    with pytest.raises(UsageError, match="no pixel range"):
        raw_pixel_contract(ImagePreprocessing(8, 8, 1, (0.0,), (1.0,), pixel_max=None, channel_order="L"))
    with pytest.raises(UsageError, match="already takes raw pixels"):
        raw_pixel_contract(raw)
