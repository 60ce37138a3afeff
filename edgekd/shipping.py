"""The shipping half of the pipeline: benchmark every artifact, choose the bundle, write the report.

Every row is timed by :func:`benchmarks.harness.measure` — PyTorch and ONNX Runtime alike — so rows are
comparable; the bundle takes the fastest student ONNX artifact within tolerance on *validation*.
"""

from __future__ import annotations

import json
import logging
import platform
from pathlib import Path
from typing import TYPE_CHECKING

from edgekd import __version__
from edgekd.benchmarks.results import SCHEMA_VERSION
from edgekd.deploy.fileio import write_json

if TYPE_CHECKING:
    from edgekd.pipeline import Context

log = logging.getLogger(__name__)



def _rel(ctx: Context, path: Path) -> str:
    """Artifact paths in results.json are relative to the run folder, so the folder can move."""
    return Path(path).relative_to(ctx.out).as_posix()


def _torch_artifact(ctx: Context, name: str, role: str) -> dict:
    import torch

    from edgekd.deploy.verify import tile_batch
    from edgekd.distill.trainer import evaluate
    from edgekd.models import count_params

    r, model = ctx.recipe, ctx.models[name].cpu().eval()
    x1 = torch.from_numpy(ctx.bench_x[:1])
    xb = torch.from_numpy(tile_batch(ctx.bench_x, r.bench.throughput_batch))

    def run(x):
        with torch.inference_mode():
            return model(x)

    path = ctx.path("weights", f"{name}.safetensors")
    row = {"name": f"{name}-pytorch", "role": role, "format": "pytorch", "precision": "fp32",
           "path": _rel(ctx, path), "size_bytes": path.stat().st_size, "params": count_params(model),
           "top1": evaluate(model, ctx.splits.test, r.data.eval_batch_size, torch.device("cpu")),
           "val_top1": evaluate(model, ctx.splits.val, r.data.eval_batch_size, torch.device("cpu"))}
    row.update(_timings(ctx, row["name"], lambda: run(x1), lambda: run(xb), len(xb)))
    ctx.models[name].to(ctx.device)
    return row


def _onnx_artifact(ctx: Context, key: str, role: str, precision: str, params: int) -> dict:
    import functools

    from edgekd.benchmarks.onnx_bench import make_feed, top1_eval
    from edgekd.data import to_numpy
    from edgekd.deploy.runtime.ort import create_session

    r, path = ctx.recipe, Path(ctx.onnx[key])
    sess, info = create_session(path, r.bench.providers, r.bench.threads)
    inputs = sess.get_inputs()

    def top1(split) -> float:
        return top1_eval(lambda feed: sess.run(None, feed)[0], inputs, *to_numpy(split))["top1"]

    row = {"name": f"{key.replace('-int8', '')}-onnx-{precision}", "role": role, "format": "onnx",
           "precision": precision, "path": _rel(ctx, path), "size_bytes": path.stat().st_size, "params": params,
           "top1": top1(ctx.splits.test), "val_top1": top1(ctx.splits.val), "providers": info.active}
    run1, run_batch = (functools.partial(sess.run, None, make_feed(inputs, n, None, ctx.bench_x))
                       for n in (1, r.bench.throughput_batch))
    row.update(_timings(ctx, row["name"], run1, run_batch, r.bench.throughput_batch))
    return row


