"""The pipeline's stages, registered in order: each names the artifact it returns, the stages whose artifacts
it needs, and the recipe sections it depends on (what makes its saved record stale). Importing this
package does not import torch.

| stage | returns | needs | recipe sections |
|---|---|---|---|
| data | DataArtifact | – | seed, data |
| teacher | TeacherArtifact | data | seed, data, teacher |
| select | SelectArtifact | data, teacher | students, seed, data, teacher, student, distill, train |
| tune | TuneArtifact | data, teacher, select | tune, seed, data, teacher, student, distill, train |
| distill | DistillArtifact | data, teacher, select, tune | seed, data, teacher, student, distill, train |
| export | ExportArtifact | data, teacher, distill | export |
| quantize | QuantizeArtifact | data, teacher, distill, export | quantize, bundle |
| benchmark | BenchmarkArtifact | data, teacher, distill, export, quantize | bench |
| report | ReportArtifact | data, teacher, distill, export, quantize, benchmark | name, bundle |
"""

from __future__ import annotations

from edgekd.artifacts import (
    BenchmarkArtifact,
    DataArtifact,
    DistillArtifact,
    ExportArtifact,
    QuantizeArtifact,
    ReportArtifact,
    SelectArtifact,
    TeacherArtifact,
    TuneArtifact,
)
from edgekd.deploy.registry import Registry
from edgekd.pipeline import Stage
from edgekd.stages.benchmark import run_benchmark
from edgekd.stages.export import run_export
from edgekd.stages.quantize import run_quantize
from edgekd.stages.report import run_report
from edgekd.stages.select import run_select
from edgekd.stages.train import run_data, run_distill, run_teacher
from edgekd.stages.tune import run_tune

STAGES: Registry[Stage] = Registry("stage")
_TRAINING = ("seed", "data", "teacher", "student", "distill", "train")
for _stage in (
    Stage("data", run_data, DataArtifact, (), ("seed", "data"), all_ranks=True),
    Stage("teacher", run_teacher, TeacherArtifact, ("data",), ("seed", "data", "teacher"), all_ranks=True),
    Stage("select", run_select, SelectArtifact, ("data", "teacher"), ("students", *_TRAINING), all_ranks=True,
          off=lambda r: not r.students.candidates),
    Stage("tune", run_tune, TuneArtifact, ("data", "teacher", "select"), ("tune", *_TRAINING), all_ranks=True,
          off=lambda r: not r.tune.enabled),
    Stage("distill", run_distill, DistillArtifact, ("data", "teacher", "select", "tune"), _TRAINING, all_ranks=True),
    Stage("export", run_export, ExportArtifact, ("data", "teacher", "distill"), ("export",)),
    Stage("quantize", run_quantize, QuantizeArtifact, ("data", "teacher", "distill", "export"),  # qat: both models
          ("quantize", "bundle")),
    Stage("benchmark", run_benchmark, BenchmarkArtifact, ("data", "teacher", "distill", "export", "quantize"),
          ("bench",)),
    Stage("report", run_report, ReportArtifact, ("data", "teacher", "distill", "export", "quantize", "benchmark"),
          ("name", "bundle")),
):
    STAGES.register(_stage.name, _stage)
