"""Benchmark models through the :class:`~edgekd.deploy.runtime.runner.Runner` protocol: one code path for
ONNX Runtime, TensorRT and PyTorch, for ``edgekd bench`` and the pipeline's benchmark stage alike.

* :func:`bench_models` — ``edgekd bench``: ONNX files, bundles or TensorRT engines, every batch size, several
  models interleaved in rounds so that "A is faster than B" beats the machine's noise;
* :func:`time_candidates` — the timing core: warm-up, then candidates interleaved in rounds
  (:func:`~edgekd.benchmarks.harness.measure_interleaved`);
* :func:`make_row` — a :class:`~edgekd.benchmarks.results.ResultRow` from what was measured.

Imports numpy and the runtimes only (never torch: PyTorch rows come from the pipeline's TorchRunner).

Example:
    >>> rows = bench_models(["student.onnx", "student-int8.onnx"], batches=(1, 32), rounds=5)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekd.benchmarks.harness import measure, measure_interleaved, noise_advice, peak_rss_bytes, rss_bytes
from edgekd.benchmarks.results import ColdStart, Latency, ResultRow
from edgekd.deploy.errors import InputFileError, UsageError
from edgekd.deploy.registry import Registry
from edgekd.deploy.runtime.runner import Runner, make_feed, top1

log = logging.getLogger(__name__)

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
#: runtime name → ``runner_factory(target, providers, threads, graph_optimization)``
RUNTIMES: Registry = Registry("runtime")


@dataclass(frozen=True)
class Timing:
    """How long to measure: warm-up by time *and* count, then at least ``min_runs`` and ``min_time_s`` per
    candidate, split over ``rounds`` interleaved rounds."""

    warmup_s: float = 0.5
    warmup_runs: int = 10
    min_runs: int = 200
    min_time_s: float = 2.0
    rounds: int = 5


@dataclass(frozen=True)
class Target:
    """A model file (or bundle) and what it says about itself."""

    path: Path
    model_path: Path
    kind: str  # "onnx" | "bundle" | "engine"
    name: str
    role: str | None
    precision: str
    size_bytes: int
    params: int | None
    preprocessing: object | None = None
    labels: tuple[str, ...] = ()
    sizes: dict[str, int] = field(default_factory=dict)
    signature: str | None = None  # structural signature (benchmarks.profile): matches device profiles


def load_target(path: str | os.PathLike) -> Target:
    """Check and describe an ONNX file, a bundle folder (checksums verified) or a TensorRT engine."""
    from edgekd.benchmarks.profile import structural_signature
    from edgekd.deploy.runtime.bundle import open_bundle
    from edgekd.deploy.runtime.intake import check_model
    from edgekd.deploy.runtime.preprocess import from_metadata

    path = Path(path)
    if not path.exists():
        raise InputFileError(f"model not found: {path}", hint="pass an .onnx file, a bundle folder or an .engine")
    if path.is_dir():
        bundle = open_bundle(path)
        m = bundle.manifest
        return Target(path, bundle.model_path, "bundle", m.artifact or path.name, m.role, m.precision,
                      bundle.model_path.stat().st_size, bundle.onnx.params, m.preprocessing, tuple(m.labels),
                      m.dynamic_sizes(), structural_signature(bundle.onnx))
    if path.suffix in ENGINE_SUFFIXES:
        from edgekd.deploy.runtime.trt import read_sidecar

        side = read_sidecar(path)
        return Target(path, path, "engine", path.stem, side.get("role"), side.get("precision", "unknown"),
                      path.stat().st_size, side.get("params"))
    info = check_model(path)
    pre = from_metadata(info.metadata, path)
    return Target(path, path, "onnx", path.stem, info.metadata.get("role"),
                  info.metadata.get("edgekd.precision") or info.precision, path.stat().st_size, info.params,
                  pre, sizes=dict(getattr(pre, "axis_sizes", dict)()), signature=structural_signature(info))


def _ort_runner(target: Target, providers, threads, graph_optimization):
    from edgekd.deploy.runtime.ort import OnnxrtRunner

    return OnnxrtRunner(target.model_path, providers, threads, graph_optimization)


def _trt_runner(target: Target, providers, threads, graph_optimization):
    from edgekd.deploy.runtime.trt import TrtRunner

    return TrtRunner(target.model_path)


def _openvino_runner(target: Target, providers, threads, graph_optimization):
    from edgekd.deploy.runtime.openvino import OpenVinoRunner

    return OpenVinoRunner(target.model_path, threads)


RUNTIMES.register("ort", _ort_runner)
RUNTIMES.register("trt", _trt_runner)
RUNTIMES.register("openvino", _openvino_runner)


def open_runner(target: Target, runtime: str | None = None, providers=None, threads: int | None = None,
                graph_optimization: str = "all") -> Runner:
    """The runner for ``target``: TensorRT for engines, ONNX Runtime otherwise (unless ``runtime`` says)."""
    runtime = runtime or ("trt" if target.kind == "engine" else "ort")
    if runtime == "ort" and target.kind == "engine":
        raise UsageError(f"{target.path} is a TensorRT engine; ONNX Runtime cannot run it",
                         hint="use --runtime trt, or bench the ONNX file")
    return RUNTIMES.get(runtime)(target, providers, threads, graph_optimization)


def cold_start(runner: Runner, batch: int, data: dict | None, sizes: dict | None) -> tuple[ColdStart, int | None]:
    """Enter ``runner`` and run it once, timing both (what an app pays at start-up); the runner stays open."""
    rss0, t0 = rss_bytes(), time.perf_counter_ns()
    runner.__enter__()
    created = time.perf_counter_ns()
    runner.infer(make_feed(runner.inputs(), batch, data, sizes))
    done = time.perf_counter_ns()
    rss1 = rss_bytes()
    cold = ColdStart((created - t0) / 1e6, (done - created) / 1e6, (done - t0) / 1e6)
    return cold, (rss1 - rss0) if rss0 is not None and rss1 is not None else None


def time_candidates(runners: dict[str, Runner], batch: int, timing: Timing,
                    data: dict[str, dict | None] | None = None, sizes: dict[str, dict] | None = None,
                    power: bool = False) -> dict[str, Latency | str | dict]:
    """Latency of each (entered) runner at ``batch``; candidates are interleaved in ``timing.rounds`` rounds.

    ``data``/``sizes`` give each runner its real samples and dynamic-axis sizes (by candidate name). A
    candidate that cannot run at this batch gets its error message instead of a :class:`Latency`. With
    ``power`` each candidate is measured on its own while tegrastats samples (``{"latency", "power"}``).
    """
    calls, out = {}, {}
    for name, runner in runners.items():
        try:
            feed = make_feed(runner.inputs(), batch, (data or {}).get(name), (sizes or {}).get(name))
            calls[name] = runner.bind(feed)
            calls[name]()  # a batch the model cannot take fails here, not inside the timing loop
        except UsageError as exc:
            out[name] = exc.message
        except Exception as exc:  # noqa: BLE001 - a failed batch size is a recorded row, not a crash
            out[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
    kwargs = dict(warmup_s=timing.warmup_s, warmup_runs=timing.warmup_runs, min_runs=timing.min_runs,
                  min_time_s=timing.min_time_s)
    if power:
        from edgekd.benchmarks.power import TegrastatsSampler

        for name, call in calls.items():
            with TegrastatsSampler() as sampler:
                stats = measure(call, **kwargs)
            out[name] = {"latency": stats, "power": sampler.summary(stats.mean, batch)}
        return out
    if calls:
        out.update(measure_interleaved(calls, rounds=max(timing.rounds, 1), **kwargs))
    return out


def make_row(runner: Runner, latency: Latency | str | dict, *, name: str, batch: int, fmt: str, precision: str,
             role: str | None = None, **fields) -> ResultRow:
    """A :class:`ResultRow` for ``runner`` measured at ``batch`` (``latency`` may be an error message)."""
    info = runner.info()
    common = dict(name=name, format=fmt, precision=precision, runtime=info.runtime, batch=int(batch), role=role,
                  threads=info.threads, providers=info.providers, provider_fallback=info.fallback,
                  device=info.device, **fields)
    if isinstance(latency, str):
        return ResultRow(**common, error=latency)
    power = None
    if isinstance(latency, dict):
        latency, power = latency["latency"], latency["power"]
    advice = noise_advice(latency)
    if advice:
        seq = fields.get("seq_len")
        log.warning("%s batch %d%s: %s", name, batch, f", {seq} tokens" if seq else "", advice)
    return ResultRow(**common, latency=latency, throughput_sps=batch / (latency.mean / 1e3), power=power)


def bench_models(paths: Sequence[str | os.PathLike], *, batches: Sequence[int] = (1,), runtime: str | None = None,
                 providers=None, threads: int | None = None, timing: Timing = Timing(),
                 data: str | os.PathLike | tuple | None = None, raw: bool | None = None,
                 names: Sequence[str] | None = None, role: str | None = None, graph_optimization: str = "all",
                 power: bool = False, sizes: dict[str, int] | None = None,
                 seq_lens: Sequence[int] | None = None) -> list[ResultRow]:
    """``edgekd bench``: every model at every batch size; several models are timed interleaved.

    Args:
        paths: ``.onnx`` files (FP32, FP16, INT8), bundle folders or TensorRT engines.
        batches: batch sizes; one row per model and batch.
        runtime: ``ort`` or ``trt`` (default: by file kind).
        providers, threads, graph_optimization: ONNX Runtime settings (the rows say what really ran).
        timing: warm-up, minimum runs/time per candidate, interleaved rounds.
        data: labelled data for top-1: ``(x, y)`` model-ready arrays, or a ``.npz`` / ImageFolder path
            (raw pixels are prepared by the bundle's preprocessing contract, see :mod:`.datasets`).
        raw: whether ``data`` holds raw pixels (default: files yes for a bundle, arrays no).
        names: row names (default: file or folder names); role: the role to record.
        power: sample power/temperature with tegrastats during each timed run (Jetson).
        sizes: sizes of dynamic input axes other than the batch (e.g. ``{"sequence": 64}``).
        seq_lens: text models (:mod:`edgekd.benchmarks.text`): tokens per sequence, one row per model, batch
            and length (default 16, 64, 128, each clipped to the model's ``max_length``); a text bundle's rows
            also time tokenization and tokenize + run.
    """
    targets = [load_target(p) for p in paths]
    names = list(names) if names else _unique([t.name for t in targets])
    if any(is_text(t) for t in targets):
        from edgekd.benchmarks.text import bench_text_models

        if data is not None:
            raise UsageError("--data (top-1) is for image models; a text model is timed without it",
                             hint="measure a text model's accuracy with `edgekd run` (its test split)")
        return bench_text_models(targets, names, batches=batches, seq_lens=seq_lens, runtime=runtime,
                                 providers=providers, threads=threads, timing=timing, role=role,
                                 graph_optimization=graph_optimization)
    runners, base, feeds, dims = {}, {}, {}, {}
    try:
        for name, target in zip(names, targets, strict=True):
            x, y = _resolve_data(target, data, raw)
            dims[name] = {**target.sizes, **(sizes or {})}
            runner = open_runner(target, runtime, providers, threads, graph_optimization)
            cold, rss_model = cold_start(runner, batches[0], None, dims[name])
            runners[name] = runner
            feeds[name] = None if x is None else {runner.inputs()[0].name: x}
            accuracy = {} if x is None else {"top1": top1(runner, feeds[name], y), "samples": int(len(y))}
            base[name] = dict(fmt="tensorrt" if target.kind == "engine" else "onnx", precision=target.precision,
                              role=role or target.role, path=str(target.path), size_bytes=target.size_bytes,
                              params=target.params, cold_start=cold, rss_model_bytes=rss_model, **accuracy,
                              extra={"signature": target.signature} if target.signature else {})
        rows = []
        for batch in batches:
            stats = time_candidates(runners, batch, timing, feeds, dims, power)
            rows += [make_row(runner, stats[name], name=name, batch=batch, **base[name],
                              peak_rss_bytes=peak_rss_bytes()) for name, runner in runners.items()]
        return rows
    finally:
        for runner in runners.values():
            runner.__exit__(None, None, None)


def is_text(target: Target) -> bool:
    return getattr(target.preprocessing, "kind", None) == "text"


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}-{seen[n]}")
    return out


def _resolve_data(target: Target, data, raw: bool | None) -> tuple[np.ndarray | None, np.ndarray | None]:
    from edgekd.benchmarks.datasets import load_labelled

    if data is None:
        return None, None
    if not isinstance(data, tuple):
        return load_labelled(data, target.preprocessing if (raw is not False and target.kind == "bundle") else None,
                             target.labels)
    x, y = data
    if raw:
        if target.preprocessing is None:
            raise UsageError("raw data needs the model's preprocessing contract", hint="bench the bundle folder")
        x = target.preprocessing.apply(x)
    return np.ascontiguousarray(x), np.asarray(y, dtype=np.int64).reshape(-1)
