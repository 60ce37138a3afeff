"""Write a self-describing bundle (``model.onnx``, ``model.json``, optional tokenizer / engine + sidecar,
``SHA256SUMS``) and verify one (``edgekd verify``).

Writing is all-or-nothing and never destroys what edgekd did not make:

* the destination must be missing, empty, or an edgekd bundle (``model.json`` + ``SHA256SUMS``); any other
  folder is refused, as is a destination inside the source run folder or equal to it;
* the bundle is assembled in a staging folder beside the destination and swapped in atomically (Linux
  ``renameat2(RENAME_EXCHANGE)``; elsewhere two renames, recovered on the next write if a crash falls between
  them), so a SIGKILL at any instant leaves the old bundle or the new one;
* leftovers of a crashed write are removed (or a parked bundle put back) on the next write — only folders that
  carry edgekd's mark file (``.edgekd-staging``): a user's look-alike ``.<out>.x.old`` / ``.x.staging`` folder is
  never touched. A folder keeps the mark until it is gone (the mark is removed last).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import errno
import functools
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from edgekd.deploy.errors import InputFileError, UsageError, VerificationError
from edgekd.deploy.fileio import atomic_write_via, current_umask, sha256_file, write_text
from edgekd.deploy.runtime.bundle import (
    META_FILE,
    SUMS_FILE,
    Bundle,
    BundleManifest,
    Predictor,
    open_bundle,
    read_manifest,
)
from edgekd.deploy.runtime.intake import check_model
from edgekd.deploy.typed import to_json

STAGING_MARK = ".edgekd-staging"
#: a test input larger than this (per sample) is refused before anything is allocated
MAX_SAMPLE_BYTES = 256 << 20


def write_bundle(out_dir: str | os.PathLike, model_path: str | os.PathLike, manifest: BundleManifest,
                 extra_files: dict[str, str | os.PathLike] | None = None, *,
                 protect: str | os.PathLike | None = None) -> Path:
    """Copy ``model_path`` (as ``manifest.model``), the external-data files it references (same relative
    names) and ``extra_files`` (bundle name → source file) into ``out_dir`` with ``model.json`` and
    ``SHA256SUMS`` covering every file, atomically.

    Args:
        protect: a folder the bundle must not be written into or over (the run it comes from).

    Raises:
        UsageError: ``out_dir`` is a file, a folder that is not an edgekd bundle, or inside ``protect``.
    """
    out_dir, model_path = Path(out_dir), Path(model_path)
    check_destination(out_dir, protect)
    info = check_model(model_path)  # external data stays inside the model's folder: copy it along, same names
    extra = {t.external: model_path.parent / t.external for t in info.tensors if t.external}
    extra.update({name: Path(src) for name, src in (extra_files or {}).items()})
    manifest = _with_tokenizer(manifest, extra)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    recover(out_dir)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".staging", dir=out_dir.parent))
    try:
        (staging / STAGING_MARK).touch()
        _copy_synced(model_path, staging / manifest.model)
        for name, src in extra.items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            _copy_synced(src, staging / name)
        atomic_write_via(staging / META_FILE, lambda tmp: tmp.write_text(_json(manifest)))
        names = sorted([manifest.model, META_FILE, *extra])
        write_text(staging / SUMS_FILE, "".join(f"{sha256_file(staging / n)}  {n}\n" for n in names))
        os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp makes it 0700
        _fsync_dir(staging)
        _renameat2()  # slow the first time: not between the mark's removal and the swap
        (staging / STAGING_MARK).unlink()  # the mark goes only now: a crash leaves marked leftovers, bar a µs
        _swap_in(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # made by this call (mkdtemp): ours, marked or not
        raise
    return out_dir


def _with_tokenizer(manifest: BundleManifest, extra: dict[str, Path]) -> BundleManifest:
    """A text bundle must carry its tokenizer (``extra_files={"tokenizer.json": path}``), a readable
    ``tokenizers`` file; ``model.json`` then names it in ``files`` (so :func:`open_bundle` requires it)."""
    name = getattr(manifest.preprocessing, "tokenizer", None)
    if name is None:
        return manifest
    if name not in extra:
        raise UsageError(f"a text bundle needs its tokenizer: pass extra_files={{{name!r}: path}}",
                         hint="the tokenizer JSON the model was trained with (tokenizer.save(path))")
    src = extra[name]
    if not src.is_file():
        raise InputFileError(f"tokenizer file not found: {src}", hint="pass the tokenizer JSON used in training")
    from edgekd.deploy.runtime.text import tokenizers_module

    try:
        tokenizers_module().Tokenizer.from_file(str(src))
    except Exception as exc:  # tokenizers raises a bare Exception for a bad file
        raise InputFileError(f"{src} is not a tokenizers JSON file: {str(exc).splitlines()[0][:200]}",
                             hint="save it with tokenizer.save(path) (Hugging Face tokenizers)") from None
    return dataclasses.replace(manifest, files={**manifest.files, "tokenizer": name})


def manifest_for(model_path: str | os.PathLike, preprocessing, labels, *, precision: str | None = None,
                 task: str | None = None, **fields) -> BundleManifest:
    """``model.json`` for the ONNX file at ``model_path``: inputs/outputs read from the file, the task from the
    preprocessing kind (``image-classification`` / ``text-classification``); ``fields`` (``artifact``,
    ``role``, ``metrics``, ``producer``…) go to :class:`BundleManifest` as they are.

    Example:
        >>> m = manifest_for("student.onnx", TextPreprocessing(max_length=128), ["neg", "pos"])  # doctest: +SKIP
        >>> write_bundle("bundle", "student.onnx", m, extra_files={"tokenizer.json": "tokenizer.json"})  # doctest: +SKIP
    """
    from edgekd.deploy.runtime.runner import TensorSpec

    info = check_model(model_path)
    specs = tuple(TensorSpec(v.name, v.elem_type, v.dims) for v in info.graph_inputs)
    outs = tuple(TensorSpec(v.name, v.elem_type, v.dims) for v in info.outputs)
    task = task or f"{preprocessing.kind}-classification"
    return BundleManifest(task, specs, outs, preprocessing, tuple(str(label) for label in labels),
                          precision or info.precision, **fields)


def _json(manifest: BundleManifest) -> str:
    import json

    return json.dumps(to_json(manifest), indent=2) + "\n"


def is_bundle(folder: Path) -> bool:
    """An edgekd bundle: ``model.json`` (parseable) and ``SHA256SUMS`` — what edgekd may replace."""
    if not (folder / SUMS_FILE).is_file() or not (folder / META_FILE).is_file():
        return False
    try:
        read_manifest(folder)
    except InputFileError:
        return False
    return True


def check_destination(out_dir: Path, protect: str | os.PathLike | None = None) -> None:
    """Refuse to write a bundle where it would replace or mix with something edgekd did not make."""
    if out_dir.is_symlink() or out_dir.is_file():
        raise UsageError(f"--out {out_dir} is a file or a link, not a bundle folder",
                         hint="choose a new folder name for the bundle")
    if protect is not None:
        run, target = Path(protect).resolve(), out_dir.resolve()
        if target == run or run in target.parents:
            raise UsageError(f"--out {out_dir} is inside the run folder {protect}",
                             hint="write the bundle to a folder outside the run (the run has its own bundle/)")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not is_bundle(out_dir):
        raise UsageError(f"--out {out_dir} already holds files that are not an edgekd bundle; refusing to "
                         "replace them", hint="choose a new or empty folder (edgekd only replaces its own bundles)")


def recover(out_dir: Path) -> None:
    """Finish or undo a write that crashed: restore a bundle parked by the two-rename swap, and remove
    staging folders edgekd left behind. Only folders carrying edgekd's mark are touched."""
    parked = [p for p in sorted(out_dir.parent.glob(f".{out_dir.name}.*.old")) if _marked(p) and is_bundle(p)]
    if parked and not out_dir.exists():
        (parked[-1] / STAGING_MARK).unlink()  # a crash after this leaves the bundle parked, never a marked bundle
        os.replace(parked[-1], out_dir)
        parked = parked[:-1]
    for path in parked:
        _remove_marked(path)
    for path in out_dir.parent.glob(f".{out_dir.name}.*.staging"):
        if _marked(path):
            _remove_marked(path)


