"""Recipes: validated configuration for one teacher → student job.

A recipe is plain YAML (``yaml.safe_load``: no tags, no code). Loading checks *every* key at once and
reports all problems together: unknown keys (with "did you mean"), wrong types, out-of-range values and
invalid combinations. ``--set key.path=value`` overrides are parsed as YAML scalars and validated the same
way, before any heavy work starts.

Example:
    >>> recipe = load_recipe("models/digits.yaml", overrides=["train.epochs=3"])  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edgekd.deploy.errors import InputFileError, RecipeError, UsageError


def _choices(*values: str, default: str) -> Any:
    return field(default=default, metadata={"choices": values})


def _registered(registry: str, default: Any, extra: tuple[str, ...] = ()) -> Any:
    """A key whose values are a registry's names (``"module:attribute"``, a torch-free module), plus ``extra``."""
    factory = list if isinstance(default, list) else None
    kwargs = {"default_factory": lambda: list(default)} if factory else {"default": default}
    return field(metadata={"registry": registry, "extra": extra}, **kwargs)


def registry_names(path: str) -> list[str]:
    """The names of the registry at ``"module:attribute"``."""
    import importlib

    module, _, attr = path.partition(":")
    return list(getattr(importlib.import_module(module), attr))


def _range(default: Any, lo: float | None = None, hi: float | None = None) -> Any:
    return field(default=default, metadata={"min": lo, "max": hi})


@dataclass
class TransformConfig:
    resize: int | None = None
    crop: int | None = None
    flip: bool = False
    mean: list[float] | None = None
    std: list[float] | None = None


@dataclass
class DataConfig:
    source: str = "digits"
    root: str | None = None
    download: bool = False
    kwargs: dict = field(default_factory=dict)
    val_fraction: float = _range(0.15, 0.0, 0.5)
    test_fraction: float = _range(0.2, 0.0, 0.5)
    batch_size: int = _range(64, 1, None)
    eval_batch_size: int = _range(256, 1, None)
    workers: int = _range(0, 0, 64)
    pin_memory: bool | None = None
    augment: bool = False
    transforms: TransformConfig = field(default_factory=TransformConfig)
    limit: int | None = None


@dataclass
class TrainConfig:
    epochs: int = _range(20, 1, 100_000)
    optimizer: str = _choices("adamw", "sgd", default="adamw")
    lr: float = _range(3e-3, 0.0, 10.0)
    momentum: float = _range(0.9, 0.0, 1.0)
    weight_decay: float = _range(1e-4, 0.0, 1.0)
    schedule: str = _choices("cosine", "step", "constant", default="cosine")
    warmup_epochs: float = _range(0.0, 0.0, None)
    step_size: int = _range(10, 1, None)
    gamma: float = _range(0.1, 0.0, 1.0)
    grad_clip: float | None = None
    early_stop_patience: int | None = None
    amp: str = _choices("auto", "bf16", "fp16", "off", default="auto")
    channels_last: bool | None = None
    device: str = "auto"
    label_smoothing: float = _range(0.0, 0.0, 1.0)


@dataclass
class ModelConfig:
    model: str = "edgekd:cnn"
    kwargs: dict = field(default_factory=dict)
    checkpoint: str | None = None
    weights: str | None = None


@dataclass
class TeacherConfig(ModelConfig):
    train: TrainConfig = field(default_factory=TrainConfig)
    extra: list[ModelConfig] = field(default_factory=list)
    weights_mix: list[float] | None = None


@dataclass
class DistillConfig:
    method: str = _registered("edgekd.distill:LOSSES", "kd")
    temperature: float = _range(4.0, 1e-3, 100.0)
    alpha: float = _range(0.9, 0.0, 1.0)
    beta: float = _range(8.0, 0.0, 1000.0)
    feature_weight: float = _range(1.0, 0.0, 1e6)
    student_layers: list[str] = field(default_factory=list)
    teacher_layers: list[str] = field(default_factory=list)
    baseline: bool = True
    cache: str = _choices("auto", "memory", "disk", "off", default="auto")


@dataclass
class RawPixelsConfig:
    """The bundled model takes uint8 pixels and normalises inside its graph (edgekd.deploy.raw_pixels)."""

    enabled: bool = False
    layout: str = _choices("NHWC", "NCHW", default="NHWC")


@dataclass
class ExportConfig:
    opset: int = _range(18, 11, 23)
    exporter: str = _registered("edgekd.deploy.export:EXPORTERS", "dynamo")
    fallback: str | None = _registered("edgekd.deploy.export:EXPORTERS", "torchscript")
    atol: float = _range(1e-4, 0.0, 1.0)
    simplify: bool = False
    raw_pixels: RawPixelsConfig = field(default_factory=RawPixelsConfig)


