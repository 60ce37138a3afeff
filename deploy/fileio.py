"""Atomic file writes and checksums: the only way edgekd writes a file.

Every writer goes through :func:`atomic_write`: the bytes go to a temporary file in the same folder, are
flushed and fsync'ed, then renamed over the destination. A crash at any point leaves the old file or the
new one, never a torn one. ``ENOSPC``/``EFBIG`` become a :class:`ResourceError`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from edgekd.deploy.errors import ResourceError

_DISK_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


def current_umask() -> int:
    """The process umask (read without changing it for longer than one call)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish(tmp: str, path: Path) -> None:
    """Give the temp file normal permissions (mkstemp makes it 0600), then rename it into place."""
    os.chmod(tmp, 0o666 & ~current_umask())
    os.replace(tmp, path)


@contextlib.contextmanager
def _staged(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on clean exit publish it over ``path``, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        _publish(tmp, path)
    except OSError as exc:
        _discard(tmp)
        if exc.errno in _DISK_ERRNOS:
            raise ResourceError(f"could not write {path}: {exc.strerror}",
                                hint="free disk space or choose another --out folder") from None
        raise
    except BaseException:
        _discard(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temp file beside ``path``; on clean exit flush, fsync and rename it over ``path``.

    Example:
        >>> with atomic_write("out.json", "w") as f:  # doctest: +SKIP
        ...     f.write("{}")
    """
    with _staged(path) as tmp, open(tmp, mode) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def atomic_write_via(path: str | os.PathLike, writer: Callable[[Path], Any]) -> Path:
    """Let ``writer(tmp_path)`` write a file (for libraries that want a path), then rename it into place."""
    with _staged(path) as tmp:
        writer(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_write(path, "wb") as f:
        f.write(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def made_by_edgekd(path: str | os.PathLike) -> bool:
    """Whether an existing output file is one edgekd wrote (and may replace): an ONNX model with edgekd's
    producer or metadata, an edgekd JSON document, a report, or an engine whose sidecar is edgekd's."""
    path = Path(path)
    try:
        if path.suffix == ".onnx":
            from edgekd.deploy.runtime.onnxinfo import read_onnx

            info = read_onnx(path)
            return info.producer == "edgekd" or any(k.startswith("edgekd") for k in info.metadata)
        if path.suffix == ".json":
            doc = json.loads(path.read_text())
            return isinstance(doc, dict) and ("edgekd_version" in doc or doc.get("format", "").startswith("edgekd"))
        if path.suffix in (".md", ".html"):
            return "edgekd" in path.read_text(errors="replace")[:400]
        sidecar = path.with_name(path.name + ".json")
        return sidecar.is_file() and made_by_edgekd(sidecar)
    except Exception:  # noqa: BLE001 - unreadable or unparseable means: not provably ours
        return False


def refuse_foreign(path: str | os.PathLike, option: str = "--out") -> None:
    """Never overwrite what edgekd did not make: an existing ``path`` must be edgekd's own output.

    Raises:
        UsageError: ``path`` is a folder, or a file edgekd did not write.
    """
    from edgekd.deploy.errors import UsageError

    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{option} {path} is a folder, expected a file name", hint=f"e.g. {option} {path / 'out'}")
    if path.exists() and not made_by_edgekd(path):
        raise UsageError(f"{option} {path} exists and edgekd did not write it; refusing to overwrite it",
                         hint="choose another file name (edgekd only replaces its own outputs)")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def _discard(tmp: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
