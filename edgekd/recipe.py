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
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edgekd.deploy.errors import InputFileError, RecipeError, UsageError
from edgekd.deploy.typed import from_json, short


def _choices(*values: str, default: str) -> Any:
    return field(default=default, metadata={"choices": values})


def _registered(registry: str, default: Any, extra: tuple[str, ...] = ()) -> Any:
    """A key whose values are a registry's names (``"module:attribute"``, a torch-free module), plus ``extra``."""
    factory = list if isinstance(default, list) else None
    kwargs = {"default_factory": lambda: list(default)} if factory else {"default": default}
    return field(metadata={"registry": registry, "extra": extra}, **kwargs)


def _range(default: Any, lo: float | None = None, hi: float | None = None, above: float | None = None) -> Any:
    """A number within ``[lo, hi]`` (``above``: strictly greater than); ``None`` is allowed where the default is."""
    return field(default=default, metadata={"min": lo, "max": hi, "above": above})


@dataclass
class TransformConfig:
    resize: int | None = _range(None, 1, 8192)
    crop: int | None = _range(None, 1, 8192)
    flip: bool = False
    padding: int | None = _range(None, 0, 1024)
    mean: list[float] | None = None
    std: list[float] | None = None


@dataclass
class DataConfig:
    source: str = "digits"
    root: str | None = None
    download: bool = False
    kwargs: dict = field(default_factory=dict)
    val_fraction: float = _range(0.15, None, 0.5, above=0.0)
    test_fraction: float = _range(0.2, 0.0, 0.5)
    batch_size: int = _range(64, 1, None)
    eval_batch_size: int = _range(256, 1, None)
    workers: int = _range(0, 0, 64)
    pin_memory: bool | None = None
    augment: bool = False
    in_memory: str = _choices("auto", "on", "off", default="auto")
    transforms: TransformConfig = field(default_factory=TransformConfig)
    limit: int | None = _range(None, 1, None)
    #: text data (``text:<path>``): the columns, the tokens per text, and the tokenizer — ``train`` (WordPiece
    #: learned from the training split, ``vocab_size`` tokens) or a tokenizer.json / vocab.txt / model folder
    text_column: str = "text"
    label_column: str = "label"
    max_length: int = _range(128, 2, 65536)
    tokenizer: str = "train"
    vocab_size: int = _range(8000, 16, 1_000_000)


@dataclass
class TrainConfig:
    epochs: int = _range(20, 1, 100_000)
    optimizer: str = _choices("adamw", "sgd", default="adamw")
    lr: float = _range(3e-3, None, 10.0, above=0.0)
    momentum: float = _range(0.9, 0.0, 1.0)
    weight_decay: float = _range(1e-4, 0.0, 1.0)
    schedule: str = _choices("cosine", "step", "constant", default="cosine")
    warmup_epochs: float = _range(0.0, 0.0, None)
    step_size: int = _range(10, 1, None)
    gamma: float = _range(0.1, None, 1.0, above=0.0)
    grad_clip: float | None = _range(None, None, None, above=0.0)
    early_stop_patience: int | None = _range(None, 1, None)
    select: str = _registered("edgekd.distill.selection:SELECTION", "last")
    amp: str = _choices("auto", "bf16", "fp16", "off", default="auto")
    channels_last: bool | None = None
    device: str = "auto"
    threads: int | None = _range(None, 1, 4096)
    label_smoothing: float = _range(0.0, 0.0, 0.99)


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
    weights_mix: list[float] | None = _range(None, 0.0, None)


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
    seeds: int = _range(1, 1, 100)
    cache: str = _choices("auto", "memory", "disk", "off", default="auto")
    cache_views: int | None = _range(None, 1, 1000)


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
    atol: float = _range(1e-4, None, 1.0, above=0.0)
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
    threads: int | None = _range(None, 1, 4096)
    providers: list[str] = field(default_factory=lambda: ["cpu"])


@dataclass
class BundleConfig:
    tolerance: float = _range(0.01, 0.0, 1.0)
    #: batch-1 p50 (ms, on the machine that benchmarks) a shipped artifact must not exceed; default: the
    #: student choice's budget when its candidates were timed on this machine (no ``students.profile``)
    latency_budget_ms: float | None = _range(None, 1e-6, None)


@dataclass
class StudentCandidate(ModelConfig):
    """One student the hardware-aware choice considers; ``name`` defaults to the model and its kwargs."""

    name: str | None = None


