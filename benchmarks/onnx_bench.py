"""Benchmark an ONNX file, an INT8 ONNX file or a bundle folder with ONNX Runtime: one row per batch size.

Used by ``edgekd bench`` and the pipeline. Imports numpy, onnx and onnxruntime only (never torch). Each
row carries the results.json artifact fields (``name``, ``role``, ``format``, ``precision``, ``path``,
``size_bytes``, ``params``, ``top1``, ``batch``, ``latency_ms``, ``throughput_sps``) plus the full
statistics (p95/std/min/max, ``cv``, ``noisy``), the cold start (session creation + first inference),
the peak RSS, and the execution providers that actually ran. A batch size that cannot run is recorded
as a row with ``error`` instead of aborting the others.

Example:
    >>> rows = bench_onnx("student.onnx", batches=(1, 32), min_runs=200, min_time_s=2.0)  # doctest: +SKIP
    >>> rows[0]["latency_ms"]["p50"], rows[0]["providers"]
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekd.benchmarks.harness import measure, noise_advice, peak_rss_bytes, rss_bytes
from edgekd.deploy.errors import InputFileError, UsageError
from edgekd.deploy.runtime.bundle import open_bundle
from edgekd.deploy.runtime.intake import check_model
from edgekd.deploy.verify import tile_batch

log = logging.getLogger(__name__)

ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
              "tensor(uint8)": np.uint8, "tensor(int8)": np.int8, "tensor(int32)": np.int32,
              "tensor(int64)": np.int64, "tensor(bool)": np.bool_}
EVAL_CHUNK = 256


@dataclass
class Target:
    """What is benchmarked: the model file and what it says about itself."""

    path: Path
    model_path: Path
    kind: str  # "onnx" | "bundle" | "engine"
    name: str
    role: str | None
    precision: str
    size_bytes: int
    params: int | None
    meta_input: dict | None = None
    normalization: dict | None = None
    labels: list = field(default_factory=list)


def load_target(path: str | os.PathLike) -> Target:
    """Check and describe an ONNX file or a bundle folder (checksums verified, ONNX safety-checked)."""
    path = Path(path)
    if path.is_dir():
        meta, info = open_bundle(path)
        props = info.metadata
        return Target(path, meta.model_path, "bundle", meta.raw.get("name") or path.name,
                      meta.raw.get("role") or props.get("role"),
                      meta.raw.get("precision") or props.get("precision") or info.precision,
                      meta.model_path.stat().st_size, info.params, meta.input, meta.normalization,
                      meta.labels)
    info = check_model(path)
    props = info.metadata
    return Target(path, path, "onnx", path.stem, props.get("role"), props.get("precision") or info.precision,
                  path.stat().st_size, info.params)


def bench_onnx(path: str | os.PathLike, *, batches: Sequence[int] = (1,), providers=None,
               threads: int | None = None, warmup_s: float = 0.5, warmup_runs: int = 10, min_runs: int = 200,
               min_time_s: float = 2.0, data: tuple[np.ndarray, np.ndarray] | str | os.PathLike | None = None,
               raw: bool | None = None, name: str | None = None, role: str | None = None,
               graph_optimization: str = "all", power: bool = False) -> list[dict]:
    """Time a model at each batch size and (with ``data``) measure its top-1.

    Args:
        path: an ``.onnx`` file (FP32, FP16 or INT8) or a bundle folder.
        batches: batch sizes to time; one row each.
        providers: ORT providers (``"cpu,cuda"`` or a list); the row says which really ran.
        threads: intra-op threads (``None``: ONNX Runtime's default, all cores).
        warmup_s, warmup_runs, min_runs, min_time_s: see :func:`benchmarks.harness.measure`.
        data: ``(x, y)`` model-ready arrays, or a ``.npz`` / ImageFolder path (a bundle's normalization
            is applied to raw data, see :mod:`benchmarks.datasets`).
        raw: whether ``data`` holds raw pixels to normalise with the bundle's ``model.json``. ``None``:
            arrays are model-ready, files follow :mod:`benchmarks.datasets` (raw for a bundle).
        name, role: override the row's name and role.
        graph_optimization: ORT graph optimization level.
        power: sample power/temperature with tegrastats during each timed run (Jetson only).

    Returns:
        One results.json artifact row per batch size.
    """
    target = load_target(path)
    x, y = _resolve_data(target, data, raw)
    session, info, base = _open(target, providers, threads, graph_optimization, batches[0], x)
    base.update(_base_row(target, name, role))
    if x is not None:
        base.update(top1_eval(lambda feed: session.run(None, feed)[0], session.get_inputs(), x, y))
    timing = dict(warmup_s=warmup_s, warmup_runs=warmup_runs, min_runs=min_runs, min_time_s=min_time_s)
    rows = [time_batch(lambda feed: functools.partial(session.run, None, feed), session.get_inputs(), b,
                       target.meta_input, x, base, timing, power) for b in batches]
    for row in rows:
        row["peak_rss_bytes"] = peak_rss_bytes()
    return rows


def _open(target: Target, providers, threads: int | None, graph_optimization: str, batch: int,
          x: np.ndarray | None):
    """Create the session and run it once, timing both (the cold start an app pays)."""
    from edgekd.deploy.runtime.ort import create_session

    rss0, t0 = rss_bytes(), time.perf_counter_ns()
    session, info = create_session(target.model_path, providers, threads, graph_optimization)
    created = time.perf_counter_ns()
    inputs = session.get_inputs()
    fixed = inputs[0].shape[0] if isinstance(inputs[0].shape[0], int) and inputs[0].shape[0] > 0 else None
    feed = make_feed(inputs, fixed or batch, target.meta_input, x)
    t1 = time.perf_counter_ns()
    session.run(None, feed)
    cold = {"session_create": (created - t0) / 1e6, "first_inference": (time.perf_counter_ns() - t1) / 1e6}
    cold["total"] = cold["session_create"] + cold["first_inference"]
    rss1 = rss_bytes()
    base = {"cold_start_ms": cold, "providers": info.active, "provider_fallback": info.fallback,
            "threads": threads, "runtime": f"onnxruntime {_ort_version()}", "graph_optimization": graph_optimization,
            "rss_model_bytes": (rss1 - rss0) if rss0 is not None and rss1 is not None else None}
    return session, info, base


def time_batch(make_call: Callable[[dict], Callable[[], object]], inputs, batch: int, meta_input: dict | None,
               x: np.ndarray | None, base: dict, timing: dict, power: bool = False) -> dict:
    """One row: ``make_call(feed)()`` timed by the harness at ``batch``, or the error that stopped it.

    ``make_call`` binds the feed once (e.g. ``functools.partial(session.run, None, feed)``) so the timed
    call carries no Python wrapper of ours. With ``power``, tegrastats is sampled during the run
    (:mod:`benchmarks.power`) and the row gets ``power``.
    """
    from edgekd.benchmarks.power import TegrastatsSampler

    row = {**base, "batch": int(batch)}
    sampler = TegrastatsSampler() if power else None
    try:
        call = make_call(make_feed(inputs, batch, meta_input, x))
        if sampler:
            with sampler:
                stats = measure(call, **timing)
        else:
            stats = measure(call, **timing)
    except UsageError as exc:
        return {**row, "error": exc.message, "latency_ms": None, "throughput_sps": None}
    except Exception as exc:  # noqa: BLE001 - a failed batch size is a recorded row, not a crash
        return {**row, "error": f"{type(exc).__name__}: {exc}", "latency_ms": None, "throughput_sps": None}
    advice = noise_advice(stats)
    if advice:
        log.warning("%s batch %d: %s", base.get("name"), batch, advice)
    lat = {k: getattr(stats, f"{k}_ms") for k in ("p50", "p90", "p95", "p99", "mean", "std", "min", "max")}
    if sampler:
        row["power"] = sampler.summary(stats.mean_ms, batch)
    return {**row, "latency_ms": lat, "latency": stats.to_dict(), "cv": stats.cv, "noisy": stats.noisy,
            "throughput_sps": batch / (stats.mean_ms / 1e3)}


def make_feed(inputs, batch: int, meta_input: dict | None, x: np.ndarray | None) -> dict[str, np.ndarray]:
    """Inputs for one call at ``batch``: real samples (tiled) for the first input when given, else random."""
    rng = np.random.default_rng(0)
    feed = {}
    for n, spec in enumerate(inputs):
        shape = resolve_shape(spec.name, list(spec.shape), batch, meta_input)
        dtype = ORT_DTYPES.get(spec.type, np.float32)
        if n == 0 and x is not None:
            feed[spec.name] = tile_batch(x, batch).astype(dtype, copy=False)
        elif np.issubdtype(dtype, np.floating):
            feed[spec.name] = rng.standard_normal(shape).astype(dtype)
        else:
            feed[spec.name] = np.zeros(shape, dtype=dtype)
    return feed


def resolve_shape(name: str, shape: list, batch: int, meta_input: dict | None) -> list[int]:
    """The concrete input shape at ``batch``; other symbolic dims come from the bundle's ``model.json``."""
    if isinstance(shape[0], int) and shape[0] > 0 and shape[0] != batch:
        raise UsageError(f"input '{name}' has a fixed batch size of {shape[0]}, cannot run batch {batch}",
                         hint="re-export with a dynamic batch axis or bench --batch " + str(shape[0]))
    out = [batch]
    meta_shape = (meta_input or {}).get("shape") or []
    for i, dim in enumerate(shape[1:], start=1):
        if isinstance(dim, int) and dim > 0:
            out.append(dim)
        elif i < len(meta_shape) and isinstance(meta_shape[i], int):
            out.append(meta_shape[i])
        else:
            raise UsageError(f"input '{name}' dimension {i} is symbolic ({dim!r}) and nothing says its size",
                             hint="bench a bundle (its model.json gives the input shape) or export a fixed size")
    return out


def top1_eval(run: Callable[[dict], np.ndarray], inputs, x: np.ndarray, y: np.ndarray) -> dict:
    """``{"top1", "samples"}``: argmax of the first output against ``y``, in chunks (padded when fixed)."""
    fixed = inputs[0].shape[0] if isinstance(inputs[0].shape[0], int) and inputs[0].shape[0] > 0 else None
    chunk = fixed or EVAL_CHUNK
    preds = []
    for i in range(0, len(x), chunk):
        part = x[i:i + chunk]
        n = len(part)
        if fixed and n < fixed:
            part = np.concatenate([part, np.repeat(part[-1:], fixed - n, axis=0)])
        feed = make_feed(inputs, len(part), None, part)
        preds.append(np.asarray(run(feed)).reshape(len(part), -1)[:n].argmax(axis=1))
    pred = np.concatenate(preds)
    return {"top1": float((pred == y).mean()), "samples": int(len(y))}


def _resolve_data(target: Target, data, raw: bool | None) -> tuple[np.ndarray | None, np.ndarray | None]:
    from edgekd.benchmarks.datasets import load_labelled
    from edgekd.deploy.runtime.bundle import preprocess

    if data is None:
        return None, None
    if not isinstance(data, tuple):
        return load_labelled(data, target.meta_input if raw is not False else None, target.normalization,
                             target.labels)
    x, y = data
    if raw:
        if target.meta_input is None:
            raise UsageError("raw data needs a bundle's normalization", hint="bench the bundle folder instead")
        x = preprocess(x, target.meta_input, target.normalization or {})
    return np.ascontiguousarray(x, dtype=np.float32), np.asarray(y, dtype=np.int64).reshape(-1)


def _base_row(target: Target, name: str | None, role: str | None) -> dict:
    return {"name": name or target.name, "role": role or target.role, "format": "onnx",
            "precision": target.precision, "path": str(target.path), "size_bytes": target.size_bytes,
            "params": target.params, "top1": None, "kind": target.kind}


def _ort_version() -> str:
    from edgekd.deploy.runtime.ort import onnxruntime_version

    return onnxruntime_version() or "?"


def check_path(path: str | os.PathLike) -> Path:
    """Fail early, with a hint, when ``path`` is neither an ONNX file nor a bundle folder."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"model not found: {path}", hint="pass an .onnx file, a bundle folder or an .engine")
    return path
