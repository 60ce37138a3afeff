"""Suite *quantization trade-off*: a run's FP32 student vs INT8 per calibration method and preset.

For the default recipe's student (a finished ``edgekd run`` folder) it quantizes with every calibration
method (minmax, entropy, percentile) × preset (x86, x86-vnni, tensorrt) plus dynamic INT8 and FP16, then
measures top-1 on the test split (and val), agreement with FP32, and latency at batch 1 and 32 with
:func:`benchmarks.harness.measure`. Models are timed in alternating rounds so drift hits all of them
alike; the INT8/FP32 latency ratio is the median of the per-round ratios. Calibration uses the recipe's
``quantize.calib_samples`` training images, never test images.

Run:
    edgekd run --out runs/digits
    python -m edgekd.benchmarks.suites.quantize_tradeoff runs/digits [--rounds 5] [--threads 1] [--json OUT] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekd.benchmarks.harness import measure
from edgekd.benchmarks.results import machine_line, update_results_md
from edgekd.deploy.errors import InputFileError
from edgekd.deploy.fileio import write_json

RESULTS_MD = Path(__file__).with_name("RESULTS.md")
SECTION = "quantization"
METHODS = ("minmax", "entropy", "percentile")
PRESETS = ("x86", "x86-vnni", "tensorrt")


@dataclass
class Variant:
    """One model to compare: how it was made, and what was measured."""

    name: str
    mode: str
    method: str = "–"
    preset: str = "–"
    path: str = ""
    settings: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    p50: dict = field(default_factory=dict)  # batch → list of per-round p50 ms
    ratios: dict = field(default_factory=dict)  # batch → list of per-round p50 / fp32 p50


def load_run(run_dir: Path) -> tuple[Path, np.ndarray, tuple, tuple]:
    """(student ONNX, calibration inputs, (test x, y), (val x, y)) of a finished run."""
    from edgekd.data import load_data, to_numpy
    from edgekd.recipe import load_recipe

    student = run_dir / "onnx" / "student.onnx"
    if not (run_dir / "RUN_COMPLETE").is_file() or not student.is_file():
        raise InputFileError(f"{run_dir} is not a finished run (no RUN_COMPLETE or onnx/student.onnx)",
                             hint="create one with: edgekd run --out DIR")
    recipe = load_recipe(str(run_dir / "recipe.yaml"), [])
    splits = load_data(recipe.data, recipe.seed)
    calib, _ = to_numpy(splits.train_eval, limit=recipe.quantize.calib_samples)
    return student, calib, to_numpy(splits.test), to_numpy(splits.val)


def make_variants(student: Path, calib: np.ndarray, workdir: Path) -> list[Variant]:
    """FP32 plus every static INT8 method × preset, dynamic INT8 and FP16 (failures become rows)."""
    from edgekd.deploy.quantize import convert_fp16, quantize_dynamic, quantize_static

    variants = [Variant("fp32", "fp32", path=str(student))]
    jobs = [(f"int8-{m}-{p}", "static", m, p, lambda o, m=m, p=p: quantize_static(student, o, calib, method=m,
                                                                                     preset=p))
            for m in METHODS for p in PRESETS]
    jobs += [("int8-dynamic", "dynamic", "–", "auto", lambda o: quantize_dynamic(student, o)),
             ("fp16", "fp16", "–", "–", lambda o: convert_fp16(student, o))]
    for name, mode, method, preset, make in jobs:
        v = Variant(name, mode, method, preset)
        try:
            res = make(workdir / f"{name}.onnx")
            v.path, v.settings, v.preset = res.path, res.settings, res.preset or preset
        except Exception as exc:  # noqa: BLE001 - a failed variant is a row, not a crash
            v.metrics["error"] = f"{type(exc).__name__}: {exc}"[:160]
        variants.append(v)
    return variants


def evaluate(variants: list[Variant], test: tuple, val: tuple) -> None:
    """Top-1 on test and val, agreement with FP32 on test, file size."""
    import onnx

    from edgekd.deploy.runtime.ort import create_session

    ref = None
    for v in (v for v in variants if v.path):
        session, _ = create_session(v.path, "cpu")
        name = session.get_inputs()[0].name
        pred_test = session.run(None, {name: test[0]})[0].argmax(1)
        pred_val = session.run(None, {name: val[0]})[0].argmax(1)
        ref = pred_test if ref is None else ref
        v.metrics.update(test_top1=float((pred_test == test[1]).mean()), val_top1=float((pred_val == val[1]).mean()),
                         agreement=float((pred_test == ref).mean()), size_bytes=os.path.getsize(v.path),
                         nodes=len(onnx.load(v.path).graph.node))


def time_rounds(variants: list[Variant], x: np.ndarray, batches: list[int], rounds: int, threads: int,
                min_time_s: float) -> None:
    """Alternate the models round by round; record each round's p50 and its ratio to FP32's."""
    from edgekd.deploy.runtime.ort import create_session

    live = [v for v in variants if v.path]
    runners = {}
    for v in live:
        session, _ = create_session(v.path, "cpu", threads=threads)
        runners[v.name] = (session, session.get_inputs()[0].name)
    for _ in range(rounds):
        for b in batches:
            feed_x = np.ascontiguousarray(np.resize(x, (b, *x.shape[1:])))
            for v in live:
                session, name = runners[v.name]
                stats = measure(lambda s=session, n=name, f=feed_x: s.run(None, {n: f}), warmup_s=0.1, warmup_runs=10,
                                min_runs=200, min_time_s=min_time_s)
                v.p50.setdefault(b, []).append(stats.p50_ms)
            base = live[0].p50[b][-1]
            for v in live:
                v.ratios.setdefault(b, []).append(v.p50[b][-1] / base)


def table(variants: list[Variant], batches: list[int]) -> str:
    fp32 = variants[0].metrics["test_top1"]
    head = ["model", "mode", "calibration", "preset", "act/weight", "reduce_range", "nodes", "size KB", "test top-1",
            "Δ top-1", "val top-1", "agree w/ FP32"]
    for b in batches:
        head += [f"p50 ms b{b}", f"÷ FP32 b{b}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v in variants:
        if "error" in v.metrics:
            lines.append(f"| {v.name} | {v.mode} | {v.method} | {v.preset} | failed: {v.metrics['error']} |"
                         + " |" * (len(head) - 5))
            continue
        m, s = v.metrics, v.settings
        types = f"{s.get('activation_type', '–')}/{s.get('weight_type', '–')}" if v.mode == "static" else "–"
        row = [v.name, v.mode, v.method, v.preset, types, str(s.get("reduce_range", "–")), str(m["nodes"]),
               f"{m['size_bytes'] / 1024:.1f}", f"{m['test_top1']:.2%}", f"{m['test_top1'] - fp32:+.2%}",
               f"{m['val_top1']:.2%}", f"{m['agreement']:.2%}"]
        for b in batches:
            row += [f"{np.median(v.p50[b]):.4f}", f"{np.median(v.ratios[b]):.2f}×"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def findings(variants: list[Variant], batches: list[int]) -> str:
    ok = [v for v in variants[1:] if "error" not in v.metrics and v.mode == "static"]
    fp32 = variants[0].metrics["test_top1"]
    out = []
    for b in batches:
        best = min(ok, key=lambda v: np.median(v.ratios[b]))
        ratio = float(np.median(best.ratios[b]))
        verdict = "faster" if ratio < 0.95 else "slower" if ratio > 1.05 else "no faster"
        out.append(f"- batch {b}: the fastest static INT8 ({best.name}) runs at {ratio:.2f}× FP32's p50 — "
                   f"{verdict} than FP32 on this CPU.")
    worst = min(ok, key=lambda v: v.metrics["test_top1"])
    out.append(f"- accuracy: static INT8 test top-1 ranges {worst.metrics['test_top1'] - fp32:+.2%} … "
               f"{max(v.metrics['test_top1'] for v in ok) - fp32:+.2%} vs FP32 ({fp32:.2%}).")
    trt = [v for v in ok if v.preset == "tensorrt"]
    cpu = [v for v in ok if v.preset != "tensorrt"]
    if trt and cpu:
        extra = trt[0].metrics["nodes"] - cpu[0].metrics["nodes"]
        out.append(f"- the tensorrt preset (symmetric activations) keeps {extra} more nodes here: a Relu cannot be "
                   "folded into a symmetric quantization, so ONNX Runtime CPU runs it slower; it is meant for "
                   "TensorRT, which fuses these itself.")
    failed = [v.name for v in variants if "error" in v.metrics]
    if failed:
        out.append(f"- failed variants (recorded, not hidden): {', '.join(failed)}.")
    return "\n".join(out)


def markdown(run_dir: Path, variants: list[Variant], batches: list[int], args, n_test: int, n_calib: int) -> str:
    from edgekd.deploy.runtime.cpu import isa_summary

    return f"""## Quantization (FP32 vs INT8)

