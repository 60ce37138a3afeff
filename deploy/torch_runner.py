"""The :class:`~edgekd.deploy.runtime.runner.Runner` for PyTorch models, so the teacher and student in eager
PyTorch are measured by the same harness and parity code as their ONNX and TensorRT exports.

torch is imported lazily (``import edgekd.deploy`` stays torch-free).

Example:
    >>> with TorchRunner(model, [TensorSpec("input", "float32", ("batch", 1, 8, 8))], threads=1) as r:  # doctest: +SKIP
    ...     logits = r.infer({"input": x})["logits"]
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np

from edgekd.deploy.runtime.runner import RunnerInfo, TensorSpec


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with ``torch.set_num_threads(n)`` and restore the previous count afterwards (``None``: unchanged)."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


class TorchRunner:
    """Run an ``nn.Module`` in eval mode under ``torch.inference_mode()``.

    Args:
        model: the module; its inputs are fed positionally in the order of ``inputs``.
        inputs: the input specs (names and dtypes decide how numpy arrays become tensors).
        output_names: names for the module's outputs (one tensor, or a tuple in this order).
        threads: intra-op threads while the runner is open (restored on exit).
        device: where the model runs (``"cpu"``, ``"cuda"``); outputs come back as numpy on the host.
    """

    def __init__(self, model, inputs: Sequence[TensorSpec], output_names: Sequence[str] = ("logits",),
                 threads: int | None = None, device: str = "cpu"):
        self.model, self._inputs, self.output_names = model, list(inputs), list(output_names)
        self.threads, self.device = threads, device
        self._threads = None

    def __enter__(self) -> TorchRunner:
        import torch

        self.torch = torch
        self._threads = torch_threads(self.threads)
        self._threads.__enter__()
        self._was_training = self.model.training
        self.model.eval().to(self.device)
        return self

    def __exit__(self, *exc) -> None:
        self.model.train(self._was_training)
        if self._threads is not None:
            self._threads.__exit__(*exc)
            self._threads = None

    def inputs(self) -> list[TensorSpec]:
        return list(self._inputs)

    def _tensors(self, feed: dict[str, np.ndarray]) -> list:
        return [self.torch.from_numpy(np.ascontiguousarray(feed[s.name])).to(self.device) for s in self._inputs]

    def _sync(self) -> None:
        if self.device.startswith("cuda"):
            self.torch.cuda.synchronize()

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self.torch.inference_mode():
            out = self.model(*self._tensors(feed))
        outs = out if isinstance(out, tuple | list) else (out,)
        return {n: o.float().cpu().numpy() for n, o in zip(self.output_names, outs, strict=False)}

    def bind(self, feed: dict[str, np.ndarray]):
        """A forward pass on tensors prepared once (and, on a GPU, synchronised)."""
        tensors, model, torch, sync = self._tensors(feed), self.model, self.torch, self._sync

        def call():
            with torch.inference_mode():
                out = model(*tensors)
            sync()
            return out

        return call

    def info(self) -> RunnerInfo:
        return RunnerInfo(f"pytorch {self.torch.__version__.split('+')[0]}", (self.device,), (), self.threads,
                          self.device.split(":")[0])
