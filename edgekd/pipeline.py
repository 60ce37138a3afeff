"""The pipeline: a list of stages, each taking the :class:`Context` and returning a typed artifact.

``run_pipeline`` plans which stages to run (all, a ``--stages`` subset, or what ``--resume`` still needs),
refuses a plan whose inputs are missing *before anything in the run folder is touched*, then runs the
stages in order and saves each one's record in the :class:`~edgekd.runfolder.RunFolder`. A later stage gets
an earlier one's artifact from memory or, in a later invocation, from its saved record — so
``edgekd run --stages benchmark,report --out FINISHED_RUN`` re-benchmarks a finished run on another machine.
Only rank 0 writes files under torchrun.

Example:
    >>> from edgekd.recipe import load_recipe
    >>> result = run_pipeline(load_recipe("digits"), "runs/digits")  # doctest: +SKIP
    >>> result.artifacts["distill"].student.test_top1  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from edgekd import __version__, distributed
from edgekd.benchmarks.results import now_iso
from edgekd.deploy.errors import InputFileError, ResumeError, UsageError
from edgekd.deploy.fileio import sha256_file, write_text
from edgekd.deploy.typed import DocumentError, from_json, to_json
from edgekd.runfolder import RunFolder, StageRecord

log = logging.getLogger(__name__)


class UI:
    """Callbacks the pipeline reports through; the CLI passes a rich implementation."""

    def stage(self, name: str, text: str) -> None:
        log.info("[%s] %s", name, text)

    def done(self, name: str, text: str) -> None:
        log.info("[%s] %s", name, text)

    def reporter(self, name: str):
        from edgekd.distill.trainer import Reporter

        return Reporter()

    def progress(self, name: str, total: int):
        """A progress handle (``advance(n)``, ``close()``) for long loops outside training."""
        return _NoProgress()


class _NoProgress:
    def advance(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class Stage:
    """One pipeline stage: what it runs, what it returns, which stages and recipe sections it depends on."""

    name: str
    run: object  # Callable[[Context], artifact]
    artifact: type
    needs: tuple[str, ...] = ()
    sections: tuple[str, ...] = ()
    all_ranks: bool = False
    #: ``off(recipe)``: this recipe switches the stage off (it then records that at once), so a ``--stages``
    #: subset that needs it gets it added instead of refused
    off: object = None


@dataclass
class Context:
    """What stages share: the recipe, the run folder, the UI, and the artifacts made or loaded so far."""

    recipe: object
    run: RunFolder
    ui: UI = field(default_factory=UI)
    resume: bool = False
    records: dict[str, StageRecord] = field(default_factory=dict)
    artifacts: dict[str, object] = field(default_factory=dict)
    models: dict[str, object] = field(default_factory=dict)
    splits: object = None
    device: object = None
    timings: dict[str, float] = field(default_factory=dict)

    def artifact(self, stage: str):
        """The artifact of an earlier stage (planning guarantees it is there)."""
        if stage not in self.artifacts:
            raise UsageError(f"stage '{stage}' has not run in {self.run.root}",
                             hint=f"run it: edgekd run --stages {stage} --out {self.run.root}")
        return self.artifacts[stage]

    def model(self, name: str):
        """A trained model by name (``teacher``, ``student``, ``baseline``): in memory, or rebuilt from its
        weights in the run folder."""
        if name not in self.models:
            from edgekd.stages.train import load_trained

            self.models[name] = load_trained(self, name)
        return self.models[name]


@dataclass(frozen=True)
class RunResult:
    """What :func:`run_pipeline` returns: every artifact (made now or loaded) and which stages ran."""

    run: RunFolder
    artifacts: dict
    ran: tuple[str, ...]
    complete: bool


def pipeline() -> list[Stage]:
    from edgekd.stages import STAGES

    return [STAGES.get(name) for name in STAGES]


# ------------------------------------------------------------------------------------------- planning
def _expected_inputs(stage: Stage, recipe, records: dict[str, StageRecord]) -> dict[str, str]:
    return {"recipe": recipe.digest(*stage.sections), **{n: records[n].digest for n in stage.needs if n in records}}


def _files_intact(run: RunFolder, artifact) -> str | None:
    """The first model file an artifact names that is missing or changed, or ``None``."""
    from edgekd.artifacts import ModelFile

    for item in _walk(artifact):
        if isinstance(item, ModelFile):
            path = run.path(item.path)
            if not path.is_file():
                return f"{item.path} is missing"
            if sha256_file(path) != item.sha256:
                return f"{item.path} changed since it was made"
    return None


def _walk(obj):
    yield obj
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from _walk(getattr(obj, f.name))
    elif isinstance(obj, list | tuple):
        for item in obj:
            yield from _walk(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _walk(item)


def load_fresh(run: RunFolder, recipe, stages: list[Stage]) -> tuple[dict, dict, dict[str, str]]:
    """Saved records that are still valid for ``recipe``: ``(records, artifacts, why others are stale)``.

    A record is fresh when its recipe sections and the records of the stages it needs are unchanged, and
    every model file it names still has its SHA-256.
    """
    records, artifacts, stale = {}, {}, {}
    for stage in stages:
        try:
            record = run.load_record(stage.name)
        except (InputFileError, DocumentError) as exc:
            stale[stage.name] = exc.message
            continue
        if record is None:
            continue
        missing = [n for n in stage.needs if n not in records]
        if missing:
            why = "; ".join(f"{n}: {stale[n]}" for n in missing if n in stale)
            stale[stage.name] = f"it needs {missing}, which are not valid" + (f" ({why})" if why else "")
            continue
        if record.inputs != _expected_inputs(stage, recipe, records):
            stale[stage.name] = _why_changed(stage, record, recipe, records)
            continue
        try:
            artifact = from_json(stage.artifact, record.artifact, str(run.record_path(stage.name)))
        except DocumentError as exc:
            stale[stage.name] = exc.message
            continue
        broken = _files_intact(run, artifact)
        if broken:
            stale[stage.name] = broken
            continue
        records[stage.name], artifacts[stage.name] = record, artifact
    return records, artifacts, stale


def _why_changed(stage: Stage, record: StageRecord, recipe, records: dict) -> str:
    if record.inputs.get("recipe") != recipe.digest(*stage.sections):
        return f"the recipe's {'/'.join(stage.sections)} section(s) changed since it ran"
    changed = [n for n in stage.needs if record.inputs.get(n) != records[n].digest]
    return f"stage(s) {changed} ran again since"


def _invalidated(stages: list[Stage], todo) -> set[str]:
    """``todo`` and every stage downstream of it (their records go stale when ``todo`` runs)."""
    out: set[str] = set()
    for stage in stages:
        if stage.name in todo or any(n in out for n in stage.needs):
            out.add(stage.name)
    return out


def _blockers(stages: list[Stage], todo, fresh: dict, stale: dict) -> dict[tuple[str, str], str]:
    by_name, invalid = {s.name: s for s in stages}, _invalidated(stages, todo)
    problems = {}
    for name in todo:
        for need in by_name[name].needs:
            if need in todo:
                continue
            if need not in fresh:
                problems[name, need] = stale.get(need, "it has not run in this folder")
            elif need in invalid:
                problems[name, need] = "the stages run now would make it stale"
    return problems


def plan(stages: list[Stage], wanted: list[str], fresh: dict, stale: dict, resume: bool, recipe=None) -> list[str]:
    """The stages to run, in order; refuses (``UsageError``) a subset whose needed inputs are missing or
    would go stale, naming them and the smallest subset that works. A needed stage that ``recipe`` switches
    off is added instead."""
    names = [s.name for s in stages]
    todo = [n for n in names if n in wanted and not (resume and n in fresh)]
    problems = _blockers(stages, todo, fresh, stale)
    while problems and recipe is not None:  # stages the recipe switches off cost nothing: add them
        free = {need for (_, need) in problems if (s := _named(stages, need)).off and s.off(recipe)} - set(todo)
        if not free:
            break
        todo = [n for n in names if n in todo or n in free]
        problems = _blockers(stages, todo, fresh, stale)
    if problems:
        fix = set(todo)
        while blockers := _blockers(stages, fix, fresh, stale):
            fix |= {need for _, need in blockers}
        text = "; ".join(f"stage '{n}' needs '{need}' ({why})" for (n, need), why in problems.items())
        raise UsageError(f"cannot run this stage subset: {text}",
                         hint=f"run --stages {','.join(n for n in names if n in fix)} (or the whole pipeline); "
                              "nothing was changed")
    return todo


def _named(stages: list[Stage], name: str) -> Stage:
    return next(s for s in stages if s.name == name)


# ------------------------------------------------------------------------------------------- running
def run_pipeline(recipe, out: str | os.PathLike, *, stages=None, resume: bool = False, ui: UI | None = None
                 ) -> RunResult:
    """Run ``stages`` (default: all) of the pipeline for ``recipe`` into folder ``out``.

    With ``resume``, stages whose saved records are still valid are skipped and training continues from
    its last checkpoint.
    """
    all_stages = pipeline()
    names = [s.name for s in all_stages]
    wanted = list(dict.fromkeys(stages or names))
    unknown = [s for s in wanted if s not in names]
    if unknown:
        raise UsageError(f"unknown stage(s) {unknown}", hint=f"stages are {names}")
    run = RunFolder(out)
    _check_out(run)
    records, artifacts, stale = load_fresh(run, recipe, all_stages) if run.root.is_dir() else ({}, {}, {})
    if resume:
        _check_resumable(run, recipe)
    todo = plan(all_stages, wanted, records, stale, resume, recipe)
    planned = {k: r.digest for k, r in records.items()}
    ctx = Context(recipe, run, ui=ui or UI(), resume=resume, records=records, artifacts=artifacts)
    if resume:
        ctx.ui.stage("resume", _found(run, records, todo))
    distributed.init()
    threads, why = distributed.training_threads(recipe.train.threads)
    ctx.ui.stage("threads", why)
    from edgekd.deploy.torch_runner import torch_threads
    from edgekd.stages.train import prepare

    with torch_threads(threads):  # the process's thread count is restored afterwards
        prepare(ctx, todo)  # data loaded, models built and checked: still nothing written
        todo = plan(all_stages, wanted, ctx.records, stale, resume, recipe)  # the data record may have changed
        with run.writer() if distributed.is_main() else contextlib.nullcontext():
            _check_unchanged(run, recipe, all_stages, planned)
            _prepare_out(ctx)
            ran = [stage.name for stage in all_stages if stage.name in todo and _run_stage(ctx, stage)]
            complete = _finish(ctx, all_stages)
    distributed.barrier()
    return RunResult(run, ctx.artifacts, tuple(ran), complete)


def _check_unchanged(run: RunFolder, recipe, stages: list[Stage], planned: dict[str, str]) -> None:
    """Under the writer lock: the records are still the ones this run planned with (no other writer slipped in
    between planning and locking)."""
    if not distributed.is_main() or not run.root.is_dir():
        return
    now = load_fresh(run, recipe, stages)[0]
    if {k: r.digest for k, r in now.items()} != planned:
        raise UsageError(f"{run.root} changed while this run was starting (another edgekd writing it?)",
                         hint="run again once the other run has finished, or choose another --out folder")


def _run_stage(ctx: Context, stage: Stage) -> bool:
    """Run one stage and record its artifact; ``False`` on ranks other than 0 for rank-0-only stages."""
    if not distributed.is_main() and not stage.all_ranks:
        return False
    t0 = time.perf_counter()
    artifact = stage.run(ctx)
    ctx.timings[stage.name] = round(time.perf_counter() - t0, 3)
    _record(ctx, stage, artifact)
    return True


def _record(ctx: Context, stage: Stage, artifact) -> None:
    """Keep ``artifact`` and save its record (rank 0); later records that depended on the old one are stale."""
    record = StageRecord(stage.name, __version__, now_iso(), _expected_inputs(stage, ctx.recipe, ctx.records),
                         to_json(artifact))
    ctx.artifacts[stage.name], ctx.records[stage.name] = artifact, record
    for later in [s for s in pipeline() if stage.name in s.needs]:
        if later.name in ctx.records and ctx.records[later.name].inputs.get(stage.name) != record.digest:
            ctx.records.pop(later.name)
            ctx.artifacts.pop(later.name, None)
    if distributed.is_main():
        ctx.run.save_record(record)


def _finish(ctx: Context, stages: list[Stage]) -> bool:
    """``RUN_COMPLETE`` only when every stage's record is present and fresh."""
    if not distributed.is_main():
        return False
    complete = all(s.name in ctx.records for s in stages)
    if complete:
        done = ", ".join(f"{k} {v:.1f}s" for k, v in ctx.timings.items())
        write_text(ctx.run.complete, f"edgekd {__version__}: every stage complete ({done or 'nothing re-run'})\n")
    return complete


