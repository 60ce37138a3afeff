#!/usr/bin/env python3
"""Classify an image file with an edgekd bundle — numpy, onnxruntime and Pillow (no torch, no onnx).

Copy this file into your app. The bundle folder holds ``model.onnx``, ``model.json`` (inputs, labels and the
preprocessing contract: pixel range, resize/crop policy, channel order, normalisation) and ``SHA256SUMS``;
``load_bundle`` checks every file before the model is loaded, and the contract prepares the image exactly as
the model was trained — nothing to re-implement by hand.

Usage:
    python classify_image.py BUNDLE_DIR IMAGE [--top 3] [--invert]

``--invert`` is for dark-on-light images when the model was trained on light-on-dark ones (e.g. the default
digits recipe).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from edgekd.deploy.errors import EdgekdError
from edgekd.deploy.runtime import load_bundle


def classify(folder: Path, image: Path, top: int = 3, invert: bool = False) -> list[tuple[str, float]]:
    """The ``top`` (label, probability) pairs for ``image``."""
    with load_bundle(folder) as predictor:
        contract = predictor.manifest.preprocessing
        pixels = contract.load_image(image)  # decoded, resized, cropped, in the model's pixel range
        if invert:
            pixels = contract.pixel_max - pixels
        _, probs = predictor.predict(pixels[None])
    order = np.argsort(-probs[0])[:top]
    return [(predictor.labels[i], float(probs[0, i])) for i in order]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Classify an image file with an edgekd bundle.")
    parser.add_argument("bundle", type=Path, help="bundle folder (model.onnx, model.json, SHA256SUMS)")
    parser.add_argument("image", type=Path, help="image file (PNG, JPEG, ...)")
    parser.add_argument("--top", type=int, default=3, help="how many classes to print (default: 3)")
    parser.add_argument("--invert", action="store_true", help="invert pixels (dark-on-light input)")
    args = parser.parse_args(argv)
    try:
        results = classify(args.bundle, args.image, args.top, args.invert)
    except EdgekdError as exc:  # one line, not a traceback
        print(f"error: {exc.message}" + (f"\nhint: {exc.hint}" if exc.hint else ""), file=sys.stderr)
        return 1
    for label, prob in results:
        print(f"{label}\t{prob:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
