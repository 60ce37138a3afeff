"""Hardware-aware student choice (the ``select`` stage): which candidate student meets the latency budget on
the target with the best accuracy.

1. each candidate in ``students.candidates`` is built (seeded) and exported *untrained* to ONNX with the
   recipe's exporter — latency does not depend on the weights;
2. its latency is the p50 at ``students.batch``: measured here with every candidate interleaved in rounds
   (:func:`~edgekd.benchmarks.bench.bench_models`, the recipe's ``bench`` settings), or read from a device
   profile (``students.profile``: an ``edgekd bench --json`` file made on the target), matched by the
   structural signature of the graph (:mod:`edgekd.benchmarks.profile`). A candidate the profile does not
   hold is an error naming it — never timed here instead;
3. candidates whose p50 is over ``students.latency_budget_ms`` are dropped (never trained, never chosen);
4. the rest are ranked by a short distillation (``students.rank_epochs``, the recipe's knobs, validation
   top-1; ties go to the faster); the winner is what the ``distill`` stage (and ``tune``) train.

Example:
    >>> art = choose_student(ctx)  # doctest: +SKIP  (the select stage; see edgekd.tuning.select_student)
    >>> art.chosen, art.decision  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgekd.artifacts import CandidateResult, SelectArtifact
from edgekd.deploy.errors import UsageError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Exported:
    """A candidate exported untrained: where, how big, and its structural signature."""

    index: int
    name: str
    model: str
    path: Path
    params: int
    signature: str
    structure: str


def candidate_name(c) -> str:
    """``name``, else the model and its kwargs (``edgekd:cnn channels=[4, 8, 16] hidden=16``)."""
    return c.name or " ".join([c.model, *(f"{k}={v}" for k, v in sorted(c.kwargs.items()))])


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:80]


def export_candidates(recipe, splits, folder: Path) -> list[Exported]:
    """Export every candidate, untrained, to ``folder/NN-name.onnx`` (the files a device profile benches).

    Exports are cached by content (architecture, data shape, exporter, versions): choosing again with another
    budget or profile does not export again.

    Example:
        >>> files = export_candidates(recipe, load_data(recipe.data), Path("candidates"))  # doctest: +SKIP
    """
    from edgekd.benchmarks.profile import describe, structural_signature
    from edgekd.deploy.fileio import refuse_foreign
    from edgekd.deploy.runtime.onnxinfo import read_onnx
    from edgekd.models import count_params

    paths = [Path(folder) / f"{i:02d}-{_slug(candidate_name(c))}.onnx" for i, c in enumerate(recipe.students.candidates)]
    for path in paths:  # every file checked before the first is written
        refuse_foreign(path, "--export-candidates")
    out = []
    for i, (c, path) in enumerate(zip(recipe.students.candidates, paths, strict=True)):
        name = candidate_name(c)
        path, model = _export_one(recipe, splits, c, path)
        info = read_onnx(path)
        out.append(Exported(i, name, c.model, path, count_params(model), structural_signature(info),
                            describe(info)))
    return out


def _export_one(recipe, splits, c, path: Path):
    """``(path, model)``: candidate ``c`` built (seeded) and exported to ``path`` — or copied from the cache."""
    import shutil

    import torch

    from edgekd import __version__
    from edgekd.deploy.export import export_onnx
    from edgekd.deploy.fileio import atomic_write_via
    from edgekd.pipeline import cache_dir
    from edgekd.runfolder import digest_of
    from edgekd.tuning.trial import build_student_for

    model = build_student_for(recipe.seed, c, splits)
    e = recipe.export
    key = digest_of([c.model, c.kwargs, splits.num_classes, list(splits.input_shape), e.opset, e.exporter,
                     e.fallback, recipe.seed, torch.__version__, __version__])
    cached = cache_dir() / "candidates" / f"{key}.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    if cached.is_file() and not (c.checkpoint or c.weights):
        atomic_write_via(path, lambda tmp: shutil.copyfile(cached, tmp))
        return path, model
    export_onnx(model.cpu().eval(), torch.zeros(1, *splits.input_shape), path, opset=e.opset, exporter=e.exporter,
                fallback=e.fallback)
    if not (c.checkpoint or c.weights):
        atomic_write_via(cached, lambda tmp: shutil.copyfile(path, tmp))
    return path, model


# ------------------------------------------------------------------------------------------- latency
def local_latency(exported: list[Exported], recipe) -> dict[str, tuple[float, str]]:
    """p50 of each candidate timed here, all interleaved in rounds: ``{name: (ms, source)}``."""
    from edgekd.benchmarks.bench import Timing, bench_models

    b, batch = recipe.bench, recipe.students.batch
    rows = bench_models([e.path for e in exported], batches=(batch,), providers=b.providers, threads=b.threads,
                        timing=Timing(b.warmup_s, b.warmup_runs, b.min_runs, b.min_time_s, b.rounds),
                        names=[e.name for e in exported])
    failed = [f"{r.name}: {r.error}" for r in rows if r.error]
    if failed:
        raise UsageError(f"a candidate student could not be timed at batch {batch}: {'; '.join(failed)}",
                         hint="fix or remove that candidate (students.candidates)")
    return {r.name: (r.p50, f"here ({r.runtime}, {b.rounds} interleaved rounds)") for r in rows}


def profile_latency(exported: list[Exported], recipe) -> dict[str, tuple[float, str]]:
    """p50 of each candidate from the device profile, matched by structural signature; refuses a candidate
    the profile does not hold."""
    from edgekd.benchmarks.profile import profile_rows
    from edgekd.benchmarks.results import load_results

    s = recipe.students
    doc = load_results(s.profile)
    rows = profile_rows(doc, s.batch)
    missing = [e for e in exported if e.signature not in rows]
    if missing:
        raise UsageError(_missing_text(missing, doc, s), hint=f"export the candidates with `edgekd tune RECIPE "
                         f"--export-candidates DIR`, bench those files on the device (`edgekd bench DIR/*.onnx "
                         f"--batch {s.batch} --json profile.json`) and point students.profile at that file")
    where = f"profile {Path(s.profile).name} ({doc.device.label})"
    return {e.name: (max(r.p50 for r in rows[e.signature]), where) for e in exported}


def _missing_text(missing: list[Exported], doc, s) -> str:
    names = "; ".join(f"'{e.name}' (signature {e.signature}: {e.structure})" for e in missing)
    unsigned = sum(1 for r in doc.artifacts if not (r.extra or {}).get("signature"))
    text = f"students.profile {s.profile} has no timed row at batch {s.batch} for candidate(s) {names}"
    return text + (f"; {unsigned} of its rows carry no structural signature (made by an older edgekd bench?)"
                   if unsigned else "")


# ------------------------------------------------------------------------------------------- choice
def rank(ctx, survivors: list[Exported]) -> dict[str, float]:
    """Validation top-1 of each candidate after a short distillation with the recipe's knobs."""
    from edgekd.tuning.trial import short_distill

    r, out = ctx.recipe, {}
    progress = ctx.ui.progress("select", len(survivors))
    try:
        for e in survivors:
            fit = short_distill(ctx, r, r.students.candidates[e.index], r.students.rank_epochs, name=e.name)
            out[e.name] = fit.best_val_top1
            progress.advance(1)
            ctx.ui.stage("select", f"{e.name}: validation top-1 {fit.best_val_top1:.2%} after "
                                   f"{r.students.rank_epochs} epoch(s)")
    finally:
        progress.close()
    return out


