"""Typed documents: frozen dataclasses ⇄ JSON, parsed strictly, with a JSON Schema generated from the same
classes.

Every file edgekd writes for another program to read — ``results.json``, ``edgekd bench --json``, a bundle's
``model.json``, a run's stage records — is a dataclass here, written with :func:`to_json` and read back with
:func:`from_json`, which reports *every* problem at once (unknown keys, missing keys, wrong types, values not
among the allowed ones). :func:`json_schema` turns the same class into a JSON Schema (draft 2020-12) that
``docs/`` publishes, so the format has one definition.

Supported field types: ``bool``, ``int``, ``float``, ``str``, ``None`` unions, ``Literal[...]``,
``list[T]``, ``tuple[T, ...]``, ``dict[str, T]``, ``Any`` and nested dataclasses. Numbers must be finite.
Field metadata adds checks: ``min``/``max`` (inclusive bounds), ``above`` (exclusive lower bound), ``choices``
(allowed values) and ``registry`` (``"module:attribute"`` of a :class:`~edgekd.deploy.registry.Registry` whose
names are allowed, plus ``extra``). With ``coerce=True`` (recipes written by people) a YAML 1.1 boolean read for
a string field is taken as ``"on"``/``"off"``, a whole float as an int, and a scalar as a one-item list.
Standard library only.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Point:
    ...     x: int
    ...     label: str | None = None
    >>> from_json(Point, {"x": 1})
    Point(x=1, label=None)
    >>> from_json(Point, {"x": "1", "colour": 2})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    edgekd.deploy.typed.DocumentError: document: 2 problem(s): x: expected an integer, got '1'; unknown key 'colour' ...
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from pathlib import PurePath
from typing import Any, Literal

from edgekd.deploy.errors import InputFileError

_NONE = type(None)


class DocumentError(InputFileError):
    """A document does not match its dataclass; ``problems`` lists each mismatch."""

    def __init__(self, problems: list[str], source: str = "document", hint: str | None = None):
        self.problems = list(problems)
        shown = "; ".join(self.problems[:8]) + (f"; … ({len(self.problems) - 8} more)" if len(problems) > 8 else "")
        super().__init__(f"{source}: {len(self.problems)} problem(s): {shown}", hint)


# ------------------------------------------------------------------------------------------------ writing
def to_json(obj: Any) -> Any:
    """A dataclass (or any nesting of them, lists, tuples, dicts) as plain JSON values; NaN/inf become None."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_json(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_json(v) for v in obj]
    if isinstance(obj, PurePath):
        return obj.as_posix()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return to_json(obj.item())
    if hasattr(obj, "tolist"):
        return to_json(obj.tolist())
    return obj


# ------------------------------------------------------------------------------------------------ reading
def from_json(cls: type, data: Any, source: str = "document", hint: str | None = None, *, coerce: bool = False,
              error: type = DocumentError):
    """Build ``cls`` from JSON values, checking every field; raises ``error(problems, source, hint)`` listing
    every problem found."""
    problems: list[str] = []
    out = _Converter(coerce).convert(data, cls, "", problems)
    if problems:
        raise error(problems, source, hint)
    return out


