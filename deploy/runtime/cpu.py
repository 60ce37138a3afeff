"""CPU identity and instruction sets (AVX2 / AVX-512 / VNNI / NEON), read without third-party packages.

Used by the quantization presets (x86 without VNNI needs ``reduce_range``) and the device fingerprint.
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path


@functools.lru_cache(maxsize=1)
def cpu_info() -> dict:
    """``{"model": str, "arch": str, "cores": int, "flags": {"avx2": bool, ...}}``."""
    arch = platform.machine().lower()
    model, flags = platform.processor() or arch, set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("model name", "hardware", "processor") and value.strip() and not value.strip().isdigit():
                model = value.strip()
            elif key in ("flags", "features") and not flags:
                flags = set(value.split())
    elif platform.system() == "Darwin":
        model = _sysctl("machdep.cpu.brand_string") or model
    is_arm = arch in ("aarch64", "arm64") or arch.startswith("arm")
    isa = {
        "avx2": "avx2" in flags,
        "avx512": any(f.startswith("avx512f") for f in flags),
        "vnni": bool({"avx512_vnni", "avx_vnni", "avx512vnni"} & flags),
        "amx": any(f.startswith("amx") for f in flags),
        "neon": is_arm and (not flags or bool({"asimd", "neon"} & flags)),
        "dotprod": "asimddp" in flags,
    }
    return {"model": model, "arch": arch, "cores": os.cpu_count() or 1, "flags": isa}


def _sysctl(name: str) -> str | None:
    import subprocess

    try:
        return subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=2).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def isa_summary() -> str:
    flags = cpu_info()["flags"]
    return ", ".join(k.upper() for k, v in flags.items() if v) or "none detected"
