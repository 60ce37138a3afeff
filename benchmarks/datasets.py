"""Labelled data for ``edgekd bench --data``: a ``.npz`` of inputs/labels or an ImageFolder directory.

* ``.npz`` — arrays ``inputs`` (or ``x``/``images``) and ``labels`` (or ``y``). For a bundle the inputs are
  raw pixels and go through the bundle's ``model.json`` normalization, exactly like ``Predictor.predict``;
  store ``normalized=True`` in the file when they are already the model's input. For a plain ONNX file
  the inputs must already be the model's input (normalised float32 NCHW).
* ImageFolder — ``DIR/<class>/<image>``; needs Pillow and a bundle (for the input size and the
  normalization). Class folders map to the bundle's labels when every folder name is one of them,
  otherwise to their sorted order.

Imports numpy (and Pillow for image folders) only.

Example:
    >>> x, y = load_labelled("digits-test.npz", meta_input=None, normalization=None)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgekd.deploy.errors import DependencyError, InputFileError, UsageError
from edgekd.deploy.runtime.bundle import preprocess

INPUT_KEYS = ("inputs", "x", "images")
LABEL_KEYS = ("labels", "y")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


def load_labelled(path: str | os.PathLike, meta_input: dict | None = None, normalization: dict | None = None,
                  labels: list | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load ``(x, y)``: model-ready float32 inputs and int64 labels.

    Args:
        path: a ``.npz`` file or an ImageFolder directory.
        meta_input: the bundle's ``model.json`` ``input`` (shape ``[N, C, H, W]``); ``None`` for a plain ONNX.
        normalization: the bundle's normalization (``scale``, ``mean``, ``std``).
        labels: the bundle's class labels (ImageFolder folder names are matched against them).
    """
    path = Path(path)
    if path.is_dir():
        if meta_input is None:
            raise UsageError(f"{path} is an image folder, which needs the input size and normalization of a "
                             "bundle", hint="bench the bundle folder, or pass a .npz of model-ready inputs")
        images, y = load_image_folder(path, meta_input, labels)
        return preprocess(images, meta_input, normalization or {}), y
    if path.suffix != ".npz":
        raise UsageError(f"--data must be a .npz file or an image folder, got {path}",
                         hint="save arrays with np.savez(path, inputs=x, labels=y)")
    x, y, normalized = load_npz(path)
    if meta_input is not None and not normalized:
        x = preprocess(x, meta_input, normalization or {})
    return np.ascontiguousarray(x, dtype=np.float32), y


def load_npz(path: Path) -> tuple[np.ndarray, np.ndarray, bool]:
    """``(inputs, labels, normalized)`` from a ``.npz`` (never unpickles objects)."""
    if not path.is_file():
        raise InputFileError(f"data file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as exc:
        raise InputFileError(f"{path} is not a readable .npz file: {exc}") from None
    x = next((arrays[k] for k in INPUT_KEYS if k in arrays), None)
    y = next((arrays[k] for k in LABEL_KEYS if k in arrays), None)
    if x is None or y is None:
        raise InputFileError(f"{path} holds {sorted(arrays)}; expected 'inputs' and 'labels'",
                             hint="save it with np.savez(path, inputs=x, labels=y)")
    if len(x) != len(y) or len(x) == 0:
        raise InputFileError(f"{path}: {len(x)} inputs but {len(y)} labels")
    return x, np.asarray(y).astype(np.int64).reshape(-1), bool(arrays.get("normalized", False))


def load_image_folder(folder: Path, meta_input: dict, labels: list | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Raw pixels ``(N, H, W[, C])`` resized to the model's input, and class indices."""
    try:
        from PIL import Image as image_mod
    except ImportError:
        raise DependencyError("reading an image folder needs Pillow, which is not installed",
                              hint="pip install pillow, or pass a .npz of inputs/labels") from None
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise InputFileError(f"{folder} has no class subfolders", hint="lay it out as DIR/<class>/<image>")
    names = [str(label) for label in labels or []]
    index = {c: names.index(c) for c in classes} if names and all(c in names for c in classes) else {
        c: i for i, c in enumerate(classes)}
    _, c, h, w = meta_input["shape"]
    mode = "L" if c == 1 else "RGB"
    images, ys = [], []
    for cls in classes:
        for file in sorted((folder / cls).iterdir()):
            if file.suffix.lower() in IMAGE_SUFFIXES:
                with image_mod.open(file) as img:
                    images.append(np.asarray(img.convert(mode).resize((w, h)), dtype=np.float32))
                ys.append(index[cls])
    if not images:
        raise InputFileError(f"{folder} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return np.stack(images), np.asarray(ys, dtype=np.int64)