def _marked(folder: Path) -> bool:
    """A folder edgekd made for a write (it holds the mark file), not a user's look-alike."""
    return folder.is_dir() and not folder.is_symlink() and (folder / STAGING_MARK).is_file()


def _mark(folder: Path) -> None:
    (folder / STAGING_MARK).touch()


def _remove_marked(folder: Path) -> None:
    """Remove a folder of edgekd's, its mark last: a crash halfway leaves a folder that is still marked."""
    for child in folder.iterdir():
        if child.name == STAGING_MARK:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
    (folder / STAGING_MARK).unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        pass


def _copy_synced(src: Path, dst: Path) -> None:
    """Copy with the data flushed to disk (a bundle must survive a power cut after the swap)."""
    atomic_write_via(dst, lambda tmp: shutil.copyfile(src, tmp))


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@functools.cache
def _renameat2():
    """libc's renameat2, or None. Looked up once (find_library runs ldconfig: slow), before a write's mark goes."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return None
    return getattr(ctypes.CDLL(libc_name, use_errno=True), "renameat2", None)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    fn = _renameat2()
    if fn is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _swap_in(staging: Path, out_dir: Path) -> None:
    """Put ``staging`` at ``out_dir``; the old bundle (if any) is removed only once the new one is there."""
    if not out_dir.exists():
        os.replace(staging, out_dir)
    elif _exchange(staging, out_dir):
        _mark(staging)  # now the old bundle, no longer live: marked, so a crash while removing it is cleaned up
        _remove_marked(staging)
    else:
        parked = staging.with_name(staging.name.removesuffix(".staging") + ".old")
        os.replace(out_dir, parked)
        _mark(parked)  # a crash from here on leaves a marked `parked`: recover() puts it back
        os.replace(staging, out_dir)
        _remove_marked(parked)
    _fsync_dir(out_dir)  # the mark's removal is on disk too
    _fsync_dir(out_dir.parent)


# --------------------------------------------------------------------------------------------- verify
def verify_bundle(folder: str | os.PathLike, providers=None, allow_domains=frozenset()) -> list[str]:
    """``edgekd verify``: run every check; return one ✓ line per check, raise on the first failure.

    Checksums (every file listed, nothing else, no links) → the manifest against the graph (input and output
    names, dtypes, shapes, label count) → ``onnx.checker`` (external data resolved next to the model) → the
    real preprocessing on a synthetic input → one inference with finite outputs.
    """
    bundle = open_bundle(folder, allow_domains)
    lines = [f"checksums: every file matches SHA256SUMS, nothing unlisted ({bundle.folder})"]
    lines.append(check_manifest_against_graph(bundle))
    lines.append(_onnx_checker(bundle))
    feed = _synthetic_feed(bundle)
    with Predictor(bundle, providers) as predictor:
        logits = predictor.logits(feed)
        active = predictor.runner.info().providers[0]
    n = len(next(iter(feed.values())))
    lines.append(f"inference: the preprocessing of a synthetic input, then a batch of {n} → outputs "
                 f"{tuple(logits.shape)}, finite, on {active}")
    return lines


def check_manifest_against_graph(bundle: Bundle) -> str:
    """``model.json``'s inputs/outputs must be the graph's, with matching dtypes and fixed dims."""
    m, graph = bundle.manifest, bundle.onnx
    for kind, declared, actual in (("input", m.inputs, graph.graph_inputs), ("output", m.outputs, graph.outputs)):
        if [s.name for s in declared] != [v.name for v in actual]:
            raise VerificationError(f"model.json {kind}s {[s.name for s in declared]} are not the model's "
                                    f"{[v.name for v in actual]}", hint="re-create the bundle with `edgekd bundle`")
        for spec, value in zip(declared, actual, strict=True):
            fixed = [(a, b) for a, b in zip(spec.shape, value.dims, strict=False)
                     if isinstance(a, int) and isinstance(b, int) and a != b]
            if spec.dtype != value.elem_type or len(spec.shape) != len(value.dims) or fixed:
                raise VerificationError(f"model.json {kind} '{spec.name}' is {spec.dtype} {list(spec.shape)}, the "
                                        f"model's is {value.elem_type} {list(value.dims)}",
                                        hint="re-create the bundle with `edgekd bundle`")
    _check_text_inputs(m)
    classes = graph.outputs[0].dims[-1] if graph.outputs and graph.outputs[0].dims else None
    if isinstance(classes, int) and m.labels and classes != len(m.labels):
        raise VerificationError(f"model.json has {len(m.labels)} labels, the model outputs {classes} classes")
    return (f"manifest: inputs {[s.name for s in m.inputs]} and outputs {[s.name for s in m.outputs]} match the "
            f"graph; {len(m.labels)} labels; preprocessing {m.preprocessing.kind}")


def _check_text_inputs(m: BundleManifest) -> None:
    """A text model takes int64 ``(batch, sequence)`` inputs named by the contract; a fixed sequence axis must be
    the contract's ``max_length`` with ``padding: max_length`` (a batch padded to its longest text would not fit)."""
    pre = m.preprocessing
    if getattr(pre, "kind", None) != "text":
        return
    hint = "re-export with int64 (batch, sequence) inputs, or re-create the bundle with `edgekd bundle`"
    if [s.name for s in m.inputs] != list(pre.input_names):
        raise VerificationError(f"the text preprocessing makes {list(pre.input_names)}, the model takes "
                                f"{[s.name for s in m.inputs]}", hint=hint)
    for spec in m.inputs:
        if spec.dtype != "int64" or len(spec.shape) != 2:
            raise VerificationError(f"text input '{spec.name}' is {spec.dtype} {list(spec.shape)}; the text "
                                    "preprocessing feeds int64 (batch, sequence)", hint=hint)
        seq = spec.shape[1]
        if isinstance(seq, int) and (seq != pre.max_length or pre.padding != "max_length"):
            raise VerificationError(f"text input '{spec.name}' has a fixed sequence length {seq}, but the "
                                    f"preprocessing pads to {pre.padding} (max_length {pre.max_length})",
                                    hint="export with a dynamic sequence axis")


def _onnx_checker(bundle: Bundle) -> str:
    import onnx

    try:
        # a path (not a loaded proto): the checker resolves external data next to the model, not in the cwd
        onnx.checker.check_model(str(bundle.model_path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise VerificationError(f"{bundle.model_path} fails onnx.checker: {str(exc).splitlines()[0]}") from None
    return (f"model: {bundle.model_path.name} passes the intake check and onnx.checker "
            f"(opset {bundle.onnx.opset('') or '?'})")


def _synthetic_feed(bundle: Bundle, n: int = 2) -> dict[str, np.ndarray]:
    """The real preprocessing, run once on synthetic raw input (mid-range pixels, or short texts)."""
    pre = bundle.manifest.preprocessing
    return pre.feed(pre.synthetic(n, MAX_SAMPLE_BYTES), [s.name for s in bundle.manifest.inputs], bundle.folder)
