"""Numerical gates: an ONNX (or quantized) model is compared with its reference before it may ship.

One ✓/✗ line per output with the difference and the tolerance; failures raise typed errors that name the
first output that diverges and by how much.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field

import numpy as np

from edgekd.deploy.errors import ShapeMismatch, ToleranceExceeded, VerificationError
from edgekd.deploy.runtime.runner import tile_batch

log = logging.getLogger(__name__)

#: Absolute tolerance per precision. INT8 is judged by top-1 agreement and accuracy instead.
TOLERANCES = {"fp32": 1e-4, "fp16": 1e-3, "int8": None}


@dataclass
class ParityReport:
    """What a parity check measured; ``lines`` are the human-readable ✓/✗ lines."""

    precision: str
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float
    samples: int
    batch_sizes: list[int]
    tolerance: float | None
    passed: bool
    lines: list[str] = field(default_factory=list)
    outputs: dict[str, dict] = field(default_factory=dict)
    first_divergent: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def compare(reference: np.ndarray, actual: np.ndarray, name: str = "logits") -> tuple[float, float, float]:
    """Return (max abs diff, mean abs diff, top-1 agreement); shapes must match, values be finite."""
    if reference.shape != actual.shape:
        raise ShapeMismatch(f"output '{name}' has shape {actual.shape}, the reference {reference.shape}")
    if not np.isfinite(actual).all():
        raise VerificationError(f"output '{name}' contains NaN/Inf",
                                hint="the model overflows at this precision; keep it in FP32")
    diff = np.abs(reference.astype(np.float64) - actual.astype(np.float64))
    agree = float((reference.argmax(axis=1) == actual.argmax(axis=1)).mean()) if reference.ndim == 2 else 1.0
    return float(diff.max()), float(diff.mean()), agree


Feed = np.ndarray | dict[str, np.ndarray]


def check_parity(reference_fn, onnx_path: str | os.PathLike, inputs: Feed, *, precision: str = "fp32",
                 batch_sizes=(1, 7), atol: float | None = None, min_agreement: float | None = None,
                 providers=None, label: str | None = None, graph_optimization: str = "all") -> ParityReport:
    """Run ``onnx_path`` and ``reference_fn`` on ``inputs`` and compare every output.

    ``inputs`` is one array (for the model's only input) or a feed ``{input name: array}`` (all of the same
    length); ``reference_fn`` gets the same form back and returns one array, a tuple/list (in the model's
    output order) or a dict by output name. The ONNX model runs on the whole input set and, separately, at
    each of ``batch_sizes`` (two or more, to prove the batch axis really is dynamic). ``label`` names the
    model in errors (default: ``onnx_path``; useful when checking a temp file). ``graph_optimization="disable"``
    runs the graph as ONNX defines it (e.g. Q/DQ as float arithmetic, not fused integer kernels). Raises
    :class:`ToleranceExceeded` naming the first output that diverges and by how much.

    Example:
        >>> report = check_parity(lambda x: model(x), "m.onnx", x_test)  # doctest: +SKIP
        >>> print("\\n".join(report.lines))
    """
    from edgekd.deploy.runtime.ort import OnnxrtRunner

    atol = TOLERANCES.get(precision) if atol is None else atol
    if len(set(batch_sizes)) < 2:
        log.warning("parity checked at batch sizes %s only; use two or more to prove a dynamic batch",
                    list(batch_sizes))
    label = label or str(onnx_path)
    with OnnxrtRunner(onnx_path, providers, graph_optimization=graph_optimization) as runner:
        specs = runner.inputs()
        feed = inputs if isinstance(inputs, dict) else {specs[0].name: inputs}
        for spec in specs:
            if spec.name in feed and spec.fixed_batch:
                raise ShapeMismatch(f"{label}: input '{spec.name}' has a fixed batch size {spec.fixed_batch}, not "
                                    "a dynamic one", hint="re-export with a dynamic batch axis (export_onnx does this)")
        out_names = [o.name for o in runner.outputs()]
        n = len(next(iter(feed.values())))
        stats = _compare_all(_as_outputs(reference_fn(inputs), out_names), _ordered(runner.infer(feed), out_names),
                             out_names)
        for bs in batch_sizes:
            chunk = {k: tile_batch(v, bs) for k, v in feed.items()}
            got = _ordered(runner.infer(chunk), out_names)
            for out_name, arr in zip(out_names, got, strict=True):
                if arr.shape[0] != bs:
                    raise ShapeMismatch(f"batch {bs}: output '{out_name}' has batch {arr.shape[0]}",
                                        hint="the batch axis is not dynamic; re-export with a dynamic batch")
            ref_in = chunk if isinstance(inputs, dict) else chunk[specs[0].name]
            for out_name, (b_max, _, _) in _compare_all(_as_outputs(reference_fn(ref_in), out_names), got,
                                                        out_names).items():
                stats[out_name] = (max(stats[out_name][0], b_max), *stats[out_name][1:])
    lines, failed = _gate_lines(stats, precision, atol, min_agreement, list(batch_sizes), n)
    first = out_names[0]
    report = ParityReport(precision, stats[first][0], stats[first][1], stats[first][2], n,
                          list(batch_sizes), atol, not failed, lines,
                          outputs={k: {"max_abs_diff": v[0], "mean_abs_diff": v[1], "top1_agreement": v[2]}
                                   for k, v in stats.items()},
                          first_divergent=failed[0] if failed else None)
    for line in lines:
        log.info(line)
    if failed:
        bad = [line[2:] for line in lines if line.startswith("✗")]
        raise ToleranceExceeded(f"{label}: output '{failed[0]}' is the first to diverge from the "
                                f"reference: {bad[0]}" + (f" (+{len(bad) - 1} more)" if len(bad) > 1 else ""),
                                hint="check for training-only layers, unsupported ops or a lower precision")
    return report


def sequence_feeds(feed: dict[str, np.ndarray], lengths=(5, 16, 64)) -> list[dict[str, np.ndarray]]:
    """Token feeds ``(N, L)`` cut to each of ``lengths`` (right padding: the first columns are the real tokens)
    plus the full width — the several sequence lengths :func:`check_parity_feeds` checks a text model at.

    Example:
        >>> feed = {"input_ids": np.ones((4, 128), np.int64), "attention_mask": np.ones((4, 128), np.int64)}
        >>> [f["input_ids"].shape[1] for f in sequence_feeds(feed)]
        [5, 16, 64, 128]
    """
    width = next(iter(feed.values())).shape[1]
    keep = sorted({min(int(n), width) for n in lengths} | {width})
    return [{k: np.ascontiguousarray(v[:, :n]) for k, v in feed.items()} for n in keep]


def check_parity_feeds(reference_fn, onnx_path: str | os.PathLike, feeds: list[dict[str, np.ndarray]], *,
                       precision: str = "fp32", batch_sizes=(1, 3, 8), atol: float | None = None,
                       min_agreement: float | None = None, providers=None, label: str | None = None,
                       graph_optimization: str = "all") -> ParityReport:
    """:func:`check_parity` over several feeds of different shapes — a text model's token feeds at several
    sequence lengths — each at every batch size; one merged report (worst difference, lowest agreement).

    Raises :class:`ToleranceExceeded` naming the model, the sequence length and the output that diverges.

    Example:
        >>> feeds = [pre.encode(texts, tok, padding="max_length") for pre in by_length]  # doctest: +SKIP
        >>> report = check_parity_feeds(torch_fn, "student.onnx", feeds, batch_sizes=(1, 3, 8))  # doctest: +SKIP
    """
    if not feeds:
        raise VerificationError("parity over an empty list of feeds: nothing would be checked")
    label = label or str(onnx_path)
    reports, lines = [], []
    for feed in feeds:
        shape = "x".join(str(d) for d in next(iter(feed.values())).shape[1:]) or "scalar"
        report = check_parity(reference_fn, onnx_path, feed, precision=precision, batch_sizes=batch_sizes,
                              atol=atol, min_agreement=min_agreement, providers=providers,
                              label=f"{label} (input {shape})", graph_optimization=graph_optimization)
        reports.append(report)
        lines += [f"{line} [input {shape}]" for line in report.lines]
    outputs = {}
    for name in reports[0].outputs:
        per = [r.outputs[name] for r in reports]
        outputs[name] = {"max_abs_diff": max(p["max_abs_diff"] for p in per),
                         "mean_abs_diff": float(np.mean([p["mean_abs_diff"] for p in per])),
                         "top1_agreement": min(p["top1_agreement"] for p in per)}
    first = outputs[next(iter(outputs))]
    return ParityReport(precision, first["max_abs_diff"], first["mean_abs_diff"], first["top1_agreement"],
                        sum(r.samples for r in reports), list(batch_sizes), reports[0].tolerance, True, lines,
                        outputs)


def _ordered(outputs: dict[str, np.ndarray], names: list[str]) -> list[np.ndarray]:
    return [outputs[n] for n in names]


def _as_outputs(ref, names: list[str]) -> list[np.ndarray]:
    """Normalise a reference result (array, sequence or dict) to a list in ONNX output order."""
    if isinstance(ref, dict):
        missing = [n for n in names if n not in ref]
        if missing:
            raise ShapeMismatch(f"the reference returned no output(s) {missing}; it has {sorted(ref)}")
        return [np.asarray(ref[n]) for n in names]
    refs = [np.asarray(r) for r in ref] if isinstance(ref, list | tuple) else [np.asarray(ref)]
    if len(refs) != len(names):
        raise ShapeMismatch(f"the ONNX model has {len(names)} output(s) {names}, the reference {len(refs)}")
    return refs


def _compare_all(refs: list[np.ndarray], got: list[np.ndarray], names: list[str]) -> dict:
    return {n: compare(r, a, n) for n, r, a in zip(names, refs, got, strict=True)}


def _gate_lines(stats: dict, precision: str, atol: float | None, min_agreement: float | None,
                batch_sizes: list[int], n: int) -> tuple[list[str], list[str]]:
    """One ✓/✗ line per output and gate; returns (lines, names of failing outputs in order)."""
    lines, failed = [], []
    for out_name, (max_diff, mean_diff, agree) in stats.items():
        ok = True
        if atol is not None:
            ok_tol = max_diff <= atol
            lines.append(f"{'✓' if ok_tol else '✗'} {out_name} [{precision}]: max abs diff {max_diff:.3g} "
                         f"(tolerance {atol:g}), mean {mean_diff:.3g}, top-1 agreement {agree:.2%}, "
                         f"batches {batch_sizes} + {n}")
            ok &= ok_tol
        if min_agreement is not None:
            ok_agree = agree >= min_agreement
            lines.append(f"{'✓' if ok_agree else '✗'} {out_name} [{precision}]: top-1 agreement {agree:.2%} "
                         f"(minimum {min_agreement:.2%})")
            ok &= ok_agree
        if not ok:
            failed.append(out_name)
    return lines, failed
