"""The latency harness (warm-up, statistics, noise flag) and the device fingerprint."""

from __future__ import annotations

import subprocess
import sys
import time
import types

import numpy as np
import pytest

from edgekd.benchmarks import fingerprint as fp_mod
from edgekd.benchmarks.harness import (
    faster,
    measure,
    measure_interleaved,
    noise_advice,
    peak_rss_bytes,
    summarize,
    throughput,
)
from edgekd.benchmarks.plots import pareto_front
from edgekd.benchmarks.results import Latency
from edgekd.deploy.typed import from_json, to_json

SLOW_S = 0.15


class SlowStart:
    """A 'session' whose first ``slow_calls`` calls take ``SLOW_S`` seconds, like a cold cache or JIT."""

    def __init__(self, slow_calls: int):
        self.slow_calls, self.calls = slow_calls, 0

    def __call__(self) -> None:
        self.calls += 1
        if self.calls <= self.slow_calls:
            time.sleep(SLOW_S)


def test_summarize_percentiles_and_dict():
    stats = summarize(np.arange(1, 101) * 1e6)  # 1..100 ms
    assert stats.runs == 100
    assert stats.p50 == pytest.approx(50.5)
    assert stats.p90 == pytest.approx(90.1)
    assert stats.min == 1.0 and stats.max == 100.0
    assert from_json(Latency, to_json(stats)) == stats


def test_warmup_by_count_keeps_slow_first_calls_out():
    fn = SlowStart(slow_calls=3)
    stats = measure(fn, warmup_runs=3, warmup_s=0.0, min_runs=30, min_time_s=0.0)
    assert stats.warmup_runs == 3 and stats.runs == 30
    assert stats.max < SLOW_S * 1e3 / 2  # none of the 150 ms calls was sampled


def test_warmup_by_time_keeps_slow_first_calls_out():
    fn = SlowStart(slow_calls=3)  # 0.45 s of slow calls, warm-up lasts at least 0.6 s
    stats = measure(fn, warmup_runs=1, warmup_s=0.6, min_runs=30, min_time_s=0.0)
    assert stats.warmup_runs > 3
    assert stats.max < SLOW_S * 1e3 / 2


def test_without_warmup_slow_calls_pollute_stats():
    stats = measure(SlowStart(slow_calls=3), warmup_runs=0, warmup_s=0.0, min_runs=30, min_time_s=0.0)
    assert stats.max >= SLOW_S * 1e3  # the control: the slow calls are real


def test_min_runs_and_min_time_both_hold():
    stats = measure(lambda: None, warmup_runs=0, warmup_s=0.0, min_runs=10, min_time_s=0.05)
    assert stats.runs >= 10
    n = [0]

    def count():
        n[0] += 1

    measure(count, warmup_runs=0, warmup_s=0.0, min_runs=500, min_time_s=0.0)
    assert n[0] == 500


def test_noise_warning_on_bimodal_callable():
    calls = [0]

    def bimodal():
        calls[0] += 1
        if calls[0] % 2:
            time.sleep(0.002)

    stats = measure(bimodal, warmup_runs=2, warmup_s=0.0, min_runs=60, min_time_s=0.0)
    assert stats.noisy and stats.cv > 0.25
    advice = noise_advice(stats)
    assert advice and "pin the clocks" in advice.lower() and "--min-runs" in advice


def test_steady_samples_are_not_noisy():
    samples = np.full(200, 1e6) + np.random.default_rng(0).normal(0, 1e4, 200)  # 1 ms ± 1 %
    samples[7] = 50e6  # one OS hiccup does not flag a run
    stats = summarize(samples)
    assert not stats.noisy and noise_advice(stats) is None


def test_throughput_from_mean():
    tput, stats = throughput(lambda: time.sleep(0.001), 8, warmup_runs=1, warmup_s=0.0, min_runs=5,
                             min_time_s=0.0)
    assert tput == pytest.approx(8 / (stats.mean / 1e3))


def _lat(rounds: list[float], cv: float = 0.05) -> Latency:
    p50 = float(np.median(rounds))
    return Latency(p50, p50, p50, p50, p50, 0.0, min(rounds), max(rounds), 100, cv=cv, round_p50s=tuple(rounds))


