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
import zipfile
from pathlib import Path

import numpy as np

from edgekd.deploy.errors import InputFileError, ResourceError, UsageError

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


#: an .npz whose arrays declare more bytes than this (2 GiB: far more than calibration or evaluation needs) is
#: refused before anything is decompressed
MAX_NPZ_BYTES = 2 << 30


def npz_limit() -> int:
    """:data:`MAX_NPZ_BYTES`, or half of the memory available now when that is less (Linux)."""
    try:
        with open("/proc/meminfo") as f:
            avail = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
        return min(MAX_NPZ_BYTES, avail // 2)
    except (OSError, StopIteration, ValueError):
        return MAX_NPZ_BYTES


def npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Each array's shape and dtype, read from the ``.npy`` headers inside the archive (no data decompressed)."""
    out = {}
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with z.open(info) as f:
                    major, _ = np.lib.format.read_magic(f)
                    read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                    shape, _, dtype = read(f)
                out[info.filename[:-4]] = (tuple(shape), dtype)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise InputFileError(f"{path} is not a readable .npz file: {exc}",
                             hint="save it with numpy.savez(path, inputs=x, labels=y)") from None
    return out


def read_npz(path: str | os.PathLike, max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """Every array of an ``.npz``, after checking from its headers that none holds objects (pickles are never
    loaded) and that together they fit in ``max_bytes`` (default :func:`npz_limit`).

    Raises:
        InputFileError: not a readable archive, or an object array. ResourceError: declared size too large.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"data file not found: {path}", hint="check the path")
    headers = npz_headers(path)
    limit = npz_limit() if max_bytes is None else max_bytes
    objects = [k for k, (_, dtype) in headers.items() if dtype.hasobject]
    if objects:
        raise InputFileError(f"{path} holds object arrays {objects} (pickled Python objects are never loaded)",
                             hint="save plain numeric arrays with numpy.savez")
    declared = sum(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize for shape, dtype in headers.values())
    if declared > limit:
        raise ResourceError(f"{path} ({path.stat().st_size:,} bytes on disk) declares {declared / 2**30:.1f} GiB of "
                            f"arrays; refusing to load more than {limit / 2**30:.1f} GiB",
                            hint="pass a smaller sample of the data")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise InputFileError(f"{path} is not a readable .npz file: {exc}") from None


def load_npz(path: Path) -> tuple[np.ndarray, np.ndarray, bool]:
    """``(inputs, labels, normalized)`` from a ``.npz`` (:func:`read_npz`: bounded, never unpickles)."""
    arrays = read_npz(path)
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
