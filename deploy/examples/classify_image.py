#!/usr/bin/env python3
"""Classify an image file with an edgekd bundle — numpy, onnxruntime and Pillow only (no edgekd, no torch).

Copy this file into your app. The bundle folder holds ``model.onnx``, ``model.json`` (input name and shape,
normalization, labels) and ``SHA256SUMS``; every file is checked before the model is loaded.

Usage:
    python classify_image.py BUNDLE_DIR IMAGE [--top 3] [--invert]

Pixels are mapped to [0, 1] (8-bit: /255), then normalised with the bundle's ``mean``/``std`` — the same as
training, whose ``scale`` maps the raw range to [0, 1]. ``--invert`` is for dark-on-light images when the
model was trained on light-on-dark ones (e.g. the default digits recipe).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np


def verify_bundle(folder: Path) -> dict:
    """Check every file against SHA256SUMS and return model.json; exit with one line on any problem."""
    sums = folder / "SHA256SUMS"
    if not sums.is_file():
        sys.exit(f"error: {folder} has no SHA256SUMS: not an edgekd bundle")
    listed = {}
    for line in sums.read_text().splitlines():
        digest, _, name = line.partition("  ")
        if name:
            if Path(name).is_absolute() or ".." in Path(name).parts:
                sys.exit(f"error: SHA256SUMS names a file outside the bundle: {name}")
            listed[name] = digest
    for name, digest in listed.items():
        path = folder / name
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            sys.exit(f"error: {path} is missing or does not match SHA256SUMS; copy the bundle again")
    if "model.json" not in listed:
        sys.exit("error: SHA256SUMS does not cover model.json")
    meta = json.loads((folder / "model.json").read_text())
    if meta.get("model", "model.onnx") not in listed:
        sys.exit("error: SHA256SUMS does not cover the model file")
    return meta


def load_image(path: Path, channels: int, height: int, width: int, invert: bool) -> np.ndarray:
    """Image file → float32 (1, C, H, W) in [0, 1]."""
    from PIL import Image

    try:
        image = Image.open(path)
        image.load()
    except (OSError, ValueError) as exc:
        sys.exit(f"error: cannot read image {path}: {exc}")
    image = image.convert("L" if channels == 1 else "RGB").resize((width, height), Image.Resampling.BOX)
    x = np.asarray(image, dtype=np.float32) / 255.0
    x = 1.0 - x if invert else x
    x = x[None, None] if channels == 1 else x.transpose(2, 0, 1)[None]
    return np.ascontiguousarray(x)


def normalise(x01: np.ndarray, normalization: dict) -> np.ndarray:
    channels = x01.shape[1]
    mean = np.asarray(normalization.get("mean", [0.0] * channels), np.float32).reshape(1, channels, 1, 1)
    std = np.asarray(normalization.get("std", [1.0] * channels), np.float32).reshape(1, channels, 1, 1)
    return ((x01 - mean) / std).astype(np.float32)


def classify(folder: Path, image: Path, top: int = 3, invert: bool = False) -> list[tuple[str, float]]:
    """The ``top`` (label, probability) pairs for ``image``."""
    import onnxruntime as ort

    meta = verify_bundle(folder)
    spec = meta["input"]
    _, channels, height, width = spec["shape"]
    x = normalise(load_image(image, channels, height, width, invert), meta.get("normalization") or {})
    session = ort.InferenceSession(str(folder / meta.get("model", "model.onnx")),
                                   providers=["CPUExecutionProvider"])
    logits = session.run(None, {spec.get("name") or session.get_inputs()[0].name: x})[0][0].astype(np.float64)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    labels = meta.get("labels") or [str(i) for i in range(len(probs))]
    order = np.argsort(-probs)[:top]
    return [(str(labels[i]), float(probs[i])) for i in order]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Classify an image file with an edgekd bundle.")
    parser.add_argument("bundle", type=Path, help="bundle folder (model.onnx, model.json, SHA256SUMS)")
    parser.add_argument("image", type=Path, help="image file (PNG, JPEG, ...)")
    parser.add_argument("--top", type=int, default=3, help="how many classes to print (default: 3)")
    parser.add_argument("--invert", action="store_true", help="invert pixels (dark-on-light input)")
    args = parser.parse_args(argv)
    for label, prob in classify(args.bundle, args.image, args.top, args.invert):
        print(f"{label}\t{prob:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
