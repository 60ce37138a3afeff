"""Text models in ``edgekd bench``: latency per batch size *and* sequence length, tokenization timed on its own,
and strings-in → logits-out end to end.

A text model's cost grows with the number of tokens, so one figure per batch size says little: every model is
timed at each of ``seq_lens`` (default 16, 64 and 128 tokens, clipped to the contract's ``max_length``), its
candidates interleaved in rounds like any other bench. For a **bundle** the feeds are real: texts of that many
tokens, tokenized by the bundle's own tokenizer; each row then also carries ``tokenize`` (the tokenizer alone)
and ``end_to_end`` (tokenize + run, what an app pays per call). A bare ``.onnx`` file has no tokenizer: its
feeds are token id ``pad_id + 1`` everywhere with a full attention mask, and only the model is timed.

Imports numpy, onnxruntime and tokenizers only.

Example:
    >>> rows = bench_models(["bundle/"], batches=(1, 32), seq_lens=(16, 64, 128))  # doctest: +SKIP
    >>> [(r.batch, r.seq_len, r.p50, r.tokenize.p50, r.end_to_end.p50) for r in rows]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from edgekd.benchmarks.harness import measure, peak_rss_bytes
from edgekd.benchmarks.results import Latency, ResultRow
from edgekd.deploy.errors import UsageError

#: tokens per sequence timed by default (each clipped to the model's max_length)
DEFAULT_SEQ_LENS = (16, 64, 128)


def seq_lengths(max_length: int, asked: Sequence[int] | None = None) -> list[int]:
    """The lengths to time: ``asked`` (default :data:`DEFAULT_SEQ_LENS`) clipped to ``max_length``, sorted."""
    asked = asked or DEFAULT_SEQ_LENS
    if min(asked) < 1:
        raise UsageError(f"sequence lengths must be >= 1, got {list(asked)}", hint="e.g. --seq-len 16,64,128")
    return sorted({min(int(n), max_length) for n in asked})


def token_feed(pre, tokenizer, length: int, batch: int) -> tuple[dict[str, np.ndarray], list[str] | None]:
    """A feed of ``batch`` sequences of exactly ``length`` tokens (and the texts, with a tokenizer)."""
    if tokenizer is None:
        ids = np.full((batch, length), pre.pad_id + 1, dtype=np.int64)
        arrays = (ids, np.ones((batch, length), dtype=np.int64))
        return {name: arrays[i] for i, name in enumerate(pre.input_names)}, None
    texts = pre.texts_of_length(tokenizer, length, batch)
    return replace(pre, max_length=length).encode(texts, tokenizer), texts


def text_timings(pre, tokenizer, texts: list[str], length: int, runner, timing) -> dict[str, Latency]:
    """``tokenize`` (strings → feed, truncated at ``length``) and ``end_to_end`` (strings → logits) for one
    batch of ``texts``."""
    at_length = replace(pre, max_length=length)
    kwargs = dict(warmup_s=timing.warmup_s, warmup_runs=timing.warmup_runs, min_runs=timing.min_runs,
                  min_time_s=timing.min_time_s)
    return {"tokenize": measure(lambda: at_length.encode(texts, tokenizer), **kwargs),
            "end_to_end": measure(lambda: runner.infer(at_length.encode(texts, tokenizer)), **kwargs)}


def time_text_rows(runners: dict, base: dict[str, dict], pre, tokenizer=None, *, batches: Sequence[int] = (1,),
                   seq_lens: Sequence[int] | None = None, timing=None) -> list[ResultRow]:
    """Rows for entered runners that share one text contract (the pipeline's candidates: PyTorch and ONNX
    alike): at each batch and sequence length the runners are timed interleaved on the same real token feed
    (texts of that many tokens from ``tokenizer``; synthetic ids without one), and with a tokenizer each row
    also gets ``tokenize`` and ``end_to_end``. ``base[name]`` holds the other :func:`make_row` fields.

    Example:
        >>> rows = time_text_rows({"student-onnx": runner}, {"student-onnx": {"fmt": "onnx", "precision": "fp32"}},
        ...                       pre, tok, batches=(1, 32), seq_lens=(16, 64, 128))  # doctest: +SKIP
    """
    from edgekd.benchmarks.bench import Timing

    names = list(runners)
    lengths = dict.fromkeys(names, seq_lengths(pre.max_length, seq_lens))
    return _rows(runners, base, dict.fromkeys(names, pre), dict.fromkeys(names, tokenizer), lengths, batches,
                 timing or Timing())


def bench_text_models(targets, names: list[str], *, batches: Sequence[int], seq_lens: Sequence[int] | None,
                      runtime, providers, threads, timing, role, graph_optimization) -> list[ResultRow]:
    """:func:`edgekd.benchmarks.bench.bench_models` for text models: one row per model, batch and length."""
    from edgekd.benchmarks.bench import cold_start, is_text, open_runner

    if not all(is_text(t) for t in targets):
        raise UsageError("text and image models cannot be benchmarked together",
                         hint="run `edgekd bench` once for the text models and once for the others")
    runners, base, pres, tokenizers, lengths = {}, {}, {}, {}, {}
    try:
        for name, target in zip(names, targets, strict=True):
            pres[name] = pre = target.preprocessing
            tokenizers[name] = pre.load_tokenizer(target.path) if target.kind == "bundle" else None
            lengths[name] = seq_lengths(pre.max_length, seq_lens)
            runner = open_runner(target, runtime, providers, threads, graph_optimization)
            first, _ = token_feed(pre, tokenizers[name], lengths[name][-1], batches[0])
            cold, rss_model = cold_start(runner, batches[0], first, None)
            runners[name] = runner
            base[name] = dict(fmt="tensorrt" if target.kind == "engine" else "onnx", precision=target.precision,
                              role=role or target.role, path=str(target.path), size_bytes=target.size_bytes,
                              params=target.params, cold_start=cold, rss_model_bytes=rss_model,
                              extra={"signature": target.signature} if target.signature else {})
        return _rows(runners, base, pres, tokenizers, lengths, batches, timing)
    finally:
        for runner in runners.values():
            runner.__exit__(None, None, None)


def _rows(runners, base, pres, tokenizers, lengths, batches, timing) -> list[ResultRow]:
    """Every batch × length: the runners that take that length, interleaved, then their text timings."""
    from edgekd.benchmarks.bench import make_row, time_candidates

    rows = []
    for batch in batches:
        for length in sorted(set().union(*lengths.values())):
            group = {n: r for n, r in runners.items() if length in lengths[n]}
            made = {n: token_feed(pres[n], tokenizers[n], length, batch) for n in group}
            stats = time_candidates(group, batch, timing, {n: feed for n, (feed, _) in made.items()}, None)
            for name, runner in group.items():
                texts = made[name][1]
                text = {} if texts is None or isinstance(stats[name], str) else text_timings(
                    pres[name], tokenizers[name], texts, length, runner, timing)
                rows.append(make_row(runner, stats[name], name=name, batch=batch, seq_len=length, **base[name],
                                     **text, peak_rss_bytes=peak_rss_bytes()))
    return rows
