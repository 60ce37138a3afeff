"""The model zoo: models are registered by name and created by :func:`create_model`.

Names:
* ``edgekd:cnn`` — edgekd's small CNN for small inputs (``channels``, ``hidden``, ``dropout``);
* ``torchvision:<name>`` — any torchvision classification model, e.g. ``torchvision:resnet18``, with its
  classifier resized to ``num_classes`` and its first conv adapted to the input channels. ``weights:
  DEFAULT`` (in the recipe) downloads pretrained weights on the user's machine;
* ``edgekd:bilstm``, ``edgekd:textcnn``, ``edgekd:text_transformer`` — text classifiers taking
  ``(input_ids, attention_mask)`` (:mod:`edgekd.textmodels`; ``vocab_size`` comes from the data's tokenizer);
* ``hf:<local folder>`` — a Hugging Face ``AutoModelForSequenceClassification`` read offline from a folder,
  wrapped to take ``(input_ids, attention_mask)`` and return logits;
* ``package.module:function`` — a user factory, called with the recipe's ``kwargs`` plus ``num_classes``
  and ``in_channels`` when it accepts them.

Example:
    >>> model = create_model("edgekd:cnn", num_classes=10, in_channels=1, input_size=8,
    ...                      channels=[8, 16, 32], hidden=32)  # doctest: +SKIP
"""

from __future__ import annotations

import inspect

from edgekd.deploy.errors import UsageError
from edgekd.deploy.registry import Registry

MODELS: Registry = Registry("model")
#: ``scheme:argument`` model sources → ``builder(argument, num_classes, in_channels, weights, **kwargs)``
MODEL_SOURCES: Registry = Registry("model source")
for _name in ("bilstm", "textcnn", "text_transformer"):
    MODELS.register_lazy(f"edgekd:{_name}", f"edgekd.textmodels:{_name}")
MODEL_SOURCES.register_lazy("hf", "edgekd.textmodels:hf_model")


def available() -> list[str]:
    return MODELS.names() + [f"{s}:<name>" for s in MODEL_SOURCES] + ["package.module:function"]


