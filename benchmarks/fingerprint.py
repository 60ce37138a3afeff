"""Device fingerprint: what a benchmark row ran on, so rows from different devices stay comparable.

Everything is read-only: files under ``/proc``, ``/sys`` and ``/etc`` and ``nvpmodel -q``; the device is
never changed (no clock pinning, no power-mode switch). Never imports torch: ``torch`` is reported only
when the caller already imported it.

Example:
    >>> device = fingerprint(["CPUExecutionProvider"])
    >>> device.providers
    ('CPUExecutionProvider',)
"""

from __future__ import annotations

import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from edgekd.deploy.runtime.cpu import cpu_info

if TYPE_CHECKING:
    from edgekd.benchmarks.results import Device

JETSON_MODEL = Path("/proc/device-tree/model")
L4T_RELEASE = Path("/etc/nv_tegra_release")
CPUFREQ = Path("/sys/devices/system/cpu")
GPU_DEVFREQ_GLOBS = ("/sys/devices/gpu.0/devfreq/*", "/sys/devices/platform/*gpu*/devfreq/*",
                     "/sys/class/devfreq/*gpu*", "/sys/class/devfreq/*.gpu")


def fingerprint(providers_ran: list[str] | None = None) -> Device:
    """Describe this machine and its software for a results document's ``device``.

    Args:
        providers_ran: the execution providers that actually ran (from the runner's info).

    Returns:
        A :class:`~edgekd.benchmarks.results.Device`: CPU, cores, ISA, OS, Python, onnxruntime and numpy
        versions, the providers that ran and those available, the CPU governor, the Jetson's model / L4T /
        power mode / clock state on a Jetson, and ``torch`` when torch is already imported. Values that
        cannot be read are ``None``.
    """
    from edgekd.benchmarks.results import Device

    info = cpu_info()
    available = _ort_available_providers()
    return Device(
        cpu=info["model"], cores=info["cores"], machine=platform.machine(), os=platform.platform(),
        python=platform.python_version(), onnxruntime=_package_version("onnxruntime"),
        numpy=_package_version("numpy"),
        torch=getattr(sys.modules["torch"], "__version__", None) if "torch" in sys.modules else None,
        isa=tuple(sorted(k for k, v in info["flags"].items() if v)),
        providers=tuple(providers_ran) if providers_ran is not None else None,
        providers_available=tuple(available) if available is not None else None,
        cpu_governor=cpu_governor(), jetson=jetson_info())


def jetson_info() -> dict | None:
    """Model, L4T release, nvpmodel mode and clock state of a Jetson; ``None`` elsewhere."""
    model = _read(JETSON_MODEL)
    release = _read(L4T_RELEASE)
    if not (model and "jetson" in model.lower()) and not release:
        return None
    return {
        "model": model,
        "l4t": parse_l4t_release(release) if release else None,
        "nvpmodel": nvpmodel_mode(),
        "clocks_locked": clocks_locked(),
    }


def parse_l4t_release(text: str) -> str | None:
    """``"# R35 (release), REVISION: 4.1, ..."`` → ``"35.4.1"``."""
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"{match.group(1)}.{match.group(2)}" if match else text.strip().splitlines()[0][:80]


def nvpmodel_mode() -> str | None:
    """The current power mode from ``nvpmodel -q`` (a read-only query), when it can be run."""
    try:
        out = subprocess.run(["nvpmodel", "-q"], capture_output=True, text=True, timeout=3)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"NV Power Mode:\s*(\S+)", out.stdout)
    lines = [ln.strip() for ln in out.stdout.splitlines() if ln.strip()]
    mode = lines[-1] if lines and lines[-1].isdigit() else None
    if match:
        return f"{match.group(1)} (mode {mode})" if mode else match.group(1)
    return mode


def clocks_locked() -> bool | None:
    """True when every CPU (and the GPU, when readable) runs with min frequency == max frequency."""
    pairs = []
    for cpu in sorted(CPUFREQ.glob("cpu[0-9]*/cpufreq")):
        pairs.append((_read(cpu / "scaling_min_freq"), _read(cpu / "scaling_max_freq")))
    for pattern in GPU_DEVFREQ_GLOBS:
        for dev in Path("/").glob(pattern.lstrip("/")):
            pairs.append((_read(dev / "min_freq"), _read(dev / "max_freq")))
    pairs = [(lo, hi) for lo, hi in pairs if lo and hi]
    if not pairs:
        return None
    return all(lo == hi for lo, hi in pairs)


def cpu_governor() -> str | None:
    """The CPU frequency governor of cpu0 (``performance`` pins clocks high), when readable."""
    return _read(CPUFREQ / "cpu0" / "cpufreq" / "scaling_governor")


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").replace("\x00", "").strip() or None
    except OSError:
        return None


def _package_version(name: str) -> str | None:
    module = sys.modules.get(name)
    if module is not None and getattr(module, "__version__", None):
        return module.__version__
    from importlib import metadata

    for dist in (name, f"{name}-gpu", f"{name}-directml", f"{name}-openvino"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def _ort_available_providers() -> list[str] | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    return list(onnxruntime.get_available_providers())
