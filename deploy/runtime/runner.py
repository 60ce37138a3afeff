"""One runner protocol for every runtime — ONNX Runtime, TensorRT, PyTorch — Polygraphy-style.

A runner is a context manager that runs one model::

    with OnnxrtRunner("student.onnx", threads=1) as runner:
        outputs = runner.infer({"input": x})          # dict[str, ndarray] -> dict[str, ndarray]
        call = runner.bind({"input": x})              # the cheapest repeated call, for timing
        runner.inputs()                               # [TensorSpec(name, dtype, shape)]

Parity checks, accuracy evaluation, ``edgekd bench`` and the pipeline's benchmark stage all go through this
protocol, so a figure means the same whichever runtime produced it. Imports numpy only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from edgekd.deploy.errors import UsageError, VerificationError

#: ONNX Runtime's type strings → numpy dtypes.
ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
              "tensor(uint8)": "uint8", "tensor(int8)": "int8", "tensor(int32)": "int32", "tensor(int64)": "int64",
              "tensor(bool)": "bool"}


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: ``shape`` holds ints for fixed axes and a name (or ``None``) for dynamic ones."""

    name: str
    dtype: str
    shape: tuple[int | str | None, ...]

    @property
    def fixed_batch(self) -> int | None:
        first = self.shape[0] if self.shape else None
        return first if isinstance(first, int) and first > 0 else None


@dataclass(frozen=True)
class RunnerInfo:
    """What really ran: the runtime and its version, the providers active (and any fallback), threads."""

    runtime: str
    providers: tuple[str, ...] = ()
    fallback: tuple[str, ...] = ()
    threads: int | None = None
    device: str = "cpu"
    extra: dict = field(default_factory=dict)


@runtime_checkable
class Runner(Protocol):
    """The protocol. Implementations: :class:`~edgekd.deploy.runtime.ort.OnnxrtRunner`,
    :class:`~edgekd.deploy.runtime.trt.TrtRunner`, :class:`edgekd.deploy.torch_runner.TorchRunner`."""

    def __enter__(self) -> Runner: ...

    def __exit__(self, *exc) -> None: ...

    def inputs(self) -> list[TensorSpec]: ...

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def bind(self, feed: dict[str, np.ndarray]) -> Callable[[], object]: ...

    def info(self) -> RunnerInfo: ...


def resolve_shape(spec: TensorSpec, batch: int, sizes: dict[str, int] | None = None) -> list[int]:
    """The concrete shape of ``spec`` at ``batch``; other dynamic axes come from ``sizes`` (axis name → size)."""
    if spec.fixed_batch and spec.fixed_batch != batch:
        raise UsageError(f"input '{spec.name}' has a fixed batch size of {spec.fixed_batch}, cannot run batch "
                         f"{batch}", hint=f"re-export with a dynamic batch axis, or use batch {spec.fixed_batch}")
    out = [batch]
    for i, dim in enumerate(spec.shape[1:], start=1):
        if isinstance(dim, int) and dim > 0:
            out.append(dim)
        elif sizes and str(dim) in sizes:
            out.append(int(sizes[str(dim)]))
        else:
            raise UsageError(f"input '{spec.name}' dimension {i} is dynamic ({dim!r}) and nothing says its size",
                             hint="bench a bundle (its model.json gives the input shape) or export a fixed size")
    return out


def make_feed(specs: list[TensorSpec], batch: int, data: dict[str, np.ndarray] | None = None,
              sizes: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """Inputs for one call at ``batch``: real samples from ``data`` (tiled to the batch) where given, else
    seeded random values (floats) or zeros (integers)."""
    rng = np.random.default_rng(0)
    feed = {}
    for spec in specs:
        if data is not None and spec.name in data:
            feed[spec.name] = tile_batch(np.asarray(data[spec.name]), batch).astype(spec.dtype, copy=False)
            continue
        shape = resolve_shape(spec, batch, sizes)
        if np.issubdtype(np.dtype(spec.dtype), np.floating):
            feed[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        else:
            feed[spec.name] = np.zeros(shape, dtype=spec.dtype)
    return feed


def tile_batch(x: np.ndarray, n: int) -> np.ndarray:
    """``n`` samples from ``x``, repeating it as needed (a batch of real data of any size)."""
    if len(x) == 0:
        raise UsageError("no samples to build a batch from")
    reps = -(-n // len(x))
    return np.ascontiguousarray(np.concatenate([x] * reps)[:n])


def chunks(data: dict[str, np.ndarray], size: int) -> Iterator[dict[str, np.ndarray]]:
    """Split a feed of equally long arrays into feeds of at most ``size`` samples."""
    n = len(next(iter(data.values())))
    for start in range(0, n, size):
        yield {k: np.ascontiguousarray(v[start:start + size]) for k, v in data.items()}


def run_all(runner: Runner, data: dict[str, np.ndarray], chunk: int = 256) -> np.ndarray:
    """The first output of ``runner`` over every sample of ``data``, in chunks (padded for a fixed batch)."""
    fixed = next((s.fixed_batch for s in runner.inputs() if s.name in data), None)
    size = fixed or chunk
    outs = []
    for part in chunks(data, size):
        n = len(next(iter(part.values())))
        if fixed and n < fixed:
            part = {k: tile_batch(v, fixed) for k, v in part.items()}
        out = next(iter(runner.infer(part).values()))
        outs.append(np.asarray(out)[:n])
    return np.concatenate(outs)


def top1(runner: Runner, data: dict[str, np.ndarray], labels: np.ndarray, chunk: int = 256) -> float:
    """Top-1 accuracy of a classifier runner on ``(data, labels)``.

    Raises:
        UsageError: no samples. VerificationError: non-finite outputs (no answer computed from garbage).
    """
    labels = np.asarray(labels).reshape(-1)
    if len(labels) == 0:
        raise UsageError("top-1 on an empty split: there is nothing to measure")
    logits = run_all(runner, data, chunk)
    if not np.isfinite(logits).all():
        raise VerificationError("the model produced NaN/inf outputs: refusing to report an accuracy",
                         hint="check the inputs (normalisation) and the model (overflow at this precision)")
    return float((logits.reshape(len(labels), -1).argmax(axis=1) == labels).mean())
