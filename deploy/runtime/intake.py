"""The one check every ONNX file from outside passes before a session is created.

* the file exists, is not empty and is not a Git LFS pointer;
* it parses as an ONNX ModelProto (:mod:`~edgekd.deploy.runtime.onnxinfo`, no weights loaded, external data
  never followed);
* every external-data location is a relative path that stays inside the model's folder (no absolute
  path, no ``..``, no symlink pointing out);
* every operator domain is a standard one unless the caller allows more.

Standard library only (no ``onnx``, no torch), so the device side runs it before every session.
"""

from __future__ import annotations

import os
from pathlib import Path

from edgekd.deploy.errors import InputFileError, SecurityError
from edgekd.deploy.runtime.onnxinfo import OnnxInfo, read_onnx

#: ONNX's own domains and ONNX Runtime's contrib ops (which ORT's quantizer and optimizer emit).
STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "ai.onnx.preview.training"})
LFS_MAGIC = b"version https://git-lfs"


def check_file(path: str | os.PathLike, what: str = "file") -> Path:
    """Exists, is a regular non-empty file, and is not a Git LFS pointer."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{what} not found: {path}", hint="check the path")
    if path.is_dir():
        raise InputFileError(f"{what} is a folder, expected a file: {path}")
    size = path.stat().st_size
    if size == 0:
        raise InputFileError(f"{what} is empty (0 bytes): {path}", hint="re-create or re-download it")
    with open(path, "rb") as f:
        head = f.read(len(LFS_MAGIC))
    if head == LFS_MAGIC:
        raise InputFileError(f"{path} is a Git LFS pointer, not a {what}",
                             hint="run `git lfs pull` to fetch the real file")
    return path


def check_model(path: str | os.PathLike, allow_domains: frozenset[str] | set[str] = frozenset()) -> OnnxInfo:
    """Read ``path``'s structure without following external data and run the safety checks.

    Returns the :class:`~edgekd.deploy.runtime.onnxinfo.OnnxInfo` (no weights loaded). Raises
    :class:`InputFileError` for a corrupt file and :class:`SecurityError` for path escapes or unknown
    operator domains.
    """
    path = check_file(path, "ONNX model")
    info = read_onnx(path)
    if not info.has_graph or not (info.nodes or info.outputs):
        raise InputFileError(f"{path} is not a valid ONNX model: it has no graph",
                             hint="re-export it; the file may be truncated or of another format")
    check_external_data(info, path.parent)
    check_domains(info, STANDARD_DOMAINS | set(allow_domains), path)
    return info


def check_external_data(info: OnnxInfo, folder: Path) -> None:
    """Every external-data ``location`` (initializers, sparse and attribute tensors of every graph) must be a
    plain relative path that resolves inside ``folder``."""
    root = folder.resolve()
    for tensor in info.tensors:
        if tensor.external is None:
            continue
        location = tensor.external
        rel = Path(location)
        if not location or rel.is_absolute() or ".." in rel.parts or location.startswith(("/", "\\")):
            raise SecurityError(
                f"tensor '{tensor.name}' points its external data outside the model folder: '{location}'",
                hint="external-data paths must be plain relative file names next to the model")
        target = (folder / rel).resolve()
        if root != target and root not in target.parents:
            raise SecurityError(
                f"tensor '{tensor.name}' external data '{location}' resolves to {target}, outside {root} "
                "(a symlink out of the folder?)", hint="copy the data file next to the model")


def check_domains(info: OnnxInfo, allowed: set[str] | frozenset[str], path: Path) -> None:
    """Every node — in the main graph, in If/Loop/Scan branches and in local function bodies — must use an
    allowed domain; a call of a function the model itself defines is fine."""
    # Only domains that nodes really use: tools (ORT's pre-processing, exporters) declare opset imports
    # for domains no node uses, which are harmless.
    unknown = sorted({n.domain for n in info.nodes
                      if n.domain not in allowed and (n.domain, n.op_type) not in info.functions})
    if unknown:
        raise SecurityError(
            f"{path} uses operator domain(s) {unknown}, which are not standard ONNX",
            hint="if you trust this model and have its custom-op library, allow them with --allow-domain")