@dataclass
class QuantizeConfig:
    enabled: bool = True
    modes: list[str] = _registered("edgekd.stages.quantize:QUANTIZERS", ["static", "dynamic", "fp16", "qat"])
    calibration: str = _choices("minmax", "entropy", "percentile", default="minmax")
    calib_samples: int = _range(256, 1, 1_000_000)
    preset: str = _registered("edgekd.deploy.quantize:PRESETS", "auto", extra=("auto",))
    # QAT-KD (mode `qat`, edgekd.distill.qat): trains only when its post-training start point misses
    # bundle.tolerance, unless qat_when is `always`
    qat_when: str = _choices("ptq-misses", "always", default="ptq-misses")
    qat_epochs: int = _range(3, 1, 10_000)
    qat_lr: float = _range(1e-4, 0.0, 1.0)
    qat_min_agreement: float = _range(0.99, 0.0, 1.0)


@dataclass
class BenchConfig:
    warmup_s: float = _range(0.3, 0.0, 600.0)
    warmup_runs: int = _range(10, 0, None)
    min_runs: int = _range(200, 1, None)
    min_time_s: float = _range(2.0, 0.0, 3600.0)
    throughput_batch: int = _range(64, 1, None)
    rounds: int = _range(5, 1, 100)
    threads: int | None = None
    providers: list[str] = field(default_factory=lambda: ["cpu"])


@dataclass
class BundleConfig:
    tolerance: float = _range(0.01, 0.0, 1.0)


