#!/usr/bin/env python3
"""Classify texts with an edgekd text bundle — numpy, onnxruntime and tokenizers only (not even edgekd).

Copy this file into your app: ``pip install onnxruntime tokenizers numpy``. The bundle folder holds
``model.onnx``, ``model.json`` (inputs, labels and the text preprocessing contract: tokenizer file, max_length,
pad id, padding), ``tokenizer.json`` and ``SHA256SUMS``. Every file is checked against ``SHA256SUMS`` before
anything is loaded; texts are tokenized with the bundle's own tokenizer, truncated to ``max_length`` tokens and
padded on the right to the batch's longest text, exactly as ``edgekd.load_bundle(...).predict`` does.

Usage:
    python classify_text.py BUNDLE_DIR "runs small, lovely fabric" "the seams split" [--top 2]
    cat reviews.txt | python classify_text.py BUNDLE_DIR -          # one text per line from stdin

Prints, per text, ``label<TAB>probability`` for the ``--top`` classes (best first), then the text.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np


class BundleError(Exception):
    """The bundle is incomplete, modified or not a text bundle."""


def check_sums(folder: Path) -> None:
    """Every file listed in SHA256SUMS matches, and no other file sits in the bundle."""
    sums_path = folder / "SHA256SUMS"
    if not sums_path.is_file():
        raise BundleError(f"{folder} has no SHA256SUMS: not an edgekd bundle")
    listed = {}
    for line in sums_path.read_text().splitlines():
        digest, _, name = line.partition("  ")
        if line.strip():
            listed[name] = digest
    for name, digest in listed.items():
        path = folder / name
        if ".." in Path(name).parts or not path.is_file():
            raise BundleError(f"bundle file listed in SHA256SUMS is missing: {path}")
        if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            raise BundleError(f"checksum mismatch for {path}: the file was modified or corrupted")
    extra = [p.name for p in folder.rglob("*") if p.is_file() and p.name != "SHA256SUMS"
             and p.relative_to(folder).as_posix() not in listed]
    if extra:
        raise BundleError(f"{folder} holds file(s) not covered by SHA256SUMS: {extra[:5]}")


class TextClassifier:
    """A text bundle loaded for inference: ``predict(texts) -> (labels, probabilities)``."""

    def __init__(self, folder: str | Path, threads: int | None = None):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        folder = Path(folder)
        check_sums(folder)
        self.manifest = json.loads((folder / "model.json").read_text())
        self.pre = self.manifest["preprocessing"]
        if self.pre.get("kind") != "text":
            raise BundleError(f"{folder} is not a text bundle (preprocessing kind {self.pre.get('kind')!r})")
        self.tokenizer = Tokenizer.from_file(str(folder / self.pre["tokenizer"]))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.pre["max_length"])
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(folder / self.manifest["model"]), opts,
                                            providers=["CPUExecutionProvider"])
        self.input_names = [spec["name"] for spec in self.manifest["inputs"]]
        self.labels = self.manifest["labels"]

    def encode(self, texts: list[str]) -> dict[str, np.ndarray]:
        """int64 input_ids / attention_mask, right-padded with pad_id to the longest text (or max_length)."""
        encodings = self.tokenizer.encode_batch(texts)
        longest = max(len(e.ids) for e in encodings)
        width = self.pre["max_length"] if self.pre.get("padding") == "max_length" else max(longest, 1)
        ids = np.full((len(texts), width), self.pre.get("pad_id", 0), dtype=np.int64)
        mask = np.zeros((len(texts), width), dtype=np.int64)
        for row, enc in enumerate(encodings):
            ids[row, :len(enc.ids)], mask[row, :len(enc.ids)] = enc.ids, 1
        return dict(zip(self.input_names, (ids, mask)[:len(self.input_names)], strict=True))

    def predict(self, texts: list[str]) -> tuple[list[str], np.ndarray]:
        if not texts or not all(isinstance(t, str) for t in texts):
            raise ValueError("pass a non-empty list of strings")
        logits = self.session.run(None, self.encode(texts))[0].astype(np.float64)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        return [self.labels[i] for i in probs.argmax(axis=1)], probs.astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Classify texts with an edgekd text bundle.")
    parser.add_argument("bundle", type=Path, help="bundle folder (model.onnx, model.json, tokenizer.json, SHA256SUMS)")
    parser.add_argument("texts", nargs="+", help="texts to classify, or - to read one text per line from stdin")
    parser.add_argument("--top", type=int, default=1, help="how many classes to print per text (default: 1)")
    args = parser.parse_args(argv)
    texts = [line.rstrip("\n") for line in sys.stdin if line.strip()] if args.texts == ["-"] else args.texts
    try:
        classifier = TextClassifier(args.bundle)
        _, probs = classifier.predict(texts)
    except (BundleError, ValueError, OSError, KeyError) as exc:  # one line, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - tokenizers/onnxruntime raise their own types for a bad file
        print(f"error: cannot load {args.bundle}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
              file=sys.stderr)
        return 1
    for text, row in zip(texts, probs, strict=True):
        best = np.argsort(-row)[:max(args.top, 1)]
        print("\t".join(f"{classifier.labels[i]}\t{row[i]:.4f}" for i in best) + f"\t{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
