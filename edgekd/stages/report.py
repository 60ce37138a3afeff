"""The report stage: choose what ships (one rule, noise-aware), write ``results.json``, ``report.md``,
``pareto.png`` and ``bundle/``.

The bundle rule: among the student's ONNX candidates whose *validation* top-1 is within
``bundle.tolerance`` of the FP32 export's, ship the fastest at batch 1 — where "faster" must beat the
measured noise (every interleaved round of one below every round of the other); candidates that tie
within noise are decided by validation accuracy, then size. :func:`choose_bundle` is the only place this
rule lives; ``edgekd report`` applies it per device.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from collections.abc import Iterator
from pathlib import Path

from edgekd import __version__
from edgekd.artifacts import DataArtifact, OnnxModel, ReportArtifact
from edgekd.benchmarks.harness import faster
from edgekd.benchmarks.results import BundleChoice, Device, ResultRow, ResultsDocument, now_iso

RULE = ("the fastest student ONNX artifact at batch 1 whose validation top-1 is within the tolerance of the "
        "FP32 export; faster only beyond the measured noise, ties go to the more accurate, then the smaller")


def _band(r: ResultRow) -> str:
    rounds = r.latency.round_p50s if r.latency else ()
    if len(rounds) > 1:
        return f"p50 {r.p50:.4g} ms, rounds {min(rounds):.4g}–{max(rounds):.4g} ms"
    return f"p50 {r.p50:.4g} ms"


def choose_bundle(rows: list[ResultRow], tolerance: float, accuracy: str = "val_top1",
                  budget_ms: float | None = None) -> BundleChoice:
    """Apply the bundle rule (module docstring) to one device's rows; ``accuracy`` names the row field judged
    (``val_top1`` in a run; ``top1`` on ``--data`` for ``edgekd bench`` files). With ``budget_ms`` an artifact
    whose batch-1 p50 exceeds it is never shipped."""
    cands = [r for r in rows if r.role == "student" and r.format == "onnx" and r.batch == 1 and r.latency]
    measured = all(getattr(r, accuracy) is not None for r in cands)

    def acc(r: ResultRow) -> float:
        return getattr(r, accuracy) if measured else 0.0

    fp32 = next((r for r in cands if r.precision == "fp32" and r.variant in (None, "export")), None)
    if fp32 is None:
        return BundleChoice(None, RULE, {}, tolerance, "no bundle: no timed FP32 student ONNX to compare with")
    reasons, ok = {}, []
    for r in cands:
        if acc(r) < acc(fp32) - tolerance - 1e-12:
            reasons[r.name] = (f"rejected: {_what(accuracy)} {acc(r):.2%} is more than {100 * tolerance:.2f} pp "
                               f"below the FP32 export's {acc(fp32):.2%}")
        else:
            ok.append(r)
    if budget_ms is not None:
        for r in (r for r in ok if r.p50 > budget_ms):
            reasons[r.name] = f"rejected: p50 {r.p50:.4g} ms is over the latency budget of {budget_ms:g} ms"
        within = [r for r in ok if r.p50 <= budget_ms]
        if not within:
            fastest = min(ok or cands, key=lambda r: r.p50)
            return BundleChoice(None, RULE, reasons, tolerance,
                                f"no bundle: no student artifact within tolerance meets the latency budget of "
                                f"{budget_ms:g} ms (the fastest, {fastest.name}, has p50 {fastest.p50:.4g} ms)")
        ok = within
    unbeaten = [r for r in ok if not any(faster(o.latency, r.latency) for o in ok if o is not r)]
    best = max(unbeaten, key=lambda r: (acc(r), -(r.size_bytes or 0), r.name == fp32.name))
    ties = [r for r in unbeaten if r is not best]
    for r in ok:
        if r is best:
            continue
        if r in ties:
            why = f"more accurate ({_what(accuracy)})" if acc(best) > acc(r) else "smaller" if (
                (best.size_bytes or 0) < (r.size_bytes or 0)) else "the FP32 reference"
            reasons[r.name] = f"not chosen: ties with {best.name} within the measured noise ({_band(r)}); " \
                              f"{best.name} is {why}"
        else:
            reasons[r.name] = f"not chosen: slower than {best.name} beyond the measured noise ({_band(r)} vs " \
                              f"{_band(best)})"
    tie_text = f"; ties within noise with {', '.join(t.name for t in ties)}" if ties else ""
    accuracy_text = f", {_what(accuracy)} {acc(best):.2%}" if measured else ""
    reasons[best.name] = f"chosen: fastest within tolerance ({_band(best)}{accuracy_text}){tie_text}"
    decision = f"ship {best.name}: {reasons[best.name].removeprefix('chosen: ')}"
    if not measured:
        decision += " — accuracy not measured here (bench with --data): chosen by latency alone"
    return BundleChoice(best.name, RULE, reasons, tolerance, decision)


def bundle_budget(recipe) -> float | None:
    """``bundle.latency_budget_ms``, else the student choice's budget when its candidates were timed on this
    machine (a ``students.profile`` budget is another device's: this machine's latency cannot judge it)."""
    s = recipe.students
    if recipe.bundle.latency_budget_ms is not None:
        return recipe.bundle.latency_budget_ms
    return s.latency_budget_ms if s.candidates and not s.profile else None


def _what(accuracy: str) -> str:
    return "validation top-1" if accuracy == "val_top1" else "top-1"


def bundle_manifest(data: DataArtifact, row: ResultRow, model_path, device: Device, recipe_name: str):
    """``model.json`` for a bundle of artifact ``row`` (the ONNX file at ``model_path``)."""
    from edgekd.deploy.runtime.bundle import BundleManifest
    from edgekd.deploy.runtime.intake import check_model
    from edgekd.deploy.runtime.runner import TensorSpec

    info = check_model(model_path)
    specs = [TensorSpec(v.name, v.elem_type, v.dims) for v in info.graph_inputs]
    outs = [TensorSpec(v.name, v.elem_type, v.dims) for v in info.outputs]
    metrics = {"top1": row.top1, "val_top1": row.val_top1, "latency_p50_ms": row.p50, "device": device.label}
    producer = {"edgekd": __version__, "torch": device.torch, "onnxruntime": device.onnxruntime,
                "recipe": recipe_name}
    return BundleManifest(data.task, tuple(specs), tuple(outs), data.preprocessing, data.labels, row.precision,
                          artifact=row.name, role=row.role, variant=row.variant, metrics=metrics, producer=producer)


@contextlib.contextmanager
def bundle_model(raw_pixels, data: DataArtifact, path, precision: str) -> Iterator[tuple[Path, DataArtifact]]:
    """The model file a bundle holds and the data (contract) it records: the artifact as it is, or with
    ``export.raw_pixels`` the artifact behind a uint8-pixel prefix (:mod:`edgekd.deploy.raw_pixels`), checked against
    the same preprocessing done outside before it may ship."""
    if not raw_pixels.enabled:
        yield Path(path), data
        return
    from edgekd.deploy.raw_pixels import add_raw_pixel_input, check_raw_pixel_parity

    with tempfile.TemporaryDirectory(prefix="edgekd-raw-pixels-") as tmp:
        out = Path(tmp) / "model.onnx"
        raw = add_raw_pixel_input(path, out, data.preprocessing, raw_pixels.layout)
        check_raw_pixel_parity(path, out, raw, precision=precision)
        yield out, dataclasses.replace(data, preprocessing=raw)


def data_files(run, data: DataArtifact) -> dict[str, Path]:
    """The run folder's data files a bundle ships beside the model (a text model's ``tokenizer.json``)."""
    return {name: run.root / name for name in data.files}


def onnx_models(ctx) -> dict[str, OnnxModel]:
    return {m.name: m for stage in ("export", "quantize") for m in ctx.artifact(stage).models}


def results_document(ctx, choice: BundleChoice) -> ResultsDocument:
    from edgekd.deploy.typed import to_json

    bench, dist = ctx.artifact("benchmark"), ctx.artifact("distill")
    return ResultsDocument(
        "run", bench.device, bench.rows, created=now_iso(), edgekd_version=__version__,
        settings={"bench": to_json(ctx.recipe.bench)}, bundle=choice, recipe=ctx.recipe.to_dict(),
        distillation={**distillation_summary(dist), **search_summary(ctx)}, export=to_json(ctx.artifact("export")),
        quantize=to_json(ctx.artifact("quantize")),
        training={m.name: to_json(m.selection) for m in (ctx.artifact("teacher").model, dist.student, dist.baseline)
                  if m is not None},
        teacher_source=ctx.artifact("teacher").source, timings_s=dict(ctx.timings),
        stages={name: record.digest for name, record in ctx.records.items()})


def search_summary(ctx) -> dict:
    """``student_choice`` and ``tune`` (their artifacts) when the select and tune stages were on."""
    from edgekd.deploy.typed import to_json

    found = {"student_choice": ctx.artifacts.get("select"), "tune": ctx.artifacts.get("tune")}
    return {key: to_json(art) for key, art in found.items() if art is not None and art.enabled}


def distillation_summary(dist) -> dict:
    from edgekd.deploy.typed import to_json

    base = dist.baseline
    return {"method": dist.method, "temperature": dist.temperature, "alpha": dist.alpha,
            "teacher_outputs": dist.teacher_outputs, "augmentation": dist.augmentation,
            "teacher_top1": dist.teacher_top1,
            "student_top1": dist.student.test_top1, "baseline_top1": base.test_top1 if base else None,
            "gain": dist.student.test_top1 - base.test_top1 if base else None,
            "seeds": to_json(dist.seeds), "gain_over_seeds": to_json(dist.gain), "shipped_seed": dist.shipped_seed,
            "shipped_because": dist.shipped_because}


def run_report(ctx) -> ReportArtifact:
    from edgekd.deploy.bundle import write_bundle
    from edgekd.deploy.fileio import write_json
    from edgekd.deploy.typed import to_json
    from edgekd.report import write_run_report

    bench = ctx.artifact("benchmark")
    choice = choose_bundle(list(bench.rows), ctx.recipe.bundle.tolerance, budget_ms=bundle_budget(ctx.recipe))
    if choice.chosen:
        row = next(r for r in bench.rows if r.name == choice.chosen)
        path = ctx.run.path(onnx_models(ctx)[choice.chosen].file.path)
        with bundle_model(ctx.recipe.export.raw_pixels, ctx.artifact("data"), path, row.precision) as (model, data):
            write_bundle(ctx.run.bundle, model, bundle_manifest(data, row, model, bench.device, ctx.recipe.name),
                         extra_files=data_files(ctx.run, data))
    doc = results_document(ctx, choice)
    write_json(ctx.run.results, to_json(doc))
    files = write_run_report(doc, ctx.run.root)
    ctx.ui.done("report", f"{choice.decision}")
    return ReportArtifact(choice, tuple(ctx.run.rel(p) for p in [ctx.run.results, *files.values()]))