def test_a_noise_level_difference_is_a_tie():
    """5 % apart, but the rounds overlap: neither is faster. Clearly apart: the faster one wins."""
    a, b = _lat([1.00, 1.08, 0.97, 1.05, 1.02]), _lat([1.05, 0.99, 1.10, 1.04, 1.07])
    assert not faster(a, b) and not faster(b, a)
    c = _lat([0.50, 0.52, 0.49, 0.51, 0.50])
    assert faster(c, a) and not faster(a, c)
    one_round = _lat([1.0], cv=0.2), _lat([1.3], cv=0.2)
    assert not faster(*one_round), "within each other's robust spread"


def test_interleaved_rounds_alternate_candidates():
    order = []
    calls = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    stats = measure_interleaved(calls, rounds=4, warmup_s=0.0, warmup_runs=0, min_runs=8, min_time_s=0.0)
    assert len(stats["a"].round_p50s) == 4 and stats["a"].runs == 8 and stats["b"].spread is not None
    assert order == ["a", "a", "b", "b", "b", "b", "a", "a"] * 2, "each round 2 calls each, order rotating"


def test_peak_rss_positive():
    assert peak_rss_bytes() is None or peak_rss_bytes() > 1_000_000


def test_pareto_front():
    pts = [(1.0, 0.90), (2.0, 0.95), (3.0, 0.93), (0.5, 0.80), (2.0, 0.95)]
    assert pareto_front(pts) == [3, 0, 1, 4]


def test_fingerprint_keys_and_no_torch_import():
    code = ("import sys, json; from edgekd.benchmarks.fingerprint import fingerprint; "
            "from edgekd.deploy.typed import to_json; "
            "fp = fingerprint(['CPUExecutionProvider']); assert 'torch' not in sys.modules; "
            "print(json.dumps(to_json(fp)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    import json

    fp = json.loads(out.stdout)
    for key in ("cpu", "cores", "os", "python", "onnxruntime", "isa", "machine"):
        assert fp[key]
    assert fp["providers"] == ["CPUExecutionProvider"] and fp["torch"] is None


def test_fingerprint_reports_torch_only_when_already_imported(monkeypatch):
    fake = types.ModuleType("torch")
    fake.__version__ = "9.9.9"
    monkeypatch.setitem(sys.modules, "torch", fake)
    assert fp_mod.fingerprint().torch == "9.9.9"


def test_jetson_fields_read_from_files(tmp_path, monkeypatch):
    model, release = tmp_path / "model", tmp_path / "nv_tegra_release"
    model.write_bytes(b"NVIDIA Jetson Orin Nano Developer Kit\x00")
    release.write_text("# R36 (release), REVISION: 3.0, GCID: 36923193, BOARD: generic, EABI: aarch64\n")
    monkeypatch.setattr(fp_mod, "JETSON_MODEL", model)
    monkeypatch.setattr(fp_mod, "L4T_RELEASE", release)
    info = fp_mod.fingerprint().jetson
    assert info["model"] == "NVIDIA Jetson Orin Nano Developer Kit"
    assert info["l4t"] == "36.3.0"
    assert "nvpmodel" in info and "clocks_locked" in info
    assert "Jetson Orin Nano" in fp_mod.fingerprint().label


def test_no_jetson_here(monkeypatch, tmp_path):
    monkeypatch.setattr(fp_mod, "JETSON_MODEL", tmp_path / "none")
    monkeypatch.setattr(fp_mod, "L4T_RELEASE", tmp_path / "none2")
    assert fp_mod.jetson_info() is None


def test_results_md_sections_replace_only_their_block(tmp_path):
    from edgekd.benchmarks.results import update_results_md, write_suite_section

    md = tmp_path / "RESULTS.md"
    md.write_text("# Benchmark results\n\n## Quantization\n\nsomeone else's table\n")
    write_suite_section(md, "stability", "Stability", "first")
    update_results_md(md, "other", "## Other\n\nother block")
    write_suite_section(md, "stability", "Stability", "second")
    write_suite_section(md, "overhead", "Harness overhead", "third")
    text = md.read_text()
    assert "someone else's table" in text and text.count("\n## Harness\n") == 1
    assert "second" in text and "first" not in text
    assert text.index("## Harness") < text.index("### Stability") < text.index("### Harness overhead") < text.index(
        "## Other")  # our blocks stay together, before sections added by others later