@dataclass
class StudentsConfig:
    """Hardware-aware student choice (the ``select`` stage; off while ``candidates`` is empty)."""

    candidates: list[StudentCandidate] = field(default_factory=list)
    latency_budget_ms: float | None = _range(None, 1e-6, None)
    profile: str | None = None
    rank_epochs: int = _range(3, 1, 100_000)
    batch: int = _range(1, 1, 4096)


def _interval(default: list, lo: float, hi: float) -> Any:
    """A ``[low, high]`` search range inside ``[lo, hi]`` (checked by :func:`_check_search`)."""
    return field(default_factory=lambda: list(default) if default is not None else None,
                 metadata={"interval": (lo, hi)})


@dataclass
class TuneConfig:
    """The distillation search (the ``tune`` stage; off unless ``enabled``). See docs/tuning.md."""

    enabled: bool = False
    trials: int | None = _range(20, 1, 100_000)
    timeout_s: float | None = _range(None, 1.0, None)
    epochs_per_trial: int | None = _range(None, 1, 100_000)
    methods: list[str] = _registered("edgekd.distill:LOSSES", ["kd", "dkd"])
    temperature: list[float] = _interval([1.0, 8.0], 1e-3, 100.0)
    alpha: list[float] = _interval([0.1, 1.0], 0.0, 1.0)
    lr: list[float] = _interval([3e-4, 3e-2], 1e-7, 10.0)
    epochs: list[int] | None = _interval(None, 1, 100_000)
    storage: str | None = None
    pruner: str = _registered("edgekd.tuning:PRUNERS", "median")


