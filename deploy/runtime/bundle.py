"""Load a shipped bundle (``model.onnx`` + ``model.json`` + ``SHA256SUMS``) and predict with it.

Imports numpy and onnxruntime only: this is what runs inside an app or on a Jetson.

Example:
    >>> from deploy.runtime import load_bundle  # doctest: +SKIP
    >>> predictor = load_bundle("runs/digits/bundle")
    >>> labels, probs = predictor.predict(images)   # images: (N, C, H, W) or (N, H, W[, C]) raw pixels
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekd.deploy.errors import ChecksumMismatch, InputFileError, UsageError
from edgekd.deploy.runtime.intake import check_model

SUMS_FILE = "SHA256SUMS"
META_FILE = "model.json"
BUNDLE_FORMAT = 1
#: Files of these kinds inside a bundle must be listed in SHA256SUMS.
GUARDED_SUFFIXES = frozenset({".onnx", ".data", ".bin", ".engine", ".plan", ".json", ".pb"})


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
            raise InputFileError(f"{sums_path}:{n} is not a 'sha256  filename' line: {line!r}")
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise InputFileError(f"{sums_path}:{n} names a file outside the bundle: {name!r}")
        sums[name] = digest
    return sums


def verify_checksums(folder: str | os.PathLike) -> dict[str, str]:
    """Check every file listed in SHA256SUMS, and that no unlisted model or metadata file sits beside them
    (a file dropped into a bundle after it was made is refused, not silently used)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputFileError(f"bundle folder not found: {folder}", hint="pass the folder holding model.json")
    sums = read_sums(folder)
    for name, digest in sums.items():
        path = folder / name
        if not path.is_file():
            raise ChecksumMismatch(f"bundle file listed in {SUMS_FILE} is missing: {path}",
                                   hint="the bundle is incomplete; copy it again")
        actual = _sha256(path)
        if actual != digest:
            raise ChecksumMismatch(
                f"checksum mismatch for {path}: expected {digest[:12]}…, got {actual[:12]}…",
                hint="the file was modified or corrupted in transit; copy the bundle again")
    for required in (META_FILE,):
        if required not in sums:
            raise ChecksumMismatch(f"{SUMS_FILE} does not cover {required}")
    unlisted = sorted(p.name for p in folder.iterdir()
                      if p.is_file() and p.suffix in GUARDED_SUFFIXES and p.name not in sums)
    if unlisted:
        raise ChecksumMismatch(f"{folder} holds file(s) not covered by {SUMS_FILE}: {unlisted}",
                               hint="remove them, or re-create the bundle with `edgekd bundle`")
    return sums


@dataclass
class BundleMeta:
    raw: dict
    folder: Path

    @property
    def model_path(self) -> Path:
        return self.folder / self.raw.get("model", "model.onnx")

    @property
    def input(self) -> dict:
        return self.raw["input"]

    @property
    def labels(self) -> list:
        return self.raw.get("labels") or []

    @property
    def normalization(self) -> dict:
        return self.raw.get("normalization") or {}


def read_meta(folder: str | os.PathLike) -> BundleMeta:
    folder = Path(folder)
    path = folder / META_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputFileError(f"{path} not found: not an edgekd bundle") from None
    except json.JSONDecodeError as exc:
        raise InputFileError(f"{path} is not valid JSON: {exc}") from None
    missing = [k for k in ("model", "input") if k not in raw]
    if missing:
        raise InputFileError(f"{path} lacks required key(s) {missing}")
    return BundleMeta(raw, folder)


def preprocess(images: np.ndarray, meta_input: dict, normalization: dict) -> np.ndarray:
    """Raw pixels → the model's normalised float32 NCHW input.

    ``images`` is one image or a batch, channels first (N, C, H, W) or last (N, H, W, C), or (N, H, W)
    for one channel. ``normalization`` holds ``scale`` (applied first), then per-channel ``mean``/``std``.
    """
    shape = meta_input["shape"]  # [batch, C, H, W]
    c, h, w = shape[1], shape[2], shape[3]
    x = np.asarray(images, dtype=np.float32)
    if x.ndim in (2, 3) and x.shape[-2:] == (h, w) and (x.ndim == 2 or x.shape[0] != c or c != 1):
        x = x.reshape((-1, 1, h, w)) if c == 1 else x[None]
    if x.ndim == 3 and x.shape == (c, h, w):
        x = x[None]
    if x.ndim == 3 and x.shape == (h, w, c):
        x = x[None]
    if x.ndim == 4 and x.shape[1:] == (h, w, c) and x.shape[1:] != (c, h, w):
        x = x.transpose(0, 3, 1, 2)
    if x.ndim != 4 or x.shape[1:] != (c, h, w):
        raise UsageError(f"images have shape {tuple(np.shape(images))}; this model takes "
                         f"(N, {c}, {h}, {w}) or (N, {h}, {w}, {c})",
                         hint="resize the images to the model's input size first")
    x = x * float(normalization.get("scale", 1.0))
    mean = np.asarray(normalization.get("mean", [0.0] * c), dtype=np.float32).reshape(1, c, 1, 1)
    std = np.asarray(normalization.get("std", [1.0] * c), dtype=np.float32).reshape(1, c, 1, 1)
    return np.ascontiguousarray((x - mean) / std, dtype=np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class Predictor:
    """Runs a bundle: ``predict(images) -> (labels, probabilities)``."""

    def __init__(self, meta: BundleMeta, providers=None, threads: int | None = None):
        from edgekd.deploy.runtime.ort import create_session

        self.meta = meta
        self.session, self.session_info = create_session(meta.model_path, providers, threads)
        self.input_name = meta.input.get("name") or self.session.get_inputs()[0].name

    def preprocess(self, images) -> np.ndarray:
        return preprocess(images, self.meta.input, self.meta.normalization)

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Run already-normalised NCHW float32 input."""
        return self.session.run(None, {self.input_name: batch})[0]

    def predict(self, images) -> tuple[list, np.ndarray]:
        probs = softmax(self.logits(self.preprocess(images)).astype(np.float64))
        idx = probs.argmax(axis=1)
        labels = self.meta.labels
        return ([labels[i] if i < len(labels) else int(i) for i in idx], probs.astype(np.float32))


def open_bundle(path: str | os.PathLike, allow_domains: frozenset[str] | set[str] = frozenset()):
    """The one bundle check: checksums (every model file covered), metadata, the ONNX intake check.

    Returns:
        ``(BundleMeta, OnnxInfo)`` — the model's structure, no weights loaded.
    """
    folder = Path(path)
    if folder.is_file() and folder.name == META_FILE:
        folder = folder.parent
    sums = verify_checksums(folder)
    meta = read_meta(folder)
    if meta.raw.get("model") not in sums:
        raise ChecksumMismatch(f"{SUMS_FILE} does not cover the model file {meta.raw.get('model')!r}")
    return meta, check_model(meta.model_path, allow_domains)


def load_bundle(path: str | os.PathLike, providers=None, threads: int | None = None,
                allow_domains: frozenset[str] = frozenset()) -> Predictor:
    """Verify a bundle (:func:`open_bundle`), then return a :class:`Predictor`."""
    meta, _ = open_bundle(path, allow_domains)
    return Predictor(meta, providers, threads)
