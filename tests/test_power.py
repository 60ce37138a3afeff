"""benchmarks.power: tegrastats lines are parsed and sampled during `edgekd bench --power`."""

from __future__ import annotations

import json
import os
import stat

import pytest

from edgekd.benchmarks.power import TegrastatsSampler, input_power_mw, parse_line
from tests.conftest import run_cli

ORIN = ("11-23-2026 10:00:00 RAM 2394/7620MB (lfb 6x4MB) SWAP 0/3810MB CPU [2%@729,1%@729] "
        "GR3D_FREQ 0% cpu@46.5C soc2@44.2C gpu@45C tj@46.5C VDD_IN 4780mW/4700mW "
        "VDD_CPU_GPU_CV 500mW/480mW VDD_SOC 1400mW/1380mW")
NANO = "RAM 1500/3964MB CPU [10%@1479] EMC_FREQ 0% GR3D_FREQ 0% PLL@31C CPU@33.5C POM_5V_IN 2450/2400 POM_5V_GPU 0/0"


def test_parse_orin_and_nano_lines():
    orin = parse_line(ORIN)
    assert orin["rails_mw"] == {"VDD_IN": 4780.0, "VDD_CPU_GPU_CV": 500.0, "VDD_SOC": 1400.0}
    assert orin["temps_c"]["cpu"] == 46.5 and orin["temps_c"]["gpu"] == 45.0
    assert input_power_mw(orin["rails_mw"]) == ("VDD_IN", 4780.0)
    nano = parse_line(NANO)
    assert input_power_mw(nano["rails_mw"]) == ("POM_5V_IN", 2450.0) and nano["temps_c"]["CPU"] == 33.5
    assert input_power_mw(parse_line("VDD_GPU 100mW/100mW VDD_CPU 300mW/300mW")["rails_mw"]) == \
        ("sum of rails", 400.0)


@pytest.fixture
def fake_tegrastats(tmp_path, monkeypatch):
    """A real executable named tegrastats on PATH printing Orin lines until it is terminated."""
    script = tmp_path / "bin" / "tegrastats"
    script.parent.mkdir()
    script.write_text(f"#!/bin/sh\nwhile true; do echo '{ORIN}'; sleep 0.02; done\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")
    return script


def test_sampler_collects_and_stops(fake_tegrastats):
    import time

    with TegrastatsSampler(interval_ms=20) as s:
        time.sleep(0.3)
    summary = s.summary(mean_latency_ms=2.0, batch=4)
    assert summary["samples"] >= 3 and summary["rail"] == "VDD_IN"
    assert summary["power_w"] == pytest.approx(4.78)
    assert summary["energy_mj_per_inference"] == pytest.approx(4.78 * 2.0 / 4)
    assert summary["temps_c_max"]["tj"] == 46.5
    assert s._proc.poll() is not None, "tegrastats must be stopped"


def test_without_tegrastats_nothing_is_sampled(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with TegrastatsSampler() as s:
        pass
    assert s.summary(1.0) == {"available": False, "reason": "'tegrastats' not found (not a Jetson?)"}


def test_bench_power_flag_reports_energy(fake_tegrastats, digits_student, tmp_path):
    out = tmp_path / "b.json"
    proc = run_cli("bench", str(digits_student["path"]), "--power", "--min-time-s", "0.3", "--min-runs", "20",
                   "--warmup-s", "0.05", "--json", str(out), env={"PATH": os.environ["PATH"]})
    assert proc.returncode == 0, proc.stderr
    assert "mJ/inference" in proc.stdout
    row = json.loads(out.read_text())["artifacts"][0]
    assert row["power"]["power_w"] == pytest.approx(4.78) and row["power"]["samples"] >= 1
