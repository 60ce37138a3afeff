"""A recipe that names a factory (``package.module:function``) is code: this is the one place that resolves it.

Rules (README, "Promises"):

* a factory runs with your privileges — only use recipes you trust, as you would a Python script;
* factories from the Python standard library or builtins are always refused (``os:system``, ``subprocess:run``,
  ``builtins:eval`` … are never a model or a dataset);
* ``--no-factories`` (or ``EDGEKD_NO_FACTORIES=1``) refuses every factory: edgekd then runs only its own
  registered models and data sources — the switch for recipes from strangers.

Refusals are :class:`~edgekd.deploy.errors.SecurityError` (exit 4), raised before anything is imported.

Example:
    >>> resolve("os:system", "data.source")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    edgekd.deploy.errors.SecurityError: data.source 'os:system' names a function of the Python standard library...
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable

from edgekd.deploy.errors import SecurityError, UsageError

ENV_SWITCH = "EDGEKD_NO_FACTORIES"
_FORBIDDEN = set(sys.stdlib_module_names) | {"builtins", "__builtin__", "__main__", "importlib", "runpy", "site"}


def factories_allowed() -> bool:
    return os.environ.get(ENV_SWITCH, "").strip().lower() not in ("1", "true", "yes", "on")


def forbid_factories() -> None:
    """What ``--no-factories`` does: refuse every factory for the rest of this process (and its children)."""
    os.environ[ENV_SWITCH] = "1"


def check(spec: str, what: str) -> tuple[str, str]:
    """Refuse ``spec`` by the rules above without importing anything; return ``(module, attribute)``."""
    module, _, attr = spec.partition(":")
    if not module or not attr or not all(p.isidentifier() for p in (*module.split("."), *attr.split("."))):
        raise UsageError(f"{what} {spec!r} is not a 'package.module:function' name")
    top = module.split(".")[0]
    if top in _FORBIDDEN or attr.split(".")[0].startswith("__"):
        raise SecurityError(f"{what} {spec!r} names a function of the Python standard library or builtins, "
                            "not a model or data factory: refused",
                            hint="a factory must come from your own package (see README, Promises)")
    if not factories_allowed():
        raise SecurityError(f"{what} {spec!r} is a factory (code), and factories are switched off "
                            f"(--no-factories / {ENV_SWITCH}=1)",
                            hint="use edgekd's registered models and data sources, or drop --no-factories for "
                                 "a recipe you trust")
    return module, attr


def resolve(spec: str, what: str) -> Callable:
    """Import and return the callable ``spec`` names, after :func:`check`."""
    module_name, attr = check(spec, what)
    try:
        obj = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"{what} {spec!r}: cannot import module {module_name!r}: {exc}",
                         hint="install the package or add its folder to PYTHONPATH") from None
    for part in attr.split("."):
        obj = getattr(obj, part, None)
    if not callable(obj):
        raise UsageError(f"{what} {spec!r}: module {module_name!r} has no callable {attr!r}")
    return obj
