"""Feature taps: read intermediate activations with forward hooks, never by editing the model.

FitNets hints and attention transfer compare a student layer's output with a teacher layer's output.
:class:`FeatureTaps` registers a forward hook on each named submodule for the span of one ``with`` block,
records what the layer returned, and removes the hooks on exit, so nothing stays attached to a model
that is later exported. Layer names are the dotted names of ``model.named_modules()`` (``layer3``,
``features.2``...). Feature methods need the teacher to run on every batch: features cannot come from a
logit cache.

Example:
    >>> with FeatureTaps(model, ["layer2", "layer3"]) as taps:   # doctest: +SKIP
    ...     logits = model(x)
    >>> f2, f3 = taps.outputs()
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import torch
import torch.nn as nn

from edgekd.deploy.errors import UsageError


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside a DistributedDataParallel (or DataParallel) wrapper."""
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def find_layers(model: nn.Module, names: Sequence[str], role: str = "model") -> list[nn.Module]:
    """Look up submodules by dotted name, failing with the close matches when a name is wrong.

    Raises:
        UsageError: a name is not a submodule of ``model``.
    """
    modules = dict(unwrap(model).named_modules())
    found = []
    for name in names:
        if name not in modules or name == "":
            close = difflib.get_close_matches(name, [n for n in modules if n], n=3, cutoff=0.5)
            hint = f"did you mean {close}?" if close else "list them with [n for n, _ in model.named_modules()]"
            raise UsageError(f"{role} has no layer '{name}' to take features from", hint=hint)
        found.append(modules[name])
    return found


class FeatureTaps:
    """Record the outputs of named layers during the forward passes inside a ``with`` block."""

    def __init__(self, model: nn.Module, layers: Sequence[str], role: str = "model"):
        self.layers, self.role = list(layers), role
        self._modules = find_layers(model, self.layers, role)
        self._handles: list = []
        self.features: dict[str, torch.Tensor] = {}

    def __enter__(self) -> FeatureTaps:
        self.features.clear()
        for name, module in zip(self.layers, self._modules, strict=True):
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, name: str):
        def record(module, inputs, output) -> None:
            self.features[name] = output[0] if isinstance(output, (tuple, list)) else output
        return record

    def outputs(self) -> list[torch.Tensor]:
        """The recorded outputs, in the order the layers were named.

        Raises:
            UsageError: a named layer did not run during the forward pass.
        """
        missing = [n for n in self.layers if n not in self.features]
        if missing:
            raise UsageError(f"{self.role} layer(s) {missing} did not run in the forward pass",
                             hint="name layers that every forward pass goes through")
        return [self.features[n] for n in self.layers]


@torch.no_grad()
def feature_shapes(model: nn.Module, layers: Sequence[str], input_shape: Sequence[int],
                   role: str = "model", example: Sequence[torch.Tensor] | None = None) -> list[torch.Size]:
    """Shapes (batch of 2) of the named layers' outputs for an input of ``input_shape`` (C, H, W), or for
    ``example`` — real model arguments (a text model's token ids and mask).

    Runs in eval mode, so BatchNorm statistics are not touched, and restores the model's mode after.
    """
    inner = unwrap(model)
    device = next(inner.parameters()).device
    was_training = inner.training
    inner.eval()
    try:
        with FeatureTaps(inner, layers, role) as taps:
            if example is not None:
                inner(*(t.to(device) for t in example))
            else:
                inner(torch.zeros(2, *input_shape, device=device))
        return [f.shape for f in taps.outputs()]
    finally:
        inner.train(was_training)
