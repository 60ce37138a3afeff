"""Benchmark a TensorRT engine through ``deploy.runtime.trt`` (written separately), with the same harness.

This module holds no TensorRT code: it finds the runner class in ``deploy.runtime.trt`` (``TrtRunner``),
uses it as a context manager with ``infer(dict[str, ndarray]) -> dict[str, ndarray]`` (which synchronises
its CUDA stream, so each timed call includes the GPU work and the copies), and times ``infer`` with
:func:`benchmarks.harness.measure`. Precision, role and TensorRT version come from the engine's sidecar. The input name and shape come from the runner
(``input_specs`` → ``{name: (shape, dtype)}`` or ``input_names``/``input_shapes``) or from the engine's
sidecar JSON (``MODEL.engine.json`` or ``model.json`` beside it, key ``input``).

Example:
    >>> rows = bench_engine("student.engine", batches=(1,))  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from edgekd.benchmarks.harness import peak_rss_bytes
from edgekd.benchmarks.onnx_bench import make_feed, time_batch, top1_eval
from edgekd.deploy.errors import DependencyError, InputFileError, UsageError

RUNNER_NAMES = ("TrtRunner", "TensorrtRunner", "TRTRunner")


def trt_runner_class():
    """The TensorRT runner class, or :class:`DependencyError` saying what is missing."""
    if importlib.util.find_spec("edgekd.deploy.runtime.trt") is None:
        raise DependencyError("the TensorRT runtime (deploy/runtime/trt.py) is not part of this edgekd build",
                              hint="bench the ONNX file or bundle with --runtime ort")
    module = importlib.import_module("edgekd.deploy.runtime.trt")
    for name in RUNNER_NAMES:
        if hasattr(module, name):
            return getattr(module, name)
    raise DependencyError(f"deploy.runtime.trt has no runner class ({', '.join(RUNNER_NAMES)})")


def engine_inputs(runner, engine: Path) -> list[SimpleNamespace]:
    """Input specs shaped like ORT's ``NodeArg`` (``name``, ``shape``, ``type``) for the feed builder."""
    specs = getattr(runner, "input_specs", None)
    if specs:
        return [SimpleNamespace(name=n, shape=list(s[0]), type=_ort_type(s[1])) for n, s in dict(specs).items()]
    names, shapes = getattr(runner, "input_names", None), getattr(runner, "input_shapes", None)
    if names and shapes:
        return [SimpleNamespace(name=n, shape=list(s), type="tensor(float)") for n, s in zip(names, shapes, strict=True)]
    for sidecar in (engine.with_name(engine.name + ".json"), engine.with_suffix(".json"), engine.parent / "model.json"):
        if sidecar.is_file():
            inp = json.loads(sidecar.read_text()).get("input") or {}
            if inp.get("shape"):
                return [SimpleNamespace(name=inp.get("name", "input"), shape=["N", *inp["shape"][1:]],
                                        type=_ort_type(inp.get("dtype", "float32")))]
    raise UsageError(f"cannot tell the input name and shape of {engine}",
                     hint=f"put a sidecar {engine.name}.json with an 'input' object beside it")


def bench_engine(path: str | os.PathLike, *, batches: Sequence[int] = (1,), warmup_s: float = 0.5,
                 warmup_runs: int = 10, min_runs: int = 200, min_time_s: float = 2.0,
                 data: tuple[np.ndarray, np.ndarray] | None = None, name: str | None = None,
                 role: str | None = None, precision: str | None = None, power: bool = False,
                 **_ignored) -> list[dict]:
    """Rows like :func:`benchmarks.onnx_bench.bench_onnx`, for a TensorRT engine file."""
    engine = Path(path)
    if not engine.is_file():
        raise InputFileError(f"engine not found: {engine}")
    cls = trt_runner_class()
    x, y = data if data is not None else (None, None)
    t0 = time.perf_counter_ns()
    with cls(engine) as runner:
        created = time.perf_counter_ns()
        inputs = engine_inputs(runner, engine)
        infer = runner.infer
        feed = make_feed(inputs, batches[0], None, x)
        t1 = time.perf_counter_ns()
        infer(feed)
        cold = {"session_create": (created - t0) / 1e6, "first_inference": (time.perf_counter_ns() - t1) / 1e6}
        cold["total"] = cold["session_create"] + cold["first_inference"]
        side = getattr(runner, "sidecar", None) or {}
        base = {"name": name or engine.stem, "role": role or side.get("role"), "format": "tensorrt",
                "precision": precision or side.get("precision") or "unknown", "path": str(engine),
                "size_bytes": engine.stat().st_size, "params": side.get("params"), "top1": None, "kind": "engine",
                "cold_start_ms": cold, "providers": ["TensorRT"], "runtime": f"tensorrt {side.get('tensorrt', '')}".strip()}
        if x is not None:
            base.update(top1_eval(lambda f: next(iter(infer(f).values())), inputs, x, y))
        timing = dict(warmup_s=warmup_s, warmup_runs=warmup_runs, min_runs=min_runs, min_time_s=min_time_s)
        rows = [time_batch(lambda f: functools.partial(infer, f), inputs, b, None, x, base, timing, power)
                for b in batches]
    for row in rows:
        row["peak_rss_bytes"] = peak_rss_bytes()
    return rows


def _ort_type(dtype) -> str:
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = str(dtype)
    return {"float32": "tensor(float)", "float16": "tensor(float16)", "int8": "tensor(int8)",
            "uint8": "tensor(uint8)", "int32": "tensor(int32)", "int64": "tensor(int64)"}.get(name, "tensor(float)")
