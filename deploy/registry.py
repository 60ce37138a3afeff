"""One registry helper for everything edgekd looks up by name: models, data sources, KD losses, quantization
presets and modes, exporters, engine builders, runtimes, pipeline stages.

Entries are registered directly (``@REG.register("name")``) or lazily as ``"module:attribute"`` so that a
registry's *names* are known without importing the heavy module behind them — recipes are validated against
them before torch is imported. Unknown names fail with the valid ones and a "did you mean".

Standard library only.

Example:
    >>> SOURCES = Registry("data.source")
    >>> @SOURCES.register("digits")
    ... def digits(cfg): ...
    >>> SOURCES.register_lazy("text", "edgekd.text.data:load_text")
    >>> sorted(SOURCES)
    ['digits', 'text']
    >>> SOURCES.get("digts")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    edgekd.deploy.errors.UsageError: unknown data.source 'digts' (did you mean 'digits'?) ...
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from edgekd.deploy.errors import UsageError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name → object, with lazy ``module:attribute`` entries and helpful errors.

    Args:
        kind: what the names are, as a user writes it (``"distill.method"``); used in errors.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T | str] = {}

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Register ``obj`` as ``name``; without ``obj``, a decorator."""
        if obj is not None:
            self._items[name] = obj
            return obj

        def deco(o: T) -> T:
            self._items[name] = o
            return o

        return deco

    def register_lazy(self, name: str, target: str) -> None:
        """Register ``"package.module:attribute"``, imported on first :meth:`get`."""
        if ":" not in target:
            raise ValueError(f"lazy registry target must be 'module:attribute', got {target!r}")
        self._items[name] = target

    def get(self, name: str) -> T:
        """The object registered as ``name`` (imported now if it was registered lazily)."""
        if name not in self._items:
            raise UsageError(f"unknown {self.kind} {name!r}{self.suggest(name)}",
                             hint=f"valid: {', '.join(self.names())}")
        item = self._items[name]
        if isinstance(item, str):
            module, _, attr = item.partition(":")
            item = getattr(importlib.import_module(module), attr)
            self._items[name] = item
        return item

    def suggest(self, name: str) -> str:
        close = difflib.get_close_matches(str(name), self.names(), n=1, cutoff=0.6)
        return f" (did you mean {close[0]!r}?)" if close else ""

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
