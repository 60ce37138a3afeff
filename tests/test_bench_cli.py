"""`edgekd bench` and edgekd.benchmarks.bench on ONNX files, an INT8 ONNX file, a bundle and several models
interleaved."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekd.benchmarks.bench import Timing, bench_models, load_target
from edgekd.benchmarks.tiny_models import make_tiny_cnn
from edgekd.cli import main as cli_main
from edgekd.deploy.runtime.preprocess import ImagePreprocessing
from tests.conftest import write_tiny_bundle

REPO = Path(__file__).resolve().parents[1]
FAST = Timing(warmup_s=0.0, warmup_runs=2, min_runs=20, min_time_s=0.02, rounds=2)
FAST_ARGS = ["--warmup-s", "0", "--warmup-runs", "2", "--min-runs", "20", "--min-time-s", "0.02", "--rounds", "2"]
#: digits-like contract: pixels 0..16, scale 1/16, mean 0.5, std 0.25
CONTRACT = ImagePreprocessing(8, 8, 1, (0.5,), (0.25,), pixel_max=16.0, scale=1 / 16, pixel_dtype="float32",
                              channel_order="L")


def _logits(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    """FP32 + INT8 (static QDQ) ONNX, a bundle, and labelled data: normalised and raw."""
    from edgekd.deploy.quantize import quantize_static

    d = tmp_path_factory.mktemp("bench")
    fp32 = make_tiny_cnn(d / "tiny.onnx")
    raw = np.random.default_rng(1).uniform(0, 16, (120, 1, 8, 8)).astype(np.float32)
    x = CONTRACT.apply(raw)
    y = _logits(fp32, x).argmax(1)
    y[:12] = (y[:12] + 1) % 10  # 90 % of the labels agree with the model
    int8 = d / "tiny-int8.onnx"
    quantize_static(fp32, int8, x[:32], preset="x86", min_calib_samples=1)
    bundle = write_tiny_bundle(d / "bundle", fp32, CONTRACT)
    np.savez(d / "norm.npz", inputs=x, labels=y)
    np.savez(d / "raw.npz", inputs=raw, labels=y)
    return {"dir": d, "fp32": fp32, "int8": int8, "bundle": bundle, "x": x, "raw": raw, "y": y,
            "int8_top1": float((_logits(int8, x).argmax(1) == y).mean())}


def test_bench_rows(models):
    rows = bench_models([models["fp32"]], batches=(1, 4), data=(models["x"], models["y"]), timing=FAST)
    assert [r.batch for r in rows] == [1, 4]
    for r in rows:
        assert r.format == "onnx" and r.precision == "fp32" and r.params == 8 * 9 + 8 + 80 + 10
        assert r.top1 == pytest.approx(0.9) and r.samples == 120
        assert r.latency.p50 <= r.latency.p90 <= r.latency.p99 and r.latency.runs >= 20
        assert len(r.latency.round_p50s) == 2 and r.throughput_sps > 0
        assert r.cold_start.total >= r.cold_start.session_create > 0
        assert r.providers == ("CPUExecutionProvider",) and r.peak_rss_bytes > 0
        assert r.size_bytes == models["fp32"].stat().st_size and r.runtime.startswith("onnxruntime ")


def test_bench_int8_detected(models):
    assert load_target(models["int8"]).precision == "int8"
    (row,) = bench_models([models["int8"]], data=(models["x"], models["y"]), timing=FAST)
    assert row.precision == "int8" and row.top1 == pytest.approx(models["int8_top1"])


def test_bench_bundle_prepares_raw_data_by_its_contract(models):
    (row,) = bench_models([models["bundle"]], data=models["dir"] / "raw.npz", timing=FAST)
    assert row.role == "student" and row.top1 == pytest.approx(0.9)
    (row,) = bench_models([models["bundle"]], data=(models["raw"], models["y"]), raw=True, timing=FAST)
    assert row.top1 == pytest.approx(0.9)


def test_several_models_are_timed_interleaved(models):
    rows = bench_models([models["fp32"], models["int8"]], batches=(1,), timing=FAST, names=["a", "b"])
    assert [r.name for r in rows] == ["a", "b"] and all(len(r.latency.round_p50s) == 2 for r in rows)


def test_fixed_batch_is_a_recorded_failure(models):
    fixed = make_tiny_cnn(models["dir"] / "fixed.onnx", batch=1)
    rows = bench_models([fixed], batches=(1, 2), timing=FAST)
    assert rows[0].error is None and "fixed batch size of 1" in rows[1].error


@pytest.mark.parametrize("kind", ["fp32", "int8", "bundle"])
def test_cli_bench_writes_json_and_table(models, kind, tmp_path, capsys):
    out = tmp_path / "bench.json"
    data = models["dir"] / ("raw.npz" if kind == "bundle" else "norm.npz")
    rc = cli_main(["bench", str(models[kind]), "--batch", "1,3", "--data", str(data), "--json", str(out),
                   *FAST_ARGS])
    assert rc == 0
    text = capsys.readouterr().out
    assert "p50" in text and "providers that ran: CPUExecutionProvider" in text and "top-1" in text
    doc = json.loads(out.read_text())
    assert doc["schema_version"] == 2 and doc["kind"] == "bench"
    assert [r["batch"] for r in doc["artifacts"]] == [1, 3]
    assert doc["device"]["providers"] == ["CPUExecutionProvider"] and doc["device"]["cores"] >= 1


def test_cli_compares_two_models_beyond_noise(models, capsys):
    assert cli_main(["bench", str(models["fp32"]), str(models["int8"]), *FAST_ARGS]) == 0
    out = capsys.readouterr().out
    assert "batch 1:" in out and ("within the measured noise" in out or "beyond the noise" in out)


def test_cli_bad_arguments_are_usage_errors(models, capsys):
    assert cli_main(["bench", str(models["fp32"]), "--batch", "0,x"]) == 2
    assert "--batch" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli_main(["bench", str(models["fp32"]), "--min-time-s", "nan"])
    assert exc.value.code == 2 and "finite number" in capsys.readouterr().err


def test_cli_trt_engine_without_sidecar_is_refused(models, tmp_path, capsys):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not an engine")
    assert cli_main(["bench", str(engine), *FAST_ARGS]) == 4
    assert "sidecar" in capsys.readouterr().err


def test_cli_bench_never_imports_torch(models, tmp_path):
    """Run the command where `import torch` fails and leaves a marker: it must succeed, marker absent."""
    blocker = tmp_path / "blocked" / "torch"
    blocker.mkdir(parents=True)
    marker = tmp_path / "torch-was-imported"
    blocker.joinpath("__init__.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nraise ImportError('torch is blocked in this test')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker.parent), str(REPO)])}
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "edgekd", "bench", str(models["bundle"]), "--batch", "1,2",
                           "--data", str(models["dir"] / "raw.npz"), "--json", str(out), *FAST_ARGS],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert not marker.exists()
    assert json.loads(out.read_text())["artifacts"][0]["top1"] == pytest.approx(0.9)


def test_bench_bundle_with_image_folder(models, tmp_path):
    """ImageFolder data goes through the bundle's contract exactly like Predictor.predict."""
    pil = pytest.importorskip("PIL.Image")
    from edgekd.benchmarks.datasets import load_image_folder
    from edgekd.deploy.runtime.bundle import load_bundle

    rng = np.random.default_rng(3)
    for cls in ("0", "3", "7"):
        (tmp_path / cls).mkdir()
        for i in range(4):
            pil.fromarray(rng.integers(0, 17, (8, 8), dtype=np.uint8) * 15, mode="L").save(tmp_path / cls / f"{i}.png")
    images, y = load_image_folder(tmp_path, CONTRACT, [str(i) for i in range(10)])
    assert images.shape == (12, 8, 8, 1) and sorted(set(y.tolist())) == [0, 3, 7]  # folder names → labels
    labels, _ = load_bundle(models["bundle"]).predict(images)
    expected = float(np.mean([int(label) == t for label, t in zip(labels, y, strict=True)]))
    (row,) = bench_models([models["bundle"]], data=tmp_path, timing=FAST)
    assert row.top1 == pytest.approx(expected)