@dataclass
class Recipe:
    name: str = "recipe"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: ModelConfig = field(default_factory=ModelConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    bundle: BundleConfig = field(default_factory=BundleConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def digest(self, *sections: str) -> str:
        """A stable hash of the whole recipe, or of the named sections only (for cache keys)."""
        d = self.to_dict()
        if sections:
            d = {k: d[k] for k in sections}
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------- parsing
def _convert(value: Any, hint: Any, path: str, problems: list[str]) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, args[0], path, problems)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            problems.append(f"{path}: expected a mapping, got {type(value).__name__} {value!r}")
            return hint()
        return _build(hint, value, path, problems)
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        if isinstance(value, (str, int, float)) and item is str:
            value = [value]
        if not isinstance(value, list):
            problems.append(f"{path}: expected a list, got {type(value).__name__} {value!r}")
            return []
        return [_convert(v, item, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            problems.append(f"{path}: expected a mapping, got {type(value).__name__} {value!r}")
            return {}
        return value
    if hint is bool:
        if not isinstance(value, bool):
            problems.append(f"{path}: expected true/false, got {value!r}")
        return bool(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            problems.append(f"{path}: expected an integer, got {value!r}")
            return 0
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"{path}: expected a number, got {value!r}")
            return 0.0
        return float(value)
    if hint is str:
        if isinstance(value, bool):  # YAML 1.1 reads off/on/no/yes as booleans: `amp: off` means "off"
            return "on" if value else "off"
        if not isinstance(value, str):
            problems.append(f"{path}: expected a string, got {value!r}")
            return str(value)
        return value
    return value


def _short(value: Any, limit: int = 60) -> str:
    """A value quoted in an error message, truncated (recipes can hold huge values)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def _build(cls, data: dict, prefix: str, problems: list[str]):
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
            where = f"{prefix}." if prefix else ""
            problems.append(f"unknown key '{path}'" + (f" (did you mean '{where}{close[0]}'?)" if close
                                                       else f" (valid: {', '.join(fields)})"))
            continue
        before = len(problems)
        converted = _convert(value, hints[key], path, problems)
        meta = fields[key].metadata
        if len(problems) > before:
            kwargs[key] = converted
            continue
        choices = meta.get("choices") or (registry_names(meta["registry"]) + list(meta["extra"])
                                          if "registry" in meta else None)
        values = converted if isinstance(converted, list) else [converted]
        for value in values:
            if choices is not None and value is not None and value not in choices:
                close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.6)
                problems.append(f"{path}: {_short(value)} is not one of {choices}"
                                + (f" (did you mean '{close[0]}'?)" if close else ""))
        if isinstance(converted, (int, float)) and not isinstance(converted, bool):
            lo, hi = meta.get("min"), meta.get("max")
            if (lo is not None and converted < lo) or (hi is not None and converted > hi):
                problems.append(f"{path}: {converted} is outside [{lo}, {hi if hi is not None else '∞'}]")
        kwargs[key] = converted
    return cls(**kwargs)


def _check_combinations(r: Recipe, problems: list[str]) -> None:
    if r.data.val_fraction + r.data.test_fraction >= 0.9:
        problems.append("data.val_fraction + data.test_fraction must leave at least 10% for training")
    if r.distill.method == "fitnet" and (not r.distill.student_layers
                                         or len(r.distill.student_layers) != len(r.distill.teacher_layers)):
        problems.append("distill.method 'fitnet' needs distill.student_layers and distill.teacher_layers "
                        "of equal, non-zero length")
    if r.distill.method == "at" and (not r.distill.student_layers
                                     or len(r.distill.student_layers) != len(r.distill.teacher_layers)):
        problems.append("distill.method 'at' needs distill.student_layers and distill.teacher_layers "
                        "of equal, non-zero length")
    if r.distill.method == "multi" and not r.teacher.extra:
        problems.append("distill.method 'multi' needs at least one more teacher in teacher.extra")
    if r.teacher.extra and r.distill.method != "multi":
        problems.append(f"teacher.extra lists more teachers, but distill.method is '{r.distill.method}' "
                        "(only 'multi' distils from several)")
    if r.distill.cache in ("memory", "disk"):
        if r.data.augment:
            problems.append(f"distill.cache '{r.distill.cache}' cannot be used with data.augment: true (the "
                            "teacher must see each augmented batch); use cache 'auto' or 'off'")
        if r.distill.method in ("fitnet", "at"):
            problems.append(f"distill.cache '{r.distill.cache}' cannot be used with method "
                            f"'{r.distill.method}' (it needs teacher features); use cache 'auto' or 'off'")
    if r.teacher.weights_mix is not None and len(r.teacher.weights_mix) != 1 + len(r.teacher.extra):
        problems.append(f"teacher.weights_mix has {len(r.teacher.weights_mix)} weights for "
                        f"{1 + len(r.teacher.extra)} teachers")
    for name, t in (("data.transforms.mean", r.data.transforms.mean), ("data.transforms.std",
                                                                       r.data.transforms.std)):
        if t is not None and not t:
            problems.append(f"{name} must not be empty")
    if r.data.transforms.std and any(s <= 0 for s in r.data.transforms.std):
        problems.append("data.transforms.std values must be > 0")


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise UsageError(f"--set expects key=value, got '{text}'", hint="e.g. --set train.epochs=3")
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise UsageError(f"--set has an empty key in '{text}'", hint="e.g. --set train.epochs=3")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for k in keys[:-1]:
            if not isinstance(node.get(k), dict):
                node[k] = {}
            node = node[k]
        node[keys[-1]] = value
    return data


def recipe_from_dict(data: dict, source: str = "recipe") -> Recipe:
    """Validate a mapping into a :class:`Recipe`, reporting every problem in one :class:`RecipeError`."""
    problems: list[str] = []
    if not isinstance(data, dict):
        raise RecipeError([f"expected a mapping at the top level, got {type(data).__name__}"], source)
    recipe = _build(Recipe, data, "", problems)
    if not problems:
        _check_combinations(recipe, problems)
    if problems:
        raise RecipeError(problems, source, hint="fix the recipe (or the --set values) and run again")
    return recipe


def recipe_dirs() -> list[Path]:
    """Where bundled recipes live: ``models/`` of a source checkout, or ``share/edgekd/models`` of an
    installed wheel."""
    import sys

    return [Path(__file__).resolve().parent.parent / "models", Path(sys.prefix) / "share" / "edgekd" / "models"]


def resolve_recipe_path(name_or_path: str | os.PathLike | None) -> Path:
    """A path, or a bare name looked up in ``./models`` and edgekd's bundled recipes."""
    if name_or_path is None:
        name_or_path = "digits"
    p = Path(name_or_path)
    if p.is_file():
        return p
    if p.exists():
        raise InputFileError(f"recipe {p} is a folder, expected a YAML file")
    if p.suffix == "":
        for folder in [Path("models"), *recipe_dirs()]:
            if (folder / f"{p.name}.yaml").is_file():
                return folder / f"{p.name}.yaml"
    known = sorted({f.stem for d in recipe_dirs() if d.is_dir() for f in d.glob("*.yaml")})
    raise InputFileError(f"recipe not found: {name_or_path}",
                         hint=f"pass a YAML path or one of the bundled recipes: {', '.join(known)}" if known
                         else "pass the path of a recipe YAML file (see models/ in the edgekd repository)")


def load_recipe(name_or_path: str | os.PathLike | None = None, overrides: list[str] = ()) -> Recipe:
    path = resolve_recipe_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise InputFileError(f"recipe {path} is not valid YAML{where}: {getattr(exc, 'problem', exc)}",
                             hint="fix the YAML syntax (indentation, colons, quotes)") from None
    except UnicodeDecodeError:
        raise InputFileError(f"recipe {path} is not a text file") from None
    if not isinstance(data, dict):
        raise RecipeError([f"expected a mapping at the top level, got {type(data).__name__}"], str(path))
    return recipe_from_dict(apply_overrides(data, list(overrides)), str(path))
