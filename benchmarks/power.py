"""Power and temperature on a Jetson, sampled with ``tegrastats`` while a benchmark runs (read-only).

``tegrastats`` prints one line per interval with rails (``VDD_IN 4780mW/4780mW`` on Orin,
``POM_5V_IN 2450/2450`` on Nano/TX2) and temperatures (``CPU@46.5C``). The board's input rail gives the
power; energy per inference is mean power × mean latency / batch. Elsewhere (no ``tegrastats``) the
sampler reports ``available: False`` and nothing else changes.

Example:
    >>> with TegrastatsSampler() as power:           # doctest: +SKIP
    ...     stats = measure(call)
    >>> power.summary(stats.mean_ms, batch=1)
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading

#: Rails that measure the whole module's input, in order of preference.
INPUT_RAILS = ("VDD_IN", "POM_5V_IN", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO")
_RAIL = re.compile(r"\b((?:VDD|POM|VIN)_[A-Z0-9_]+) (\d+)(?:mW)?/(\d+)(?:mW)?")
_TEMP = re.compile(r"\b([A-Za-z0-9_]+)@(-?\d+(?:\.\d+)?)C\b")


def parse_line(line: str) -> dict:
    """``{"rails_mw": {name: instant mW}, "temps_c": {name: °C}}`` from one tegrastats line."""
    rails = {name: float(now) for name, now, _avg in _RAIL.findall(line)}
    temps = {name: float(t) for name, t in _TEMP.findall(line) if not name.isdigit()}
    return {"rails_mw": rails, "temps_c": temps}


def input_power_mw(rails: dict) -> tuple[str | None, float | None]:
    """The module's input power: a known input rail, else the sum of all rails."""
    for name in INPUT_RAILS:
        if name in rails:
            return name, rails[name]
    return ("sum of rails", sum(rails.values())) if rails else (None, None)


class TegrastatsSampler:
    """Run ``tegrastats --interval MS`` in the background and collect parsed samples."""

    def __init__(self, interval_ms: int = 100, command: str = "tegrastats"):
        self.interval_ms, self.command = interval_ms, command
        self.samples: list[dict] = []
        self.available = shutil.which(command) is not None
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> TegrastatsSampler:
        if self.available:
            self._proc = subprocess.Popen([self.command, "--interval", str(self.interval_ms)],
                                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self._thread = threading.Thread(target=self._read, daemon=True)
            self._thread.start()
        return self

    def _read(self) -> None:
        for line in self._proc.stdout:
            sample = parse_line(line)
            if sample["rails_mw"] or sample["temps_c"]:
                self.samples.append(sample)

    def __exit__(self, *exc) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._thread.join(timeout=5)

    def summary(self, mean_latency_ms: float, batch: int = 1) -> dict:
        """Mean input power, energy per inference (mJ) and the peak of each temperature."""
        if not self.available:
            return {"available": False, "reason": f"'{self.command}' not found (not a Jetson?)"}
        powers = [input_power_mw(s["rails_mw"]) for s in self.samples]
        powers = [(name, mw) for name, mw in powers if mw is not None]
        temps: dict[str, float] = {}
        for s in self.samples:
            for name, t in s["temps_c"].items():
                temps[name] = max(t, temps.get(name, t))
        if not powers:
            return {"available": True, "samples": len(self.samples), "power_w": None,
                    "energy_mj_per_inference": None, "temps_c_max": temps}
        mean_w = sum(mw for _, mw in powers) / len(powers) / 1e3
        return {"available": True, "samples": len(self.samples), "rail": powers[0][0], "power_w": mean_w,
                "energy_mj_per_inference": mean_w * mean_latency_ms / batch, "temps_c_max": temps}