def _check_out(run: RunFolder) -> None:
    """``--out`` must be a new/empty folder or an edgekd run folder (never replace what edgekd did not make)."""
    root = run.root
    if root.exists() and not root.is_dir():
        raise UsageError(f"--out {root} is a file, expected a folder", hint="choose another --out path")
    if root.is_dir() and any(root.iterdir()) and not run.exists():
        raise UsageError(f"--out {root} already holds files that are not an edgekd run; refusing to write there",
                         hint="choose a new or empty folder (edgekd only writes into its own run folders)")


def _found(run: RunFolder, records: dict, todo: list[str]) -> str:
    """What ``--resume`` found in the folder and what it will run."""
    checkpoints = sorted(p.parent.name for p in run.root.glob("checkpoints/*/last.pt"))
    kept = [n for n in records if n not in todo]
    return (f"found {', '.join(kept) or 'no finished stage'}"
            + (f" and checkpoints of {', '.join(checkpoints)}" if checkpoints else "")
            + f"; running {', '.join(todo) or 'nothing (the run is complete)'}")


def _check_resumable(run: RunFolder, recipe) -> None:
    """``--resume`` continues a run that started with the same recipe; it says what it found."""
    if not run.exists():
        raise ResumeError(f"--resume: {run.root} holds no run to continue (no recipe.yaml)",
                          hint="run without --resume to start, or point --out at the interrupted run")
    try:
        saved = yaml.safe_load(run.recipe.read_text()) or {}
    except yaml.YAMLError:
        raise ResumeError(f"--resume: {run.recipe} is corrupt", hint="start a new run") from None
    now = recipe.to_dict()
    diffs = [f"{k}: {a!r} → {b!r}" for k, a, b in _flat_diff({s: saved.get(s) for s in TRAINING_SECTIONS},
                                                            {s: now.get(s) for s in TRAINING_SECTIONS})]
    if diffs:
        raise ResumeError(f"--resume refused: the recipe changed since the run started: {'; '.join(diffs[:5])}",
                          hint="resume with the same recipe and --set values, or use a new --out folder")


TRAINING_SECTIONS = ("seed", "data", "teacher", "student", "distill", "train")


def _flat_diff(a, b, prefix: str = ""):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            yield from _flat_diff(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else str(k))
    elif a != b:
        yield prefix, a, b


def _prepare_out(ctx: Context) -> None:
    if not distributed.is_main():
        return
    run = ctx.run
    run.root.mkdir(parents=True, exist_ok=True)
    run.complete.unlink(missing_ok=True)
    text = yaml.safe_dump(ctx.recipe.to_dict(), sort_keys=False)
    if not run.recipe.is_file() or run.recipe.read_text() != text:
        write_text(run.recipe, text)


def cache_dir() -> Path:
    return Path(os.environ.get("EDGEKD_CACHE_DIR") or Path.home() / ".cache" / "edgekd")
