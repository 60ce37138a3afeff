"""Load a shipped bundle (``model.onnx`` + ``model.json`` + ``SHA256SUMS``) and predict with it.

Imports numpy and onnxruntime only (the intake check reads the ONNX file without the ``onnx`` package): this
is what runs inside an app or on a Jetson. Every file is checked against ``SHA256SUMS`` first; a file that is
not listed, or a symlink, is refused.

Example:
    >>> from edgekd.deploy.runtime import load_bundle  # doctest: +SKIP
    >>> predictor = load_bundle("runs/digits/bundle")
    >>> labels, probs = predictor.predict(images)   # raw pixels, as model.json's preprocessing says
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edgekd.deploy.errors import ChecksumMismatch, InputFileError, VerificationError
from edgekd.deploy.runtime.intake import check_model
from edgekd.deploy.runtime.onnxinfo import OnnxInfo
from edgekd.deploy.runtime.preprocess import ImagePreprocessing
from edgekd.deploy.runtime.runner import TensorSpec
from edgekd.deploy.runtime.text import TextPreprocessing
from edgekd.deploy.typed import from_json

SUMS_FILE = "SHA256SUMS"
META_FILE = "model.json"
BUNDLE_FORMAT = 2


@dataclass(frozen=True)
class BundleManifest:
    """``model.json``: what the bundle holds and how to feed it. Parsed strictly (unknown keys refused)."""

    task: Literal["image-classification", "text-classification"]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    preprocessing: ImagePreprocessing | TextPreprocessing
    labels: tuple[str, ...]
    precision: str
    bundle_format: int = BUNDLE_FORMAT
    model: str = "model.onnx"
    artifact: str | None = None
    role: str | None = "student"
    variant: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    producer: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.bundle_format != BUNDLE_FORMAT:
            raise ValueError(f"bundle_format {self.bundle_format} is not {BUNDLE_FORMAT} (re-create the bundle "
                             "with this edgekd)")
        if not self.inputs or not self.outputs:
            raise ValueError("inputs and outputs must not be empty")
        if len(self.outputs[0].shape) == 2 and isinstance(self.outputs[0].shape[1], int) and self.labels and \
                self.outputs[0].shape[1] != len(self.labels):
            raise ValueError(f"{len(self.labels)} labels for {self.outputs[0].shape[1]} output classes")

    def dynamic_sizes(self) -> dict[str, int]:
        """Sizes of dynamic input axes other than the batch (e.g. the sequence length of a text model)."""
        return dict(getattr(self.preprocessing, "axis_sizes", lambda: {})())


@dataclass(frozen=True)
class Bundle:
    """A checked bundle: its folder, manifest and the model's structure."""

    folder: Path
    manifest: BundleManifest
    onnx: OnnxInfo

    @property
    def model_path(self) -> Path:
        return self.folder / self.manifest.model


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def read_sums(folder: Path) -> dict[str, str]:
    sums_path = folder / SUMS_FILE
    if not sums_path.is_file():
        raise InputFileError(f"{folder} has no {SUMS_FILE}: not an edgekd bundle, or an incomplete one",
                             hint="re-create it with `edgekd bundle` or `edgekd run`")
    sums = {}
    for n, line in enumerate(sums_path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or not name:
            raise InputFileError(f"{sums_path}:{n} is not a 'sha256  filename' line: {line[:120]!r}")
        if Path(name).is_absolute() or ".." in Path(name).parts or "\\" in name:
            raise InputFileError(f"{sums_path}:{n} names a file outside the bundle: {name[:120]!r}")
        sums[name] = digest
    return sums


def bundle_files(folder: Path) -> list[str]:
    """Every file under ``folder`` (relative, POSIX), subfolders included; symlinks and anything that is not a
    plain file or folder (a FIFO, a socket, a device) are refused."""
    out = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink():
            raise ChecksumMismatch(f"{folder} holds a symlink, {rel}: bundles hold plain files only",
                                   hint="copy the bundle again without links (cp -rL, or edgekd bundle)")
        if path.is_file():
            out.append(rel)
        elif not path.is_dir():
            raise ChecksumMismatch(f"{folder} holds {rel}, which is not a plain file (a pipe, socket or device): "
                                   "bundles hold plain files only", hint="remove it, or copy the bundle again")
    return out


def verify_checksums(folder: str | os.PathLike) -> dict[str, str]:
    """Check every file against SHA256SUMS: each listed file matches, and no other file (in any subfolder)
    and no symlink sits in the bundle — a file dropped in after the bundle was made is refused, not used."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputFileError(f"bundle folder not found: {folder}", hint="pass the folder holding model.json")
    sums = read_sums(folder)
    present = bundle_files(folder)
    for name, digest in sums.items():
        path = folder / name
        if name not in present:
            raise ChecksumMismatch(f"bundle file listed in {SUMS_FILE} is missing: {path}",
                                   hint="the bundle is incomplete; copy it again")
        if _sha256(path) != digest:
            raise ChecksumMismatch(f"checksum mismatch for {path}: the file was modified or corrupted",
                                   hint="copy the bundle again (or re-create it with `edgekd bundle`)")
    if META_FILE not in sums:
        raise ChecksumMismatch(f"{SUMS_FILE} does not cover {META_FILE}")
    unlisted = [n for n in present if n not in sums and n != SUMS_FILE]
    if unlisted:
        raise ChecksumMismatch(f"{folder} holds file(s) not covered by {SUMS_FILE}: {unlisted[:5]}",
                               hint="remove them, or re-create the bundle with `edgekd bundle`")
    return sums


def read_manifest(folder: str | os.PathLike) -> BundleManifest:
    path = Path(folder) / META_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputFileError(f"{path} not found: not an edgekd bundle") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputFileError(f"{path} is not valid JSON: {exc}") from None
    return from_json(BundleManifest, raw, str(path), hint="re-create the bundle with `edgekd bundle`")


def open_bundle(path: str | os.PathLike, allow_domains: frozenset[str] | set[str] = frozenset()) -> Bundle:
    """The one bundle check: checksums (every file covered, no links), the manifest, every file it names
    covered, and the ONNX intake check (external data inside the folder, standard operator domains)."""
    folder = Path(path)
    if folder.is_file() and folder.name == META_FILE:
        folder = folder.parent
    sums = verify_checksums(folder)
    manifest = read_manifest(folder)
    for name in [manifest.model, *manifest.files.values()]:
        if name not in sums:
            raise ChecksumMismatch(f"{SUMS_FILE} does not cover the file {name!r} that {META_FILE} names")
    return Bundle(folder, manifest, check_model(folder / manifest.model, allow_domains))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class Predictor:
    """Runs a bundle: ``predict(inputs) -> (labels, probabilities)``; ``close()`` (or ``with``) frees it."""

    def __init__(self, bundle: Bundle, providers=None, threads: int | None = None):
        from edgekd.deploy.runtime.ort import OnnxrtRunner

        self.bundle, self.manifest = bundle, bundle.manifest
        self.runner = OnnxrtRunner(bundle.model_path, providers, threads).__enter__()
        self.input_name = self.runner.inputs()[0].name

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.runner.__exit__(None, None, None)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.manifest.labels

    def preprocess(self, inputs) -> dict[str, np.ndarray]:
        """Raw inputs → the model's feed, by the bundle's preprocessing contract."""
        return self.manifest.preprocessing.feed(inputs, [s.name for s in self.manifest.inputs], self.bundle.folder)

    def logits(self, feed: dict[str, np.ndarray] | np.ndarray) -> np.ndarray:
        """Run a prepared feed (or one prepared array); non-finite outputs are an error, never an answer."""
        feed = feed if isinstance(feed, dict) else {self.input_name: feed}
        out = next(iter(self.runner.infer(feed).values()))
        if not np.isfinite(out).all():
            raise VerificationError("the model produced NaN/inf outputs for these inputs: no prediction",
                                    hint="check the inputs against model.json's preprocessing")
        return out

    def predict(self, inputs) -> tuple[list[str], np.ndarray]:
        probs = softmax(self.logits(self.preprocess(inputs)).astype(np.float64))
        idx = probs.argmax(axis=1)
        labels = self.labels
        return ([labels[i] if i < len(labels) else str(int(i)) for i in idx], probs.astype(np.float32))


def load_bundle(path: str | os.PathLike, providers=None, threads: int | None = None,
                allow_domains: frozenset[str] = frozenset()) -> Predictor:
    """Verify a bundle (:func:`open_bundle`), then return a :class:`Predictor`."""
    return Predictor(open_bundle(path, allow_domains), providers, threads)