`edgekd run --out RUN_DIR && python -m edgekd.benchmarks.suites.quantize_tradeoff RUN_DIR --rounds {args.rounds} --threads {args.threads}`

{machine_line()} Detected ISA for the presets: {isa_summary()}.

Default recipe's student (`RUN_DIR/onnx/student.onnx`, {variants[0].metrics["nodes"]} nodes); INT8 calibrated on {n_calib} training images;
top-1 on the test split ({n_test} images). ONNX Runtime CPU, {args.threads} thread(s); p50 per call, median
over {args.rounds} alternating rounds of ≥200 runs and ≥{args.min_time_s}s each; "÷ FP32" is the median of
the per-round ratios (below 1× = faster than FP32).

{table(variants, batches)}

{findings(variants, batches)}
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path, help="a finished `edgekd run --out DIR` folder (default recipe)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batches", default="1,32")
    p.add_argument("--min-time-s", type=float, default=0.3)
    p.add_argument("--json", type=Path, default=None, help="also write the raw measurements here")
    p.add_argument("--no-write", action="store_true", help="print the section, leave RESULTS.md alone")
    args = p.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    student, calib, test, val = load_run(args.run_dir)
    with tempfile.TemporaryDirectory(prefix="edgekd-qtrade-") as tmp:
        variants = make_variants(student, calib, Path(tmp))
        evaluate(variants, test, val)
        time_rounds(variants, test[0], batches, args.rounds, args.threads, args.min_time_s)
    md = markdown(args.run_dir, variants, batches, args, len(test[1]), len(calib))
    print(md)
    if args.json:
        write_json(args.json, [v.__dict__ for v in variants])
    if not args.no_write:
        update_results_md(RESULTS_MD, SECTION, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