def short(value: Any, limit: int = 60) -> str:
    """A value quoted in an error message, truncated (a document can hold huge values)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _where(path: str) -> str:
    return path or "(top level)"


def registry_names(path: str) -> list[str]:
    """The names of the registry at ``"module:attribute"`` (imported on demand)."""
    import importlib

    module, _, attr = path.partition(":")
    return list(getattr(importlib.import_module(module), attr))


_SCALARS = {bool: (lambda v: isinstance(v, bool), "true/false"),
            int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
            float: (lambda v: isinstance(v, int | float) and not isinstance(v, bool), "a number"),
            str: (lambda v: isinstance(v, str), "a string"),
            _NONE: (lambda v: v is None, "null")}


class _Converter:
    def __init__(self, coerce: bool):
        self.coerce = coerce

    def convert(self, value: Any, hint: Any, path: str, problems: list[str]) -> Any:
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if hint is Any:
            return value
        if origin in (typing.Union, types.UnionType):
            return self._union(value, args, path, problems)
        if origin is Literal:
            if value not in args:
                problems.append(f"{_where(path)}: {short(value)} is not one of {list(args)}")
            return value
        if dataclasses.is_dataclass(hint):
            return self._dataclass(value, hint, path, problems)
        if origin in (list, tuple) or hint in (list, tuple):
            return self._sequence(value, origin or hint, args, path, problems)
        if origin is dict or hint is dict:
            return self._mapping(value, args, path, problems)
        return self._scalar(value, hint, path, problems)

    def _union(self, value, args, path: str, problems: list[str]):
        if value is None and _NONE in args:
            return None
        options = [a for a in args if a is not _NONE]
        if len(options) == 1:
            return self.convert(value, options[0], path, problems)
        tagged = _by_kind(value, options)
        if tagged is not None:  # a `kind` names the option: report that option's own problems
            return self.convert(value, tagged, path, problems)
        for option in options:  # first that fits without problems
            trial: list[str] = []
            out = self.convert(value, option, path, trial)
            if not trial:
                return out
        problems.append(f"{_where(path)}: {short(value)} fits none of {[_name(o) for o in options]}")
        return None

    def _mapping(self, value, args, path: str, problems: list[str]):
        if not isinstance(value, dict):
            problems.append(f"{_where(path)}: expected a mapping, got {type(value).__name__} {short(value)}")
            return {}
        item = args[1] if len(args) == 2 else Any
        return {str(k): self.convert(v, item, f"{path}.{k}" if path else str(k), problems) for k, v in value.items()}

    def _scalar(self, value: Any, hint: Any, path: str, problems: list[str]) -> Any:
        if self.coerce:
            if hint is str and isinstance(value, bool):  # YAML 1.1 reads off/on/no/yes as booleans
                return "on" if value else "off"
            if hint is int and isinstance(value, float) and value.is_integer():
                return int(value)
        if hint not in _SCALARS:
            return value
        ok, what = _SCALARS[hint]
        if not ok(value):
            problems.append(f"{_where(path)}: expected {what}, got {short(value)}")
            return value
        if hint in (int, float) and not math.isfinite(value):
            problems.append(f"{_where(path)}: expected a finite number, got {value}")
            return value
        return float(value) if hint is float else value

    def _sequence(self, value, origin, args, path: str, problems: list[str]):
        if self.coerce and isinstance(value, str | int | float) and args and args[0] in (str, int, float):
            value = [value]
        if not isinstance(value, list | tuple):
            problems.append(f"{_where(path)}: expected a list, got {type(value).__name__}")
            return () if origin is tuple else []
        if origin is tuple and args and args[-1] is not Ellipsis:  # fixed length
            if len(value) != len(args):
                problems.append(f"{_where(path)}: expected {len(args)} items, got {len(value)}")
                return tuple(value)
            return tuple(self.convert(v, a, f"{path}[{i}]", problems)
                         for i, (v, a) in enumerate(zip(value, args, strict=True)))
        item = args[0] if args else Any
        items = [self.convert(v, item, f"{path}[{i}]", problems) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items

    def _dataclass(self, value: Any, cls: type, path: str, problems: list[str]):
        if not isinstance(value, dict):
            problems.append(f"{_where(path)}: expected a mapping ({cls.__name__}), got {type(value).__name__}")
            return None
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        hints, kwargs = _hints(cls), {}
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if key not in fields:
                close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
                problems.append(f"unknown key '{where}'" + (f" (did you mean '{path + '.' if path else ''}{close[0]}'?)"
                                                            if close else f" (valid: {', '.join(fields)})"))
                continue
            before = len(problems)
            kwargs[key] = self.convert(item, hints[key], where, problems)
            if len(problems) == before:
                check_field(kwargs[key], fields[key].metadata, where, problems)
        missing = [n for n, f in fields.items() if n not in value and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        problems += [f"missing key '{path + '.' if path else ''}{name}'" for name in missing]
        if missing:
            return None
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:  # __post_init__ checks
            problems.append(f"{_where(path)}: {exc}")
            return None


def _by_kind(value: Any, options) -> type | None:
    """The dataclass option whose ``kind`` field defaults to ``value["kind"]`` (a tagged union), else None."""
    if not isinstance(value, dict) or "kind" not in value:
        return None
    for option in options:
        if dataclasses.is_dataclass(option):
            kind = next((f.default for f in dataclasses.fields(option) if f.name == "kind"), None)
            if kind is not None and kind == value["kind"]:
                return option
    return None


def check_field(value: Any, meta, path: str, problems: list[str]) -> None:
    """Bounds and allowed values from a field's metadata (lists are checked item by item)."""
    if not meta:
        return
    choices = meta.get("choices")
    if "registry" in meta:
        choices = registry_names(meta["registry"]) + list(meta.get("extra", ()))
    for v in value if isinstance(value, list | tuple) else [value]:
        if v is None:
            continue
        if choices is not None and v not in choices:
            close = difflib.get_close_matches(str(v), [str(c) for c in choices], n=1, cutoff=0.6)
            problems.append(f"{path}: {short(v)} is not one of {list(choices)}"
                            + (f" (did you mean '{close[0]}'?)" if close else ""))
        if isinstance(v, int | float) and not isinstance(v, bool):
            lo, hi, above = meta.get("min"), meta.get("max"), meta.get("above")
            if (lo is not None and v < lo) or (hi is not None and v > hi) or (above is not None and v <= above):
                low = f"({above}" if above is not None else f"[{lo if lo is not None else '-∞'}"
                problems.append(f"{path}: {v} is outside {low}, {hi if hi is not None else '∞'}]")


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint))


