"""Labelled data for ``edgekd bench --data``: a ``.npz`` of inputs/labels or an ImageFolder directory.

* ``.npz`` — arrays ``inputs`` (or ``x``/``images``) and ``labels`` (or ``y``). For a bundle the inputs are
  raw pixels and go through the bundle's preprocessing contract, exactly like ``Predictor.predict``;
  store ``normalized=True`` in the file when they are already the model's input. For a plain ONNX file
  the inputs must already be the model's input (normalised float32 NCHW).
* ImageFolder — ``DIR/<class>/<image>``; needs Pillow and a bundle (its contract resizes and crops the
  images). Class folders map to the bundle's labels when every folder name is one of them, otherwise to
  their sorted order.

Imports numpy (and Pillow for image folders) only.

Example:
    >>> x, y = load_labelled("digits-test.npz")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgekd.deploy.errors import InputFileError, UsageError

INPUT_KEYS = ("inputs", "x", "images")
LABEL_KEYS = ("labels", "y")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


def load_labelled(path: str | os.PathLike, preprocessing=None, labels=()) -> tuple[np.ndarray, np.ndarray]:
    """Load ``(x, y)``: model-ready inputs and int64 labels.

    Args:
        path: a ``.npz`` file or an ImageFolder directory.
        preprocessing: the bundle's :class:`~edgekd.deploy.runtime.preprocess.ImagePreprocessing` (raw
            pixels are prepared with it); ``None`` for a plain ONNX file (inputs already model-ready).
        labels: the bundle's class labels (ImageFolder folder names are matched against them).
    """
    path = Path(path)
    if path.is_dir():
        if preprocessing is None:
            raise UsageError(f"{path} is an image folder, which needs the input size and preprocessing of a "
                             "bundle", hint="bench the bundle folder, or pass a .npz of model-ready inputs")
        images, y = load_image_folder(path, preprocessing, labels)
        return preprocessing.apply(images), y
    if path.suffix != ".npz":
        raise UsageError(f"--data must be a .npz file or an image folder, got {path}",
                         hint="save arrays with np.savez(path, inputs=x, labels=y)")
    x, y, normalized = load_npz(path)
    if preprocessing is not None and not normalized:
        x = preprocessing.apply(x)
    return np.ascontiguousarray(x), y


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


def load_image_folder(folder: Path, preprocessing, labels=()) -> tuple[np.ndarray, np.ndarray]:
    """Raw pixels ``(N, H, W, C)`` resized and cropped by the contract, and class indices."""
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise InputFileError(f"{folder} has no class subfolders", hint="lay it out as DIR/<class>/<image>")
    names = [str(label) for label in labels or []]
    index = {c: names.index(c) for c in classes} if names and all(c in names for c in classes) else {
        c: i for i, c in enumerate(classes)}
    images, ys = [], []
    for cls in classes:
        for file in sorted((folder / cls).iterdir()):
            if file.suffix.lower() in IMAGE_SUFFIXES:
                images.append(preprocessing.load_image(file))
                ys.append(index[cls])
    if not images:
        raise InputFileError(f"{folder} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return np.stack(images), np.asarray(ys, dtype=np.int64)
