"""Promise 2: no partial artifacts. A crash during a save leaves the old file or the new one."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edgekd.deploy.errors import ResourceError
from edgekd.deploy.fileio import atomic_write, write_bytes


def test_crash_inside_the_save_keeps_the_old_file(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"OLD" * 100)
    with pytest.raises(RuntimeError, match="injected"):
        with atomic_write(target) as f:
            f.write(b"NEW" * 50)  # half of the new content is written ...
            raise RuntimeError("injected crash")  # ... then the process "dies"
    assert target.read_bytes() == b"OLD" * 100
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"], "temp file left behind"


def test_sigkill_during_a_save_leaves_no_torn_file(tmp_path):
    target = tmp_path / "weights.bin"
    target.write_bytes(b"OLD")
    script = (
        "import os, signal, sys\n"
        "from edgekd.deploy.fileio import atomic_write\n"
        f"with atomic_write({str(target)!r}) as f:\n"
        "    f.write(b'NEW' * 1000); f.flush()\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -9
    assert target.read_bytes() == b"OLD"


def test_full_disk_is_a_clear_error_and_keeps_the_old_file(tmp_path):
    """RLIMIT_FSIZE makes writes past 64 KiB fail with EFBIG, as a full disk would."""
    target = tmp_path / "big.onnx"
    target.write_bytes(b"OLD")
    script = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))\n"
        "from edgekd.deploy.fileio import write_bytes\n"
        "from edgekd.deploy.errors import ResourceError\n"
        "try:\n"
        f"    write_bytes({str(target)!r}, b'x' * 1_000_000)\n"
        "except ResourceError as e:\n"
        "    print('RESOURCE', e.message); sys.exit(8)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 8, proc.stderr
    assert "could not write" in proc.stdout
    assert target.read_bytes() == b"OLD"
    assert [p.name for p in tmp_path.iterdir()] == ["big.onnx"]


def test_write_replaces_atomically(tmp_path):
    target = write_bytes(tmp_path / "a.bin", b"one")
    write_bytes(target, b"two")
    assert target.read_bytes() == b"two"


def test_resource_error_has_exit_code_8():
    assert ResourceError("x").exit_code == 8


def test_written_files_get_normal_permissions(tmp_path):
    import os

    mask = os.umask(0o022)
    try:
        path = write_bytes(tmp_path / "results.json", b"{}")
    finally:
        os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o644
