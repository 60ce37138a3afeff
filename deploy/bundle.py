"""Write a self-describing bundle (``model.onnx``, ``model.json``, optional engine + sidecar, ``SHA256SUMS``) and
verify one (``edgekd verify``: checksums, metadata, intake, ``onnx.checker``, one inference).

The bundle is assembled in a temporary folder beside the destination and renamed into place at the end,
so a crash never leaves a half-written bundle behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from edgekd.deploy.errors import InputFileError, VerificationError
from edgekd.deploy.fileio import atomic_write_via, current_umask, sha256_file, write_json, write_text
from edgekd.deploy.runtime.bundle import BUNDLE_FORMAT, META_FILE, SUMS_FILE, Predictor, open_bundle
from edgekd.deploy.runtime.intake import check_model


def write_bundle(out_dir: str | os.PathLike, model_path: str | os.PathLike, meta: dict,
                 extra_files: list[str | os.PathLike] = ()) -> Path:
    """Copy ``model_path`` (and ``extra_files``) into ``out_dir`` with ``model.json`` and ``SHA256SUMS``.

    ``meta`` must hold ``input`` (``name``, ``shape``, ``dtype``, ``layout``); ``normalization``,
    ``labels``, ``precision``, ``metrics`` and ``producer`` are recommended.

    Example:
        >>> write_bundle("bundle", "student.onnx", {"input": {...}, "labels": [...]})  # doctest: +SKIP
    """
    out_dir = Path(out_dir)
    model_path = Path(model_path)
    check_model(model_path)
    if "input" not in meta:
        raise InputFileError("bundle metadata lacks 'input' (name, shape, dtype, layout)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        _copy_synced(model_path, staging / "model.onnx")
        names = ["model.onnx"]
        for extra in extra_files:
            extra = Path(extra)
            _copy_synced(extra, staging / extra.name)
            names.append(extra.name)
        full_meta = {"bundle_format": BUNDLE_FORMAT, "model": "model.onnx", **meta}
        write_json(staging / META_FILE, full_meta)
        names.append(META_FILE)
        sums = "".join(f"{sha256_file(staging / n)}  {n}\n" for n in sorted(names))
        write_text(staging / SUMS_FILE, sums)
        os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp makes it 0700
        _fsync_dir(staging)
        _replace_dir(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def _copy_synced(src: Path, dst: Path) -> None:
    """Copy with the data flushed to disk (a bundle must survive a power cut after the swap)."""
    atomic_write_via(dst, lambda tmp: shutil.copyfile(src, tmp))


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace_dir(src: Path, dst: Path) -> None:
    """Swap ``src`` into ``dst``; the old ``dst`` (if any) is removed only after the swap."""
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


def verify_bundle(folder: str | os.PathLike, providers=None, allow_domains=frozenset()) -> list[str]:
    """Run every check; return one line per passed check, raise on the first failure."""
    import onnx

    meta, info = open_bundle(folder, allow_domains)
    lines = [f"checksums: every file matches SHA256SUMS ({meta.folder})"]
    shape = meta.input.get("shape")
    if not shape or len(shape) != 4:
        raise InputFileError(f"model.json input.shape is {shape!r}, expected [batch, C, H, W]")
    try:
        # a path (not a loaded proto): the checker resolves external data next to the model, not in the cwd
        onnx.checker.check_model(str(meta.model_path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise VerificationError(f"{meta.model_path} fails onnx.checker: {str(exc).splitlines()[0]}") from None
    opset = info.opset("") or "?"
    lines.append(f"model: {meta.model_path.name} passes the intake check and onnx.checker (opset {opset})")
    predictor = Predictor(meta, providers)
    batch = np.zeros((2, *shape[1:]), dtype=np.float32)
    logits = predictor.logits(batch)
    n_labels = len(meta.labels)
    if logits.shape[0] != 2 or not np.isfinite(logits).all() or (n_labels and logits.shape[1] != n_labels):
        raise VerificationError(f"test inference returned shape {logits.shape} (finite: "
                                f"{bool(np.isfinite(logits).all())}), expected (2, {n_labels or '?'}) finite")
    lines.append(f"inference: batch of 2 → logits {tuple(logits.shape)}, finite, on "
                 f"{predictor.session_info.active[0]}")
    return lines