@MODELS.register("edgekd:cnn")
def cnn(num_classes: int, in_channels: int = 1, input_size: int = 8, channels=(32, 64, 128),
        hidden: int = 128, dropout: float = 0.0):
    """Conv-BN-ReLU blocks (a 2×2 max-pool after each but the first), then an MLP head.

    Feature taps for FitNets/AT: ``features.0`` … ``features.N`` (one per block).
    """
    import torch.nn as nn

    layers, c, size = [], in_channels, input_size
    for i, out in enumerate(channels):
        block = [nn.Conv2d(c, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
        if i > 0 and size >= 2:
            block.append(nn.MaxPool2d(2))
            size //= 2
        layers.append(nn.Sequential(*block))
        c = out
    model = nn.Sequential()
    model.add_module("features", nn.Sequential(*layers))
    model.add_module("flatten", nn.Flatten())
    model.add_module("head", nn.Sequential(nn.Linear(c * size * size, hidden), nn.ReLU(inplace=True),
                                           nn.Dropout(dropout), nn.Linear(hidden, num_classes)))
    return model


@MODEL_SOURCES.register("torchvision")
def _torchvision(name: str, num_classes: int, in_channels: int, weights: str | None = None, **kwargs):
    import torchvision

    try:
        builder = torchvision.models.get_model_builder(name)
    except ValueError:
        known = torchvision.models.list_models(module=torchvision.models)
        import difflib

        close = difflib.get_close_matches(name, known, n=3)
        raise UsageError(f"unknown torchvision model '{name}'",
                         hint=f"did you mean {close}?" if close else "see torchvision.models.list_models()"
                         ) from None
    if weights:
        model = builder(weights=weights, **kwargs)  # downloads on the user's machine
        _resize_classifier(model, num_classes)
    else:
        model = builder(weights=None, num_classes=num_classes, **kwargs)
    if in_channels != 3:
        _adapt_first_conv(model, in_channels, pretrained=bool(weights))
    return model


def _resize_classifier(model, num_classes: int) -> None:
    import torch.nn as nn

    for attr in ("fc", "classifier", "head", "heads"):
        mod = getattr(model, attr, None)
        if isinstance(mod, nn.Linear):
            setattr(model, attr, nn.Linear(mod.in_features, num_classes))
            return
        if isinstance(mod, nn.Sequential):
            for i in range(len(mod) - 1, -1, -1):
                if isinstance(mod[i], nn.Linear):
                    mod[i] = nn.Linear(mod[i].in_features, num_classes)
                    return
    raise UsageError("could not find the classifier layer to resize to num_classes")


def _adapt_first_conv(model, in_channels: int, pretrained: bool = False) -> None:
    """Replace the first conv with one taking ``in_channels``; ``pretrained`` RGB filters are kept
    (summed for 1 channel, tiled and rescaled otherwise, as timm does)."""
    import torch
    import torch.nn as nn

    for name, mod in model.named_modules():
        if isinstance(mod, nn.Conv2d):
            groups = 1 if mod.groups == 1 else in_channels
            new = nn.Conv2d(in_channels, mod.out_channels, mod.kernel_size, mod.stride, mod.padding,
                            mod.dilation, groups, mod.bias is not None)
            if pretrained and groups == 1:
                with torch.no_grad():
                    w = mod.weight
                    if in_channels == 1:
                        new.weight.copy_(w.sum(1, keepdim=True))
                    else:
                        reps = -(-in_channels // w.shape[1])
                        new.weight.copy_(w.repeat(1, reps, 1, 1)[:, :in_channels] * (w.shape[1] / in_channels))
                    if mod.bias is not None:
                        new.bias.copy_(mod.bias)
            parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            setattr(parent, name.rsplit(".", 1)[-1], new)
            return


def create_model(name: str, num_classes: int, in_channels: int = 3, input_size: int = 32,
                 weights: str | None = None, **kwargs):
    """Create a model by registered name (:data:`MODELS`), ``scheme:argument`` (:data:`MODEL_SOURCES`, e.g.
    ``torchvision:resnet18``) or ``package.module:function`` (a user factory: code, see
    :mod:`edgekd.factories`)."""
    if name in MODELS:
        return MODELS.get(name)(num_classes=num_classes, in_channels=in_channels, input_size=input_size,
                                **kwargs)
    scheme, colon, arg = name.partition(":")
    if scheme in MODEL_SOURCES:
        return MODEL_SOURCES.get(scheme)(arg, num_classes, in_channels, weights, **kwargs)
    if colon and scheme != "edgekd":
        from edgekd import factories

        fn = factories.resolve(name, "model")
        params = inspect.signature(fn).parameters
        extra = {k: v for k, v in (("num_classes", num_classes), ("in_channels", in_channels),
                                   ("input_size", input_size)) if k in params and k not in kwargs}
        return _call_factory(name, fn, {**kwargs, **extra})
    raise UsageError(f"unknown model {name!r}{MODELS.suggest(name)}", hint=f"use one of {available()}")


def _call_factory(name: str, fn, kwargs: dict):
    """Call a user's model factory, checking first that it accepts the recipe's arguments and then that it
    returned a ``torch.nn.Module``: either mistake is the recipe's (exit 2), not an internal error."""
    import torch

    try:
        inspect.signature(fn).bind(**kwargs)
    except TypeError as exc:
        raise UsageError(f"model factory {name!r} does not accept the recipe's arguments {sorted(kwargs)}: {exc}",
                         hint="make the factory accept them (e.g. add **kwargs), or change the section's "
                              "kwargs") from None
    model = fn(**kwargs)
    if not isinstance(model, torch.nn.Module):
        raise UsageError(f"model factory {name!r} returned {type(model).__name__}, not a torch.nn.Module",
                         hint="the factory must return the model (an nn.Module instance)")
    return model


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def model_from_config(cfg, num_classes: int, input_shape, data_kwargs: dict | None = None) -> object:
    """Create the model a recipe's ``teacher``/``student`` section describes and load its ``checkpoint``.

    ``input_shape`` is the data's (C, H, W) — ``(max_length,)`` for text; ``data_kwargs`` what the data fixes
    for a model (a text vocabulary's ``vocab_size``, ``pad_id``) is passed where the model takes it and the
    recipe does not set it. Checkpoints are safetensors or weights-only PyTorch files;
    missing/unexpected keys and shape mismatches fail with the first offenders named.

    Example:
        >>> student = model_from_config(recipe.student, splits.num_classes, splits.input_shape)  # doctest: +SKIP
    """
    from edgekd.checkpoint import load_weights

    channels, size = int(input_shape[0]), int(input_shape[-1])
    kwargs = {**_accepted(cfg.model, {k: v for k, v in (data_kwargs or {}).items() if k not in cfg.kwargs}),
              **cfg.kwargs}
    model = create_model(cfg.model, num_classes=num_classes, in_channels=channels, input_size=size,
                         weights=cfg.weights, **kwargs)
    if cfg.checkpoint:
        load_weights(model, cfg.checkpoint)
    return model


def _accepted(name: str, extra: dict) -> dict:
    """The items of ``extra`` that the zoo model ``name`` takes as keyword arguments (none for others)."""
    if not extra or name not in MODELS:
        return {}
    params = inspect.signature(MODELS.get(name)).parameters
    return {k: v for k, v in extra.items() if k in params}


def check_models_fit(models: dict, splits) -> None:
    """Run one zero batch of the data's input shape through each model and check its output width.

    Call it before any training: a model built for other channels, sizes or class counts fails here with
    the model named and expected vs actual, instead of after hours of teacher training.

    Raises:
        UsageError: a model rejects the input shape or does not output ``splits.num_classes`` logits.
    """
    import torch

    shape = tuple(splits.input_shape)
    example = splits.example("train", 2)
    for role, model in models.items():
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                out = model(*(t.to(device) for t in example))
        except (RuntimeError, IndexError) as exc:  # IndexError: a token id or position beyond an embedding table
            vocab = splits.model_kwargs.get("vocab_size", "?")
            hint = (f"build the {role} for token ids below the tokenizer's vocabulary size ({vocab}) and at least "
                    f"data.max_length ({shape[0]}) positions, or lower data.max_length; an hf: model needs its own "
                    "tokenizer (data.tokenizer: its folder)"
                    if len(shape) == 1 else
                    f"build the {role} for {shape[0]} channel(s) at {shape[1]}x{shape[2]}, or resize the data with "
                    "data.transforms.resize/crop")
            raise UsageError(f"{role} model cannot take the data's input (N, {', '.join(map(str, shape))}): "
                             f"{str(exc).splitlines()[0][:300]}", hint=hint) from None
        finally:
            model.train(was_training)
        _check_output(role, out, splits.num_classes)


def _check_output(role: str, out, num_classes: int) -> None:
    if isinstance(out, (tuple, list)) or not hasattr(out, "shape"):
        raise UsageError(f"{role} model returns a {type(out).__name__}, expected a logits tensor",
                         hint="wrap it so forward() returns (N, num_classes) logits")
    if out.dim() != 2 or out.shape[1] != num_classes:
        raise UsageError(f"{role} model outputs shape {tuple(out.shape)}, expected (N, {num_classes}): the data "
                         f"has {num_classes} classes", hint="set num_classes for the model (torchvision and "
                                                            "edgekd models take it from the data)")
