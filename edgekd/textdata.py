"""Text data: ``text:<path>`` (CSV, TSV or JSON Lines) → token-id tensors, and the tokenizer the run keeps.

A recipe names the columns (``data.text_column``, ``data.label_column``); label names are kept as written and
sorted. The rows are split with the seeded, stratified :func:`edgekd.data.stratified_split`. The tokenizer is
either trained here (``data.tokenizer: train``: a WordPiece vocabulary of ``data.vocab_size`` learned from the
*training split only*, lowercased and accent-stripped, deterministic) or read from a path — a
``tokenizer.json`` or a folder holding one or a BERT ``vocab.txt`` (a Hugging Face teacher's own, so teacher
and student see the same tokens). Every text is tokenized once into int64 ``(N, max_length)`` ``input_ids``
and ``attention_mask`` (right padding) by :meth:`edgekd.deploy.runtime.text.TextPreprocessing.encode` — the
device's own encoding, which there pads a batch only to its longest text (the models do not depend on padding).

The content identity is the SHA-256 of the file's bytes, the columns, the tokenizer and the split settings.

Example:
    >>> texts, labels, names = read_table("reviews.csv", "text", "label")   # doctest: +SKIP
    >>> tok = train_tokenizer(texts[:1000], vocab_size=2000)                  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
from pathlib import Path

import numpy as np

from edgekd.deploy.errors import InputFileError, UsageError

log = logging.getLogger(__name__)

#: special tokens of a trained vocabulary, in id order ([PAD] is 0)
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


# ---------------------------------------------------------------------------------------------- reading
def read_table(path: str | Path, text_column: str, label_column: str) -> tuple[list[str], list[str], bytes]:
    """The texts, label strings and raw bytes of a CSV / TSV / JSON Lines file.

    Raises:
        InputFileError: the file is missing, empty, not UTF-8, malformed, or a row has no label.
        UsageError: a named column is not in the file (the columns present are listed).
    """
    path = Path(path)
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise UsageError(f"text data {path}: unknown file type {path.suffix!r}",
                         hint=f"use one of {', '.join(FORMATS)} (CSV, TSV with a header row, or JSON Lines)")
    if not path.is_file():
        raise InputFileError(f"text data file not found: {path}", hint="check data.source text:<path>")
    raw = path.read_bytes()
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise InputFileError(f"{path} is not UTF-8 text (byte {exc.start}, line {line}: {exc.reason})",
                             hint="re-save it as UTF-8, e.g. iconv -f latin1 -t utf-8") from None
    if not content.strip():
        raise InputFileError(f"{path} is empty", hint="it needs a header row and one row per text")
    rows = _jsonl(path, content) if kind == "jsonl" else _delimited(path, content, "\t" if kind == "tsv" else ",")
    texts, labels = _columns(path, rows, text_column, label_column)
    return texts, labels, raw


def _delimited(path: Path, content: str, delimiter: str) -> tuple[list[str], list[dict]]:
    def read(quoting):
        reader = csv.DictReader(io.StringIO(content, newline=""), delimiter=delimiter, strict=True, quoting=quoting)
        return reader, list(reader)

    try:
        try:
            reader, rows = read(csv.QUOTE_MINIMAL)
        except csv.Error:
            if delimiter != "\t":
                raise
            # plain TSV (GLUE-style) has no quoting at all: a text may start with '"' or hold a lone one
            reader, rows = read(csv.QUOTE_NONE)
    except csv.Error as exc:
        raise InputFileError(f"{path}: not readable as {'TSV' if delimiter == chr(9) else 'CSV'}: {exc}",
                             hint="quote fields that hold the delimiter or line breaks") from None
    return list(reader.fieldnames or []), rows


def _jsonl(path: Path, content: str) -> tuple[list[str], list[dict]]:
    rows, columns = [], {}
    for n, line in enumerate(content.split("\n"), 1):  # not splitlines(): U+2028 etc. may stand inside a JSON string
        line = line.rstrip("\r")
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputFileError(f"{path}, line {n}: not JSON ({exc.msg})",
                                 hint="JSON Lines holds one JSON object per line") from None
        if not isinstance(row, dict):
            raise InputFileError(f"{path}, line {n}: a JSON {type(row).__name__}, expected an object")
        columns.update(dict.fromkeys(row))
        rows.append(row)
    return list(columns), rows


def _columns(path: Path, table, text_column: str, label_column: str) -> tuple[list[str], list[str]]:
    columns, rows = table
    for key, name in (("data.text_column", text_column), ("data.label_column", label_column)):
        if name not in columns:
            raise UsageError(f"{path} has no column {name!r} ({key}); its columns: {', '.join(map(repr, columns))}",
                             hint=f"set {key} to one of them")
    if not rows:
        raise InputFileError(f"{path} has a header but no rows")
    texts, labels = [], []
    for n, row in enumerate(rows, 1):
        label, text = row.get(label_column), row.get(text_column)
        if label is None or str(label).strip() == "":
            raise InputFileError(f"{path}, row {n}: no label in column {label_column!r}",
                                 hint="every row needs a label (remove unlabelled rows)")
        texts.append("" if text is None else str(text))
        labels.append(str(label).strip())
    return texts, labels


# ---------------------------------------------------------------------------------------------- tokenizers
def train_tokenizer(texts: list[str], vocab_size: int = 8000, min_frequency: int = 2):
    """A WordPiece tokenizer (BERT-style: lowercase, accents stripped, ``[CLS] text [SEP]``) learned from
    ``texts``; the same texts and settings always give the same file.

    The vocabulary: the special tokens, every character seen (word-initial and ``##`` continuation, so no seen
    character is unknown), then the word prefixes and ``##`` suffixes that cover the most characters of the
    texts (occurrences × length, at least ``min_frequency`` occurrences; ties by the piece itself) up to
    ``vocab_size``. (``tokenizers``' own WordPiece trainer breaks ties in hash-map order: two trainings on the
    same texts can differ, so it is not used.)
    """
    import collections

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=True,
                                            lowercase=True)
    pre = pre_tokenizers.BertPreTokenizer()
    words = collections.Counter(w for text in texts for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(text)))
    chars, pieces = set(), collections.Counter()
    for word, count in words.items():
        chars.update(word[:1])
        chars.update("##" + c for c in word[1:])
        for i in range(2, len(word) + 1):
            pieces[word[:i]] += count
        for j in range(1, len(word) - 1):
            pieces["##" + word[j:]] += count
    vocab = list(SPECIALS) + sorted(chars)
    ranked = sorted((p for p, n in pieces.items() if n >= min_frequency and p not in chars),
                    key=lambda p: (-pieces[p] * len(p.removeprefix("##")), p))
    vocab += ranked[:max(0, vocab_size - len(vocab))]
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]",
                                     max_input_chars_per_word=100))
    tok.normalizer, tok.pre_tokenizer, tok.decoder = normalizer, pre, decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return tok


def load_tokenizer(spec: str | Path):
    """A tokenizer from a ``tokenizer.json``, or a folder holding ``tokenizer.json`` or a BERT ``vocab.txt``
    (lowercased unless its ``tokenizer_config.json`` says ``do_lower_case: false``).

    Raises:
        InputFileError: nothing usable at ``spec``.
    """
    from tokenizers import Tokenizer

    path = Path(spec)
    file = path / "tokenizer.json" if path.is_dir() else path
    try:
        if file.is_file() and file.suffix == ".json":
            return Tokenizer.from_file(str(file))
        vocab = path / "vocab.txt" if path.is_dir() else path
        if vocab.is_file() and vocab.suffix == ".txt":
            return _from_vocab(vocab)
    except Exception as exc:  # tokenizers raises plain Exceptions for malformed files
        raise InputFileError(f"cannot read the tokenizer at {path}: {str(exc).splitlines()[0][:200]}",
                             hint="data.tokenizer takes a tokenizer.json, a vocab.txt, or a folder holding one") from None
    raise InputFileError(f"no tokenizer at {path} (no tokenizer.json or vocab.txt)",
                         hint="data.tokenizer: train (learn one from the training texts), or a path to a "
                              "tokenizer.json / vocab.txt / a Hugging Face model folder")


def _from_vocab(vocab: Path):
    from tokenizers.implementations import BertWordPieceTokenizer

    lower = True
    config = vocab.parent / "tokenizer_config.json"
    if config.is_file():
        lower = bool(json.loads(config.read_text(encoding="utf-8")).get("do_lower_case", True))
    return BertWordPieceTokenizer(str(vocab), lowercase=lower, strip_accents=lower or None)._tokenizer


def pad_id(tokenizer) -> int:
    """The tokenizer's own padding id when it sets one, else the id of ``[PAD]`` (or ``<pad>``), else 0."""
    if tokenizer.padding and tokenizer.padding.get("pad_id") is not None:
        return int(tokenizer.padding["pad_id"])
    for name in ("[PAD]", "<pad>"):
        found = tokenizer.token_to_id(name)
        if found is not None:
            return int(found)
    return 0