def _timings(ctx: Context, name: str, run1, run_batch, batch: int) -> dict:
    """Batch-1 latency and batch-``batch`` throughput, by the same harness as `edgekd bench`."""
    from edgekd.benchmarks.harness import measure, noise_advice

    b = ctx.recipe.bench
    lat = measure(run1, warmup_s=b.warmup_s, warmup_runs=b.warmup_runs, min_runs=b.min_runs,
                  min_time_s=b.min_time_s)
    thr = measure(run_batch, warmup_s=b.warmup_s / 2, warmup_runs=max(b.warmup_runs // 2, 1),
                  min_runs=max(b.min_runs // 10, 10), min_time_s=b.min_time_s / 2)
    advice = noise_advice(lat)
    if advice:
        log.warning("%s: %s", name, advice)
    return {"batch": 1, "latency_ms": lat.latency_dict(), "latency": lat.to_dict(), "cv": lat.cv,
            "noisy": lat.noisy, "throughput_sps": batch / (thr.mean_ms / 1e3), "throughput_batch": batch}


def stage_benchmark(ctx: Context) -> None:
    import torch

    from edgekd.data import to_numpy
    from edgekd.models import count_params

    torch.set_num_threads(ctx.recipe.bench.threads or torch.get_num_threads())
    ctx.bench_x, _ = to_numpy(ctx.splits.test, limit=256)
    rows = []
    for name, role in (("teacher", "teacher"), ("student", "student"), ("baseline", "baseline")):
        if name in ctx.models:
            ctx.ui.stage("benchmark", f"{name}-pytorch")
            rows.append(_torch_artifact(ctx, name, role))
    for key, role, precision in (("teacher", "teacher", "fp32"), ("student", "student", "fp32"),
                                 ("student-int8", "student", "int8")):
        if key in ctx.onnx:
            ctx.ui.stage("benchmark", f"{key}-onnx")
            params = count_params(ctx.models["student" if key.startswith("student") else "teacher"])
            rows.append(_onnx_artifact(ctx, key, role, precision, params))
    _compare_with_teacher(rows)
    ctx.results["artifacts"] = rows


def _compare_with_teacher(rows: list[dict]) -> None:
    ref = next((r for r in rows if r["role"] == "teacher" and r["format"] == "pytorch"), None)
    if ref is None:
        return
    for r in rows:
        r["vs_teacher"] = {"speedup": ref["latency_ms"]["p50"] / r["latency_ms"]["p50"],
                           "size_ratio": r["size_bytes"] / ref["size_bytes"],
                           "top1_delta": r["top1"] - ref["top1"]}


def choose_bundle(rows: list[dict], tolerance: float) -> tuple[dict | None, dict]:
    """The fastest student ONNX artifact whose *validation* top-1 is within ``tolerance`` of FP32's."""
    cands = [r for r in rows if r["role"] == "student" and r["format"] == "onnx"]
    fp32 = next((r for r in cands if r["precision"] == "fp32"), None)
    if fp32 is None:
        return None, {}
    reasons, ok = {}, []
    for r in cands:
        if r["val_top1"] < fp32["val_top1"] - tolerance:
            reasons[r["name"]] = (f"rejected: validation top-1 {r['val_top1']:.2%} is more than "
                                  f"{tolerance:.2%} below FP32's {fp32['val_top1']:.2%}")
        else:
            ok.append(r)
    best = min(ok, key=lambda r: r["latency_ms"]["p50"])
    for r in ok:
        ratio = r["latency_ms"]["p50"] / best["latency_ms"]["p50"]
        reasons[r["name"]] = ("chosen: fastest (p50 {:.3f} ms) within accuracy tolerance".format(
            r["latency_ms"]["p50"]) if r is best else
            f"not chosen: {ratio:.2f}× slower than {best['name']} at batch 1 on this device")
    return best, reasons


def stage_report(ctx: Context) -> None:
    import torch

    from edgekd.benchmarks.fingerprint import fingerprint
    from edgekd.deploy.bundle import write_bundle
    from edgekd.report import write_run_report

    r, rows = ctx.recipe, ctx.results.get("artifacts", [])
    chosen, reasons = choose_bundle(rows, r.bundle.tolerance)
    device = fingerprint(sorted({p for row in rows for p in row.get("providers", [])}))
    device.setdefault("cpu", platform.processor())
    device["torch"] = torch.__version__
    results = {"schema_version": SCHEMA_VERSION, "edgekd_version": __version__, "recipe": r.to_dict(),
               "device": device, "artifacts": rows, "distillation": ctx.results.get("distillation"),
               "export": {k: v for k, v in ctx.results.get("export", {}).items()},
               "quantize": ctx.results.get("quantize"), "teacher_source": ctx.results.get("teacher_source"),
               "training": {k: v for k, v in ctx.results.items() if k.endswith("_fit")},
               "bundle": {"chosen": chosen["name"] if chosen else None, "reasons": reasons,
                          "tolerance": r.bundle.tolerance},
               "timings_s": ctx.timings}
    if chosen:
        data_info = json.loads(ctx.path("data.json").read_text())
        write_bundle(ctx.path("bundle"), ctx.out / chosen["path"], bundle_meta(data_info, chosen, device, r.name))
    write_json(ctx.path("results.json"), results)
    write_run_report(results, ctx.out)
    ctx.results["final"] = results
    ctx.ui.done("report", f"{ctx.path('results.json')}, report.md, pareto.png, bundle/ "
                          f"({chosen['name'] if chosen else 'no bundle'})")


def bundle_meta(data_info: dict, row: dict, device: dict, recipe_name: str) -> dict:
    """model.json for a bundle made from artifact ``row`` of a run (``data_info`` is its data.json)."""
    return {"input": {"name": "input", "shape": [None, *data_info["input_shape"]], "dtype": "float32",
                      "layout": "NCHW"},
            "output": {"name": "logits", "kind": "logits"}, "normalization": data_info["normalization"],
            "labels": data_info["labels"], "precision": row["precision"], "artifact": row["name"],
            "metrics": {"top1": row["top1"], "val_top1": row.get("val_top1"), "latency_ms": row["latency_ms"],
                        "device": device.get("cpu")},
            "producer": {"edgekd": __version__, "torch": device.get("torch"),
                         "onnxruntime": device.get("onnxruntime"), "recipe": recipe_name}}