def _results(exported, latency, budget, scores) -> list[CandidateResult]:
    out = []
    for e in exported:
        ms, source = latency[e.name]
        over = budget is not None and ms > budget
        note = f"dropped: p50 {ms:.4g} ms > budget {budget:g} ms" if over else ""
        out.append(CandidateResult(e.name, e.index, e.model, e.params, e.signature, float(ms), source, over,
                                   scores.get(e.name), note))
    return out


def _winner(results: list[CandidateResult]) -> CandidateResult:
    return max((c for c in results if not c.over_budget), key=lambda c: (c.val_top1 or 0.0, -c.latency_ms))


def choose_student(ctx) -> SelectArtifact:
    """The select stage's work: export, time, drop, rank, choose (module docstring); draws ``students.png``."""
    r, s = ctx.recipe, ctx.recipe.students
    with tempfile.TemporaryDirectory(prefix="edgekd-candidates-") as tmp:
        exported = export_candidates(r, ctx.splits, Path(tmp))
        ctx.ui.stage("select", f"{len(exported)} candidates exported untrained; timing them at batch {s.batch} "
                               + (f"from {s.profile}" if s.profile else "here, interleaved"))
        latency = (profile_latency if s.profile else local_latency)(exported, r)
    survivors = [e for e in exported if s.latency_budget_ms is None or latency[e.name][0] <= s.latency_budget_ms]
    if not survivors:
        fastest = min(exported, key=lambda e: latency[e.name][0])
        raise UsageError(f"no candidate student meets students.latency_budget_ms {s.latency_budget_ms:g}: the "
                         f"fastest, '{fastest.name}', has p50 {latency[fastest.name][0]:.4g} ms",
                         hint="raise the budget or add smaller candidates")
    results = _results(exported, latency, s.latency_budget_ms, rank(ctx, survivors))
    best = _winner(results)
    decision = _decision(best, results, s)
    ctx.ui.done("select", decision)
    files = _plot(ctx, results, s.latency_budget_ms, best.name)
    return SelectArtifact(True, tuple(results), best.name, best.index, s.latency_budget_ms, s.batch, s.rank_epochs,
                          decision, files)


def _decision(best: CandidateResult, results: list[CandidateResult], s) -> str:
    dropped = [c.name for c in results if c.over_budget]
    budget = f"budget {s.latency_budget_ms:g} ms" if s.latency_budget_ms is not None else "no latency budget"
    text = (f"chose {best.name}: validation top-1 {best.val_top1:.2%} after {s.rank_epochs} epoch(s), "
            f"p50 {best.latency_ms:.4g} ms at batch {s.batch} ({budget})")
    return text + (f"; over budget, dropped: {', '.join(dropped)}" if dropped else "")


def _plot(ctx, results, budget, chosen) -> tuple[str, ...]:
    from edgekd.deploy.errors import DependencyError
    from edgekd.tuning.plots import plot_candidates

    try:
        path = plot_candidates(results, budget, chosen, ctx.run.students_plot)
    except DependencyError as exc:
        log.warning("skipping %s: %s", ctx.run.students_plot.name, exc.message)
        return ()
    return (ctx.run.rel(path),)
