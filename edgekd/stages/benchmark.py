"""The benchmark stage: every artifact — PyTorch teacher/student/baseline, every ONNX export and quantized
candidate — through the same runner protocol and harness as ``edgekd bench``.

All candidates are timed together, interleaved in ``bench.rounds`` rounds at batch 1 and again at
``bench.throughput_batch``, so a slow spell of the machine hits every candidate alike and a "faster" can
be told from noise. Accuracy: the PyTorch rows reuse the training stages' evaluations (each model is
evaluated once per split); each ONNX file is evaluated on validation and test through ONNX Runtime.
"""

from __future__ import annotations

from dataclasses import asdict, replace

from edgekd.artifacts import BenchmarkArtifact
from edgekd.benchmarks.bench import Timing, cold_start, make_row, time_candidates
from edgekd.benchmarks.results import ResultRow

#: real test samples the timed feeds are tiled from
BENCH_SAMPLES = 256


def _timing(cfg, rounds: int | None = None) -> Timing:
    return Timing(cfg.warmup_s, cfg.warmup_runs, cfg.min_runs, cfg.min_time_s, rounds or cfg.rounds)


def _torch_candidates(ctx) -> dict:
    from edgekd.deploy.torch_runner import TorchRunner

    dist, out = ctx.artifact("distill"), {}
    specs = list(ctx.splits.input_specs)
    for trained in (ctx.artifact("teacher").model, dist.student, dist.baseline):
        if trained is not None:
            model = ctx.model(trained.name).cpu()
            out[f"{trained.role}-pytorch"] = (TorchRunner(model, specs, threads=ctx.recipe.bench.threads), trained)
    return out


def _onnx_candidates(ctx) -> dict:
    from edgekd.deploy.runtime.ort import OnnxrtRunner

    b = ctx.recipe.bench
    models = list(ctx.artifact("export").models) + list(ctx.artifact("quantize").models)
    return {m.name: (OnnxrtRunner(ctx.run.path(m.file.path), b.providers, b.threads), m) for m in models}


def run_benchmark(ctx) -> BenchmarkArtifact:
    from edgekd.benchmarks.fingerprint import fingerprint
    from edgekd.deploy.runtime.runner import top1

    b = ctx.recipe.bench
    feed, _ = ctx.splits.arrays("test", BENCH_SAMPLES)
    test, val = ctx.splits.arrays("test"), ctx.splits.arrays("val")
    candidates = {**_torch_candidates(ctx), **_onnx_candidates(ctx)}
    runners, base = {}, {}
    try:
        for name, (runner, made) in candidates.items():
            ctx.ui.stage("benchmark", f"{name}: opening and evaluating")
            cold, rss = cold_start(runner, 1, feed, None)
            runners[name] = runner
            if hasattr(made, "test_top1"):  # a trained PyTorch model: evaluated once, in its stage
                acc = {"top1": made.test_top1, "val_top1": made.val_top1}
                fields = dict(fmt="pytorch", precision="fp32", role=made.role, path=made.weights.path,
                              size_bytes=ctx.run.path(made.weights.path).stat().st_size, params=made.params)
            else:
                acc = {"top1": top1(runner, *test), "val_top1": top1(runner, *val)}
                fields = dict(fmt="onnx", precision=made.precision, role=made.role, variant=made.variant,
                              path=made.file.path, size_bytes=ctx.run.path(made.file.path).stat().st_size,
                              params=made.params)
            base[name] = {**fields, **acc, "samples": int(len(test[1])), "cold_start": cold, "rss_model_bytes": rss}
        rows = _timed_rows(ctx, runners, base, feed, b)
    finally:
        for runner in runners.values():
            runner.__exit__(None, None, None)
    for trained in (made for _, made in candidates.values() if hasattr(made, "test_top1")):
        ctx.model(trained.name).to(ctx.device)  # the PyTorch rows ran on the CPU, like the ONNX ones
    providers = sorted({p for r in rows for p in r.providers if p.endswith("ExecutionProvider")})
    return BenchmarkArtifact(tuple(rows), fingerprint(providers), asdict(_timing(b)))


def _timed_rows(ctx, runners: dict, base: dict, feed: dict, b) -> list[ResultRow]:
    """Batch-1 latency (interleaved rounds) and throughput at ``bench.throughput_batch``, one row each."""
    names = list(runners)
    feeds = dict.fromkeys(names, feed)  # every runner takes the same named inputs (the export keeps the names)
    ctx.ui.stage("benchmark", f"timing {len(names)} artifacts at batch 1, interleaved in {b.rounds} rounds")
    lat = time_candidates(runners, 1, _timing(b), feeds)
    ctx.ui.stage("benchmark", f"throughput at batch {b.throughput_batch}")
    quick = Timing(b.warmup_s / 2, max(b.warmup_runs // 2, 1), max(b.min_runs // 10, 10), b.min_time_s / 2,
                   max(b.rounds // 2, 1))
    thr = time_candidates(runners, b.throughput_batch, quick, feeds)
    rows = []
    for name in names:
        row = make_row(runners[name], lat[name], name=name, batch=1, **base[name])
        if not isinstance(thr[name], str):
            row = replace(row, throughput_sps=b.throughput_batch / (thr[name].mean / 1e3),
                          throughput_batch=b.throughput_batch)
        rows.append(row)
    return rows
