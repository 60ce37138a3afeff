"""Engine builders, registered by name: ``BUILDERS.get("tensorrt")(onnx_path, engine_path, **settings)``.

Each backend lives in its own module and imports its heavy dependency lazily, so importing
:mod:`edgekd.deploy.engines` works everywhere (the ``trtexec`` command line can be generated without
TensorRT).
"""

from __future__ import annotations

from collections.abc import Callable

from edgekd.deploy.registry import Registry

#: name → builder(onnx_path, engine_path, **settings) -> result with ``path`` and ``to_dict()``
BUILDERS: Registry[Callable] = Registry("engine backend")
BUILDERS.register_lazy("tensorrt", "edgekd.deploy.engines.tensorrt:build_engine")


def register(name: str, builder: Callable) -> Callable:
    """Add an engine builder under ``name``."""
    return BUILDERS.register(name, builder)


def get_builder(name: str) -> Callable:
    """The builder registered as ``name``; a :class:`UsageError` names the known ones otherwise."""
    return BUILDERS.get(name)