@dataclass
class Recipe:
    name: str = "recipe"  # part of cache file names: checked against NAME_PATTERN
    seed: int = _range(0, 0, 2**32 - 1)  # what numpy and torch accept
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: ModelConfig = field(default_factory=ModelConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    bundle: BundleConfig = field(default_factory=BundleConfig)
    students: StudentsConfig = field(default_factory=StudentsConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def digest(self, *sections: str) -> str:
        """A stable hash of the whole recipe, or of the named sections only (for cache keys)."""
        d = self.to_dict()
        if sections:
            d = {k: d[k] for k in sections}
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------- parsing
#: A recipe file larger than this, or expanding (through YAML anchors and aliases) to more values than this, is
#: refused before it is expanded: a 1 KB "billion laughs" recipe must not hang the machine.
MAX_RECIPE_BYTES = 1 << 20
MAX_RECIPE_VALUES = 100_000


#: a recipe's ``name`` becomes part of file names (the teacher cache): a plain, short file name
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def _check_combinations(r: Recipe, problems: list[str]) -> None:
    if not NAME_PATTERN.fullmatch(r.name):
        problems.append(f"name: expected 1 to 100 letters, digits, '.', '_' or '-' (starting with a letter or "
                        f"digit; it becomes part of file names), got {short(r.name)}")
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
        from edgekd.distill import FEATURE_METHODS

        if r.distill.method in FEATURE_METHODS:
            problems.append(f"distill.cache '{r.distill.cache}' cannot be used with method "
                            f"'{r.distill.method}' (it needs teacher features); use cache 'auto' or 'off'")
    hf = [m for m in (r.teacher.model, r.student.model) if isinstance(m, str) and m.startswith("hf:")]
    if hf and getattr(r.data, "tokenizer", None) == "train":
        problems.append(f"{hf[0]} is a pretrained model with its own vocabulary, but data.tokenizer is 'train' (a "
                        f"new vocabulary would feed it foreign token ids); set data.tokenizer: {hf[0][3:]}")
    if r.teacher.weights_mix is not None and len(r.teacher.weights_mix) != 1 + len(r.teacher.extra):
        problems.append(f"teacher.weights_mix has {len(r.teacher.weights_mix)} weights for "
                        f"{1 + len(r.teacher.extra)} teachers")
    for name, t in (("data.transforms.mean", r.data.transforms.mean), ("data.transforms.std",
                                                                       r.data.transforms.std)):
        if t is not None and not t:
            problems.append(f"{name} must not be empty")
    if r.data.transforms.std and any(s <= 0 for s in r.data.transforms.std):
        problems.append("data.transforms.std values must be > 0")
    if r.teacher.weights_mix is not None and not sum(r.teacher.weights_mix) > 0:
        problems.append("teacher.weights_mix must have a positive sum")
    if r.data.transforms.crop and r.data.transforms.resize and r.data.transforms.crop > r.data.transforms.resize:
        problems.append(f"data.transforms.crop {r.data.transforms.crop} is larger than data.transforms.resize "
                        f"{r.data.transforms.resize}")


def _check_search(r: Recipe, problems: list[str]) -> None:
    """The ``tune`` and ``students`` sections: ranges, budgets, and every searched method valid for this recipe."""
    t, s = r.tune, r.students
    for f in dataclasses.fields(TuneConfig):
        if "interval" in f.metadata and getattr(t, f.name) is not None:
            _check_interval(f"tune.{f.name}", getattr(t, f.name), *f.metadata["interval"], problems)
    if t.enabled and t.trials is None and t.timeout_s is None:
        problems.append("tune.enabled needs a budget: set tune.trials and/or tune.timeout_s")
    if t.epochs is not None and t.epochs_per_trial is not None:
        problems.append("tune.epochs (search the epochs) and tune.epochs_per_trial (fix them) exclude each other")
    if not t.methods:
        problems.append("tune.methods must name at least one method")
    for method in dict.fromkeys(t.methods) if t.enabled else ():
        extra: list[str] = []
        _check_combinations(dataclasses.replace(r, distill=dataclasses.replace(r.distill, method=method)), extra)
        problems += [f"tune.methods '{method}': {p}" for p in extra]
    if not s.candidates and (s.latency_budget_ms is not None or s.profile):
        problems.append("students.latency_budget_ms / students.profile need students.candidates")
    names = [c.name for c in s.candidates if c.name]
    if len(names) != len(set(names)):
        problems.append(f"students.candidates: names must be unique, got {names}")


def _check_interval(path: str, value: list, lo: float, hi: float, problems: list[str]) -> None:
    if len(value) != 2:
        problems.append(f"{path}: expected [low, high], got {short(value)}")
    elif any(v != v for v in value) or not (lo <= value[0] <= value[1] <= hi):
        problems.append(f"{path}: {value} must be [low, high] with {lo} <= low <= high <= {hi} (no NaN)")


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise UsageError(f"--set expects key=value, got '{text}'", hint="e.g. --set train.epochs=3")
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise UsageError(f"--set has an empty key in '{text}'", hint="e.g. --set train.epochs=3")
    try:
        value = safe_yaml(raw, f"--set {key}") if raw.strip() else None
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
    hint = "fix the recipe (or the --set values) and run again"
    if not isinstance(data, dict):
        raise RecipeError([f"expected a mapping at the top level, got {type(data).__name__}"], source)
    recipe = from_json(Recipe, data, source, hint, coerce=True, error=RecipeError)
    problems: list[str] = []
    _check_combinations(recipe, problems)
    if not problems:
        _check_search(recipe, problems)
    if problems:
        raise RecipeError(problems, source, hint=hint)
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


def _expanded_size(node, memo: dict) -> int:
    """How many values a composed YAML node stands for once aliases are expanded (counted, not expanded)."""
    key = id(node)
    if key not in memo:
        memo[key] = 1  # a node that refers to itself counts once
        children = node.value if isinstance(node.value, list) else []
        items = [c for pair in children for c in pair] if children and isinstance(children[0], tuple) else children
        memo[key] = 1 + sum(_expanded_size(c, memo) for c in items)
    return memo[key]


def safe_yaml(text: str, source: str):
    """``yaml.safe_load``, refusing text that expands (through anchors and aliases) to more than
    :data:`MAX_RECIPE_VALUES` values — checked on the composed graph, before anything is expanded."""
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    if node is not None and _expanded_size(node, {}) > MAX_RECIPE_VALUES:
        raise InputFileError(f"{source} expands to more than {MAX_RECIPE_VALUES:,} values through YAML anchors "
                             "and aliases (a 'billion laughs' bomb?); refused before expanding it",
                             hint="write the values out, or use fewer nested aliases")
    return yaml.safe_load(text)


def _read_yaml(path: Path):
    """A recipe file, refusing a huge one or an alias bomb before anything is expanded."""
    size = path.stat().st_size
    if size > MAX_RECIPE_BYTES:
        raise InputFileError(f"recipe {path} is {size:,} bytes; a recipe is at most {MAX_RECIPE_BYTES:,}",
                             hint="a recipe holds settings, not data: point data.source at the data instead")
    return safe_yaml(path.read_text(), f"recipe {path}") or {}


def load_recipe(name_or_path: str | os.PathLike | None = None, overrides: list[str] = ()) -> Recipe:
    path = resolve_recipe_path(name_or_path)
    try:
        data = _read_yaml(path)
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
