"""Engine builders, registered by name: ``BUILDERS["tensorrt"](onnx_path, engine_path, **settings)``.

Each backend lives in its own module and imports its heavy dependency lazily, so importing
:mod:`deploy.engines` works everywhere (the ``trtexec`` command line can be generated without TensorRT).
"""

from __future__ import annotations

from collections.abc import Callable


def _tensorrt(*args, **kwargs):
    from edgekd.deploy.engines.tensorrt import build_engine

    return build_engine(*args, **kwargs)


#: name → builder(onnx_path, engine_path, **settings) -> result with ``path`` and ``to_dict()``
BUILDERS: dict[str, Callable] = {"tensorrt": _tensorrt}


def register(name: str, builder: Callable) -> Callable:
    """Add an engine builder under ``name``."""
    BUILDERS[name] = builder
    return builder


def get_builder(name: str) -> Callable:
    """The builder registered as ``name``; a :class:`UsageError` names the known ones otherwise."""
    from edgekd.deploy.errors import UsageError

    if name not in BUILDERS:
        raise UsageError(f"unknown engine backend '{name}'", hint=f"use one of {sorted(BUILDERS)}")
    return BUILDERS[name]
