"""The text preprocessing contract: strings → ``(input_ids, attention_mask)`` with the bundle's own tokenizer.

One definition shared by training (texts tokenized once to ``max_length``), the ONNX ``metadata_props``, a
bundle's ``model.json``, ``load_bundle(...).predict(["some text", ...])`` and ``deploy/examples/classify_text.py``.
The tokenizer is a Hugging Face ``tokenizers`` JSON file shipped in the bundle (covered by ``SHA256SUMS``);
texts longer than ``max_length`` tokens (special tokens included) are truncated on the right, and a batch is
padded on the right with ``pad_id`` to its longest text (``padding="longest"``) or to ``max_length``. Models
take ``(input_ids, attention_mask)``, both int64 ``(N, L)``, and must give the same logits whatever ``L``.

Imports numpy only (``tokenizers`` lazily, with a clear error when it is missing).

Example:
    >>> pre = TextPreprocessing(max_length=32)
    >>> pre.axis_sizes()
    {'sequence': 32}
    >>> feed = pre.feed(["runs small, lovely fabric"], ["input_ids", "attention_mask"], "bundle")  # doctest: +SKIP
    >>> feed["input_ids"].dtype
    dtype('int64')
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np

from edgekd.deploy.errors import DependencyError, InputFileError, UsageError
from edgekd.deploy.runtime.preprocess import METADATA_KEY, PREPROCESSING
from edgekd.deploy.typed import to_json

#: Real-looking sentences for ``edgekd verify`` / ``edgekd bench`` (any language model's tokenizer splits them).
SAMPLE_TEXTS = (
    "runs small, lovely fabric and the colour is exactly as shown",
    "terrible quality, the seams came apart after one wash",
    "fits well, comfortable for long days at work",
    "the delivery was late but the dress itself is beautiful",
    "too tight around the shoulders, I had to return it",
    "great value for the price; I bought it in two colours",
    "the material feels cheap and thin, not worth it",
    "perfect for summer evenings, light and soft",
)

_CACHE: dict[tuple[str, int, int], object] = {}


def tokenizers_module():
    """``import tokenizers`` or a :class:`DependencyError` naming the install command."""
    try:
        import tokenizers
    except ImportError:
        raise DependencyError("text models need the Python package 'tokenizers', which is not installed",
                              hint="pip install 'edgekd[text]'  (or: pip install tokenizers)") from None
    return tokenizers


@PREPROCESSING.register("text")
@dataclass(frozen=True)
class TextPreprocessing:
    """Strings → int64 ``input_ids`` / ``attention_mask`` ``(N, L)``, right-truncated to ``max_length`` tokens
    (special tokens included) and right-padded with ``pad_id`` (to the batch's longest text, or to
    ``max_length``), by the Hugging Face ``tokenizers`` JSON file ``tokenizer`` beside the model."""

    max_length: int
    kind: Literal["text"] = "text"
    tokenizer: str = "tokenizer.json"
    pad_id: int = 0
    padding: Literal["longest", "max_length"] = "longest"
    input_names: tuple[str, ...] = ("input_ids", "attention_mask")

    def __post_init__(self) -> None:
        problems = []
        if self.max_length < 1:
            problems.append(f"max_length must be >= 1, got {self.max_length}")
        if self.pad_id < 0:
            problems.append(f"pad_id must be >= 0, got {self.pad_id}")
        if not 1 <= len(self.input_names) <= 2:
            problems.append(f"input_names must be (input_ids[, attention_mask]), got {list(self.input_names)}")
        name = PurePosixPath(self.tokenizer)
        if not self.tokenizer or name.is_absolute() or ".." in name.parts or "\\" in self.tokenizer:
            problems.append(f"tokenizer must be a file name inside the bundle, got {self.tokenizer!r}")
        if problems:
            raise ValueError("; ".join(problems))

    # ------------------------------------------------------------------------------------ describe
    def axis_sizes(self) -> dict[str, int]:
        """Sizes of the dynamic axes other than the batch (the largest sequence the model is fed)."""
        return {"sequence": self.max_length}

    @property
    def input_dtype(self) -> str:
        return "int64"

    def to_dict(self) -> dict:
        return to_json(self)

    def metadata(self) -> dict[str, str]:
        """The ONNX ``metadata_props`` entry."""
        return {METADATA_KEY: json.dumps(self.to_dict(), sort_keys=True)}

    # ------------------------------------------------------------------------------------ tokenizer
    def load_tokenizer(self, folder: str | os.PathLike):
        """The tokenizer file ``folder/tokenizer`` (cached by path, size and modification time).

        Raises:
            InputFileError: the file is missing or is not a ``tokenizers`` JSON file.
            DependencyError: ``tokenizers`` is not installed.
        """
        path = Path(folder) / self.tokenizer
        try:
            st = path.stat()
        except OSError:
            raise InputFileError(f"tokenizer file not found: {path}",
                                 hint=f"a text model needs its tokenizer beside it as '{self.tokenizer}'; "
                                      "re-create the bundle with `edgekd bundle`") from None
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        if key not in _CACHE:
            tokenizers = tokenizers_module()
            try:
                tok = tokenizers.Tokenizer.from_file(str(path))
            except Exception as exc:  # tokenizers raises a bare Exception for a bad file
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise InputFileError(f"cannot read tokenizer {path}: {first[:200]}",
                                     hint="it must be a Hugging Face tokenizers JSON file (tokenizer.save(...)); "
                                          "copy the bundle again or re-create it with `edgekd bundle`") from None
            tok.no_padding()  # configured once for this contract: encode() then changes nothing per call
            tok.enable_truncation(self.max_length, stride=0, strategy="longest_first", direction="right")
            _CACHE.clear()  # one tokenizer per process is the common case; never let the cache grow
            _CACHE[key] = tok
        return _CACHE[key]

    # ------------------------------------------------------------------------------------ apply
    def encode(self, texts, tokenizer, padding: Literal["longest", "max_length"] | None = None
               ) -> dict[str, np.ndarray]:
        """A list of strings → ``{input_ids, attention_mask}`` int64 ``(N, L)``.

        ``padding`` overrides the contract's (training pads to ``max_length`` once). The tokenizer's own
        truncation/padding settings are restored afterwards.
        """
        texts = check_texts(texts)
        encodings = _encode_batch(tokenizer, texts, self.max_length)
        lengths = [len(e.ids) for e in encodings]
        if max(lengths) > self.max_length:  # the tokenizer cannot truncate below its special tokens
            raise UsageError(f"max_length {self.max_length} is too short for this tokenizer (it keeps "
                             f"{max(lengths)} tokens)", hint="use a max_length above the special tokens' count")
        width = self.max_length if (padding or self.padding) == "max_length" else max(1, max(lengths))
        ids = np.full((len(texts), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(texts), width), dtype=np.int64)
        for row, enc in enumerate(encodings):
            ids[row, :len(enc.ids)] = enc.ids
            mask[row, :len(enc.ids)] = 1
        arrays = (ids, mask)
        return {name: arrays[i] for i, name in enumerate(self.input_names)}

    def feed(self, raw, input_names, folder=None) -> dict[str, np.ndarray]:
        """Raw strings → the model's feed ``{input name: array}`` (the tokenizer is read from ``folder``).

        Raises:
            UsageError: not strings, an empty batch, or a text that gives no tokens at all.
        """
        if folder is None:
            raise UsageError("a text model's preprocessing needs the folder holding its tokenizer",
                             hint="load it with load_bundle(folder)")
        texts = check_texts(raw)
        encoded = self.encode(texts, self.load_tokenizer(folder))
        mask = encoded.get(self.input_names[1]) if len(self.input_names) > 1 else None
        if mask is not None and (empty := np.flatnonzero(mask.sum(axis=1) == 0)).size:
            raise UsageError(f"text #{int(empty[0])} ({texts[empty[0]]!r}) gives no tokens with this tokenizer: "
                             "nothing to classify", hint="pass non-empty text")
        ordered = [encoded[name] for name in self.input_names]
        if len(input_names) != len(ordered):
            raise UsageError(f"the model takes inputs {list(input_names)}, the text preprocessing makes "
                             f"{list(self.input_names)}", hint="re-create the bundle with `edgekd bundle`")
        return dict(zip(input_names, ordered, strict=True))

    def synthetic(self, n: int = 2, max_bytes: int | None = None) -> list[str]:
        """``n`` real-looking sentences (for ``edgekd verify`` and ``edgekd bench``)."""
        return [SAMPLE_TEXTS[i % len(SAMPLE_TEXTS)] for i in range(n)]

    def texts_of_length(self, tokenizer, tokens: int, n: int = 1) -> list[str]:
        """``n`` texts that tokenize to at least ``min(tokens, max_length)`` tokens (truncation clips them)."""
        words = " ".join(SAMPLE_TEXTS).split()
        target = min(tokens, self.max_length)
        text = ""
        for count in range(1, 8 * target + 8):  # a word gives one token or more: stop at the first long enough
            text = " ".join(words[i % len(words)] for i in range(count))
            if len(_encode_batch(tokenizer, [text], None)[0].ids) >= target:
                break
        return [text] * n


def check_texts(raw) -> list[str]:
    """A list (or one string, or a numpy string array) of texts as ``list[str]``; anything else refused."""
    if isinstance(raw, str):
        raw = [raw]
    elif isinstance(raw, np.ndarray) and raw.dtype.kind in "UO":
        raw = raw.reshape(-1).tolist()
    if not isinstance(raw, list | tuple):
        raise UsageError(f"texts must be a list of strings, got {type(raw).__name__}",
                         hint='pass e.g. ["runs small, lovely fabric"]')
    if not raw:
        raise UsageError("no texts given (an empty batch)", hint="pass at least one string")
    bad = next((i for i, t in enumerate(raw) if not isinstance(t, str)), None)
    if bad is not None:
        raise UsageError(f"text #{bad} is a {type(raw[bad]).__name__} ({str(raw[bad])[:40]!r}), not a string",
                         hint="decode bytes first (b.decode('utf-8')); pass strings only")
    return list(raw)


def _encode_batch(tokenizer, texts: list[str], max_length: int | None):
    """``tokenizer.encode_batch`` with right truncation at ``max_length`` (None: none) and no padding; the
    tokenizer's own settings are put back afterwards."""
    truncation, padding = tokenizer.truncation, tokenizer.padding
    want = {"max_length": max_length, "stride": 0, "strategy": "longest_first", "direction": "right"}
    same = (truncation == want if max_length else truncation is None) and padding is None
    if not same:
        tokenizer.no_padding()
        if max_length:
            tokenizer.enable_truncation(max_length, stride=0, strategy="longest_first", direction="right")
        else:
            tokenizer.no_truncation()
    try:
        return tokenizer.encode_batch(texts)
    finally:
        if not same:
            _restore(tokenizer, truncation, padding)


def _restore(tokenizer, truncation: dict | None, padding: dict | None) -> None:
    if truncation:
        tokenizer.enable_truncation(**truncation)
    else:
        tokenizer.no_truncation()
    if padding:
        tokenizer.enable_padding(**padding)
    else:
        tokenizer.no_padding()