def plain_json(tokenizer) -> str:
    """The tokenizer as ``tokenizer.json`` text without truncation or padding settings (the device's
    :class:`TextPreprocessing` sets those)."""
    data = json.loads(tokenizer.to_str())
    data["truncation"], data["padding"] = None, None
    return json.dumps(data, ensure_ascii=False, sort_keys=True)


# ---------------------------------------------------------------------------------------------- the source
def load_text(cfg, seed: int, arg: str = ""):
    """``data.source: text:<path>`` → :class:`edgekd.data.DataSplits` (task ``text-classification``)."""
    import torch

    from edgekd.data import DataSplits, TensorSplit, stratified_split
    from edgekd.deploy.runtime.runner import TensorSpec
    from edgekd.deploy.runtime.text import TextPreprocessing

    path = Path(arg or cfg.root or "")
    if not arg and not cfg.root:
        raise UsageError("data.source text needs a file: text:<path to .csv/.tsv/.jsonl>")
    texts, names, raw = read_table(path, cfg.text_column, cfg.label_column)
    if cfg.limit:
        texts, names = texts[:cfg.limit], names[:cfg.limit]
    labels = sorted(set(names))
    y = np.searchsorted(np.array(labels), np.array(names)).astype(np.int64)
    tr, va, te = stratified_split(y, cfg.val_fraction, cfg.test_fraction, seed)
    tokenizer = _tokenizer(cfg, [texts[i] for i in tr])
    pad, tok_json = pad_id(tokenizer), plain_json(tokenizer)
    pre = TextPreprocessing(max_length=cfg.max_length, pad_id=pad)
    feed = pre.encode(texts, tokenizer, padding="max_length")  # the device's own encoding, padded once
    ids, mask = feed["input_ids"], feed["attention_mask"]
    truncated = int((mask[:, -1] == 1).sum())
    if truncated:
        log.info("%s: %d of %d texts reach data.max_length %d tokens (longer ones are cut on the right)",
                 path.name, truncated, len(texts), cfg.max_length)
    ids_t, mask_t, y_t = torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(y)
    splits = [TensorSplit((ids_t[torch.from_numpy(i)], mask_t[torch.from_numpy(i)]), y_t[torch.from_numpy(i)])
              for i in (tr, va, te)]
    ident = hashlib.sha256("|".join(map(str, (
        "text", hashlib.sha256(raw).hexdigest(), cfg.text_column, cfg.label_column, cfg.limit,
        hashlib.sha256(tok_json.encode()).hexdigest(), cfg.max_length, cfg.val_fraction, cfg.test_fraction,
        seed))).encode()).hexdigest()[:16]
    specs = (TensorSpec("input_ids", "int64", ("batch", "sequence")),
             TensorSpec("attention_mask", "int64", ("batch", "sequence")))
    if cfg.augment:
        log.warning("data.augment is ignored for text: no augmentation applied")
    return DataSplits(splits[0], splits[0], splits[1], splits[2], len(labels), (cfg.max_length,), labels, pre, ident,
                      input_specs=specs, task="text-classification", assets={"tokenizer.json": tok_json},
                      model_kwargs={"vocab_size": tokenizer.get_vocab_size(), "pad_id": pad})


def _tokenizer(cfg, train_texts: list[str]):
    if cfg.tokenizer == "train":
        tok = train_tokenizer(train_texts, cfg.vocab_size)
        log.info("trained a WordPiece tokenizer on %d training texts: %d tokens", len(train_texts),
                 tok.get_vocab_size())
        return tok
    return load_tokenizer(cfg.tokenizer)
