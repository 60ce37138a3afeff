"""The one check every ONNX file from outside passes before a session is created.

* the file exists, is not empty and is not a Git LFS pointer;
* it parses as an ONNX ModelProto (external data is *not* followed while parsing);
* every external-data location is a relative path that stays inside the model's folder (no absolute
  path, no ``..``, no symlink pointing out);
* every operator domain is a standard one unless the caller allows more.

Imports numpy and onnx only, so the device side can use it.
"""

from __future__ import annotations

import os
from pathlib import Path

from deploy.errors import InputFileError, SecurityError

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


def load_onnx_checked(path: str | os.PathLike, allow_domains: frozenset[str] | set[str] = frozenset()):
    """Parse ``path`` as ONNX without following external data and run the safety checks.

    Returns the ``onnx.ModelProto`` (external tensors not loaded). Raises :class:`InputFileError` for a
    corrupt file and :class:`SecurityError` for path escapes or unknown operator domains.
    """
    import onnx
    from google.protobuf.message import DecodeError

    path = check_file(path, "ONNX model")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise InputFileError(f"{path} is not a valid ONNX model: {exc}",
                             hint="re-export it; the file may be truncated or of another format") from None
    if not model.graph.node and not model.graph.output:
        raise InputFileError(f"{path} is not a valid ONNX model: it has no graph",
                             hint="re-export it; the file may be truncated or of another format")
    check_external_data(model, path.parent)
    check_domains(model, STANDARD_DOMAINS | set(allow_domains), path)
    return model


def check_external_data(model, folder: Path) -> None:
    """Every external-data ``location`` must resolve inside ``folder``."""
    root = folder.resolve()
    for tensor in _all_tensors(model):
        if tensor.data_location != 1:  # onnx.TensorProto.EXTERNAL
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
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


def check_domains(model, allowed: set[str] | frozenset[str], path: Path) -> None:
    """Every node — in the main graph, in If/Loop/Scan branches and in local function bodies — must use an
    allowed domain; a call of a function the model itself defines is fine."""
    # Only domains that nodes really use: tools (ORT's pre-processing, exporters) declare opset imports
    # for domains no node uses, which are harmless.
    local = {(f.domain, f.name) for f in model.functions}
    unknown = sorted({n.domain for n in _all_nodes(model)
                      if n.domain not in allowed and (n.domain, n.op_type) not in local})
    if unknown:
        raise SecurityError(
            f"{path} uses operator domain(s) {unknown}, which are not standard ONNX",
            hint="if you trust this model and have its custom-op library, allow them with --allow-domain")


def _graphs(graph):
    """``graph`` and every subgraph nested in its nodes' attributes (If/Loop/Scan bodies), recursively."""
    yield graph
    for node in graph.node:
        yield from _subgraphs(node)


def _subgraphs(node):
    for attr in node.attribute:
        if attr.HasField("g"):
            yield from _graphs(attr.g)
        for g in attr.graphs:
            yield from _graphs(g)


def _all_nodes(model):
    """Every node of the model: all graphs, and the bodies of local functions (with their subgraphs)."""
    for graph in _graphs(model.graph):
        yield from graph.node
    for function in model.functions:
        for node in function.node:
            yield node
            for graph in _subgraphs(node):
                yield from graph.node


def _all_tensors(model):
    """Every tensor that could carry external data: initializers (dense and sparse) of every graph and
    tensor-valued attributes (Constant nodes and the like) of every node."""
    for graph in _graphs(model.graph):
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield sparse.values
            yield sparse.indices
    for node in _all_nodes(model):
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