# ------------------------------------------------------------------------------------------------ schema
def json_schema(cls: type, title: str | None = None) -> dict:
    """A JSON Schema (draft 2020-12) for ``cls``; nested dataclasses go to ``$defs``."""
    defs: dict[str, dict] = {}
    root = _schema(cls, defs)
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": title or cls.__name__}
    schema.update(defs.pop(cls.__name__) if "$ref" in root else root)
    if defs:
        schema["$defs"] = dict(sorted(defs.items()))
    return schema


def _schema(hint: Any, defs: dict) -> dict:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return {}
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [_schema(a, defs) for a in args]}
    if origin is Literal:
        return {"enum": list(args)}
    if dataclasses.is_dataclass(hint):
        name = hint.__name__
        if name not in defs:
            defs[name] = {}  # recursion guard
            hints = _hints(hint)
            fields = [f for f in dataclasses.fields(hint) if f.init]
            props = {f.name: _schema(hints[f.name], defs) for f in fields}
            for f in fields:
                doc = f.metadata.get("doc")
                if doc:
                    props[f.name]["description"] = doc
            required = [f.name for f in fields if f.default is dataclasses.MISSING
                        and f.default_factory is dataclasses.MISSING]
            body = {"type": "object", "properties": props, "additionalProperties": False}
            if required:
                body["required"] = required
            if hint.__doc__ and not hint.__doc__.startswith(f"{name}("):
                body["description"] = " ".join(hint.__doc__.split())
            defs[name] = body
        return {"$ref": f"#/$defs/{name}"}
    if origin in (list, tuple) or hint in (list, tuple):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return {"type": "array", "prefixItems": [_schema(a, defs) for a in args], "minItems": len(args),
                    "maxItems": len(args)}
        return {"type": "array", "items": _schema(args[0], defs) if args else {}}
    if origin is dict or hint is dict:
        return {"type": "object", "additionalProperties": _schema(args[1], defs) if len(args) == 2 else {}}
    return {bool: {"type": "boolean"}, int: {"type": "integer"}, float: {"type": "number"},
            str: {"type": "string"}, _NONE: {"type": "null"}}.get(hint, {})
