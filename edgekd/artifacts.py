"""What each pipeline stage hands the next: frozen, typed artifacts, saved in the run folder as stage records
(:mod:`edgekd.runfolder`) and loaded back when a later ``edgekd run --stages ...`` needs them.

Paths inside artifacts are relative to the run folder; every model file carries its SHA-256, checked when a
record is loaded (a replaced file makes its stage stale, never silently reused).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgekd.benchmarks.results import BundleChoice, Device, ResultRow
from edgekd.deploy.runtime.preprocess import ImagePreprocessing
from edgekd.deploy.runtime.text import TextPreprocessing


@dataclass(frozen=True)
class ModelFile:
    """A file the run made: its path (relative to the run folder) and SHA-256."""

    path: str
    sha256: str


@dataclass(frozen=True)
class DataArtifact:
    """The data as the run saw it: shapes, classes, the preprocessing contract, and a content identity."""

    source: str
    input_shape: tuple[int, ...]
    num_classes: int
    labels: tuple[str, ...]
    preprocessing: ImagePreprocessing | TextPreprocessing
    identity: str
    sizes: dict[str, int]
    task: str = "image-classification"
    #: files of the run folder that go into the bundle beside the model (``tokenizer.json`` for text)
    files: tuple[str, ...] = ()


@dataclass(frozen=True)
class Selection:
    """Which epoch's weights a training kept, and by which rule (see docs/distillation.md)."""

    rule: str
    epoch: int
    epochs_run: int
    stopped_early: bool = False
    resumed_from_epoch: int | None = None
    score: float | None = None


@dataclass(frozen=True)
class TrainedModel:
    """A trained PyTorch model: weights file, size, seed, and its accuracy on validation and test."""

    name: str
    role: str
    weights: ModelFile
    params: int
    seed: int
    val_top1: float
    test_top1: float
    selection: Selection | None = None


@dataclass(frozen=True)
class TeacherArtifact:
    model: TrainedModel
    source: str


@dataclass(frozen=True)
class SeedResult:
    """One seed's student and baseline (test and validation top-1)."""

    seed: int
    student_top1: float
    student_val_top1: float
    baseline_top1: float | None = None
    baseline_val_top1: float | None = None


@dataclass(frozen=True)
class Gain:
    """The KD gain (student − baseline, test top-1) over seeds: mean ± std and a paired t-interval."""

    n: int
    mean: float
    std: float | None
    ci_low: float | None
    ci_high: float | None
    confidence: float
    verdict: str  # "gain" | "loss" | "within noise" | "one seed"
    statement: str


@dataclass(frozen=True)
class DistillArtifact:
    method: str
    temperature: float
    alpha: float
    teacher_outputs: str
    teacher_top1: float
    student: TrainedModel
    baseline: TrainedModel | None = None
    seeds: tuple[SeedResult, ...] = ()
    gain: Gain | None = None
    shipped_seed: int = 0
    shipped_because: str = ""
    augmentation: str = "none"


@dataclass(frozen=True)
class OnnxModel:
    """An ONNX file the run made and checked: exported (fp32) or quantized (int8 static/dynamic/qat, fp16)."""

    name: str
    role: str
    source: str
    precision: str
    variant: str
    file: ModelFile
    params: int
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExportArtifact:
    opset: int
    exporter: str
    models: tuple[OnnxModel, ...]


@dataclass(frozen=True)
class QuantizeArtifact:
    """Every quantized candidate that passed its checks, and what each attempt did (also failures)."""

    models: tuple[OnnxModel, ...]
    attempts: dict[str, Any]
    lines: tuple[str, ...] = ()


@dataclass(frozen=True)
class BenchmarkArtifact:
    rows: tuple[ResultRow, ...]
    device: Device
    timing: dict[str, Any]


@dataclass(frozen=True)
class ReportArtifact:
    bundle: BundleChoice
    files: tuple[str, ...]


@dataclass(frozen=True)
class Knobs:
    """The distillation knobs the search varies (``distill.method/temperature/alpha``, ``train.lr/epochs``)."""

    method: str
    temperature: float
    alpha: float
    lr: float
    epochs: int


@dataclass(frozen=True)
class CandidateResult:
    """One candidate student: its structure, its latency (p50 at the choice's batch) and, when it met the
    budget, its validation top-1 after the short ranking distillation."""

    name: str
    index: int
    model: str
    params: int
    signature: str
    latency_ms: float
    latency_source: str
    over_budget: bool
    val_top1: float | None = None
    note: str = ""


@dataclass(frozen=True)
class SelectArtifact:
    """The hardware-aware student choice (``enabled`` false: the recipe's own student is used)."""

    enabled: bool
    candidates: tuple[CandidateResult, ...] = ()
    chosen: str | None = None
    chosen_index: int | None = None
    budget_ms: float | None = None
    batch: int = 1
    rank_epochs: int = 0
    decision: str = ""
    files: tuple[str, ...] = ()


@dataclass(frozen=True)
class TrialResult:
    """One trial of the search: Optuna's state, the knobs, the objective (validation top-1) and its origin."""

    number: int
    state: str
    knobs: Knobs | None
    value: float | None
    duration_s: float | None
    epochs_run: int
    origin: str = "sampled"
    note: str = ""


@dataclass(frozen=True)
class TuneArtifact:
    """The distillation search (``enabled`` false: the recipe's own knobs are used)."""

    enabled: bool
    study: str = ""
    storage: str = ""
    objective: str = ""
    space: dict[str, Any] = field(default_factory=dict)
    trials: tuple[TrialResult, ...] = ()
    best: Knobs | None = None
    best_value: float | None = None
    default_value: float | None = None
    found_finished: int = 0
    ran_now: int = 0
    files: tuple[str, ...] = ()
