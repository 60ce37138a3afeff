"""Suite *quantization trade-off*: a run's FP32 student vs INT8 per calibration method and preset.

For the default recipe's student (a finished ``edgekd run`` folder) it quantizes with every calibration
method (minmax, entropy, percentile) × preset (x86, x86-vnni, tensorrt) plus dynamic INT8 and FP16, then
measures top-1 on the test split (and val), agreement with FP32, and latency at batch 1 and 32 with
:func:`edgekd.benchmarks.bench.time_candidates`. Models are timed interleaved in rounds
(:func:`edgekd.benchmarks.harness.measure_interleaved`) so drift hits all of them alike; the INT8/FP32
latency ratio is the median of the per-round ratios, and a variant is called faster or slower than FP32 only
beyond the rounds' noise (:func:`edgekd.benchmarks.harness.faster`). Calibration uses the recipe's
``quantize.calib_samples`` training images (:func:`edgekd.runs.calibration_data`), never test images.

Run:
    edgekd run --out runs/digits
    python -m edgekd.benchmarks.suites.quantize_tradeoff runs/digits [--rounds 5] [--threads 1] [--json OUT] [--no-write]
    python -m edgekd.benchmarks.suites.quantize_tradeoff runs/digits --methods minmax --presets x86-vnni
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekd.benchmarks.bench import Timing, time_candidates
from edgekd.benchmarks.harness import faster
from edgekd.benchmarks.results import Latency, machine_line, update_results_md
from edgekd.deploy.errors import InputFileError
from edgekd.deploy.fileio import write_json
from edgekd.deploy.typed import to_json

RESULTS_MD = Path(__file__).resolve().parents[1] / "RESULTS.md"
SECTION = "quantization"
METHODS = ("minmax", "entropy", "percentile")
PRESET_NAMES = ("x86", "x86-vnni", "tensorrt")


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
    latency: dict[int, Latency] = field(default_factory=dict)  # batch → interleaved measurement
    ratios: dict[int, float] = field(default_factory=dict)  # batch → median of per-round p50 / FP32 p50


def load_run(run_dir: Path) -> tuple[Path, np.ndarray, tuple, tuple]:
    """(student ONNX, calibration inputs, (test x, y), (val x, y)) of a finished run."""
    from edgekd.data import load_data, to_numpy
    from edgekd.runs import calibration_data, open_run

    run, recipe = open_run(run_dir)
    student = run.onnx("student")
    if not run.complete.is_file() or not student.is_file():
        raise InputFileError(f"{run_dir} is not a finished run (no RUN_COMPLETE or onnx/student.onnx)",
                             hint="create one with: edgekd run --out DIR")
    calib, val = calibration_data(run_dir, recipe.quantize.calib_samples)
    return student, calib, to_numpy(load_data(recipe.data, recipe.seed).test), val


def make_variants(student: Path, calib: dict, workdir: Path, methods=METHODS,
                  presets=PRESET_NAMES) -> list[Variant]:
    """FP32 plus every static INT8 method × preset, dynamic INT8 and FP16 (failures become rows)."""
    from edgekd.deploy.quantize import convert_fp16, quantize_dynamic, quantize_static

    variants = [Variant("fp32", "fp32", path=str(student))]
    jobs = [(f"int8-{m}-{p}", "static", m, p, lambda o, m=m, p=p: quantize_static(student, o, calib, method=m,
                                                                                     preset=p))
            for m in methods for p in presets]
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


def evaluate(variants: list[Variant], runners: dict, test: tuple, val: tuple) -> None:
    """Top-1 on test and val, agreement with FP32 on test, file size and node count."""
    import onnx

    from edgekd.deploy.runtime.runner import run_all

    ref = None
    for v in (v for v in variants if v.name in runners):
        runner = runners[v.name]
        name = runner.inputs()[0].name
        pred_test = run_all(runner, _feed(name, test[0])).argmax(1)
        pred_val = run_all(runner, _feed(name, val[0])).argmax(1)
        ref = pred_test if ref is None else ref
        v.metrics.update(test_top1=float((pred_test == test[1]).mean()), val_top1=float((pred_val == val[1]).mean()),
                         agreement=float((pred_test == ref).mean()), size_bytes=os.path.getsize(v.path),
                         nodes=len(onnx.load(v.path).graph.node))


def _feed(name: str, x) -> dict:
    """A feed from an array of the one input, or a feed as it is (validation comes as one)."""
    return x if isinstance(x, dict) else {name: x}


def time_variants(variants: list[Variant], runners: dict, x: np.ndarray, batches: list[int], timing: Timing) -> None:
    """Time all variants interleaved at each batch (test images tiled to the batch); FP32 is the reference
    of the per-round ratios. A variant that cannot run gets an error instead."""
    data = {name: {r.inputs()[0].name: x} for name, r in runners.items()}
    for b in batches:
        for name, got in time_candidates(runners, b, timing, data).items():
            v = next(v for v in variants if v.name == name)
            if isinstance(got, Latency):
                v.latency[b] = got
            else:
                v.metrics["error"] = f"batch {b}: {got}"[:160]
        ref = variants[0].latency.get(b)
        for v in (v for v in variants if b in v.latency and ref is not None):
            v.ratios[b] = float(np.median(np.array(v.latency[b].round_p50s) / np.array(ref.round_p50s)))


def measure_variants(variants: list[Variant], test: tuple, val: tuple, batches: list[int], threads: int,
                     timing: Timing) -> None:
    """One ONNX Runtime session per variant (``threads`` intra-op threads) for both accuracy and latency."""
    from edgekd.deploy.runtime.ort import OnnxrtRunner

    with contextlib.ExitStack() as stack:
        runners = {v.name: stack.enter_context(OnnxrtRunner(v.path, "cpu", threads)) for v in variants if v.path}
        evaluate(variants, runners, test, val)
        time_variants(variants, runners, test[0], batches, timing)


def _ok(v: Variant) -> bool:
    """Whether ``v`` was made, evaluated and timed without an error."""
    return "error" not in v.metrics


def table(variants: list[Variant], batches: list[int]) -> str:
    """One line per variant: how it was made, accuracy, size, p50 and ratio to FP32 per batch."""
    fp32 = variants[0].metrics["test_top1"]
    head = ["model", "mode", "calibration", "preset", "act/weight", "reduce_range", "nodes", "size KB", "test top-1",
            "Δ top-1", "val top-1", "agree w/ FP32"]
    for b in batches:
        head += [f"p50 ms b{b}", f"÷ FP32 b{b}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v in variants:
        if not _ok(v):
            lines.append(f"| {v.name} | {v.mode} | {v.method} | {v.preset} | failed: {v.metrics['error']} |"
                         + " |" * (len(head) - 5))
            continue
        m, s = v.metrics, v.settings
        types = f"{s.get('activation_type', '–')}/{s.get('weight_type', '–')}" if v.mode == "static" else "–"
        row = [v.name, v.mode, v.method, v.preset, types, str(s.get("reduce_range", "–")), str(m["nodes"]),
               f"{m['size_bytes'] / 1024:.1f}", f"{m['test_top1']:.2%}", f"{m['test_top1'] - fp32:+.2%}",
               f"{m['val_top1']:.2%}", f"{m['agreement']:.2%}"]
        for b in batches:
            row += [f"{v.latency[b].p50:.4f}", f"{v.ratios[b]:.2f}×" if b in v.ratios else "–"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def verdict(v: Variant, ref: Variant, batch: int) -> str:
    """``faster``/``slower`` than FP32 only beyond the rounds' noise, else ``no faster``."""
    if faster(v.latency[batch], ref.latency[batch]):
        return "faster than FP32"
    if faster(ref.latency[batch], v.latency[batch]):
        return "slower than FP32"
    return "no faster than FP32 (within the rounds' noise)"


def findings(variants: list[Variant], batches: list[int]) -> str:
    """Bullet points: the fastest static INT8 per batch, the accuracy range, the tensorrt preset, failures."""
    ok = [v for v in variants[1:] if _ok(v) and v.mode == "static"]
    fp32 = variants[0].metrics["test_top1"]
    out = []
    for b in batches:
        timed = [v for v in ok if b in v.ratios]
        if not timed:
            continue
        best = min(timed, key=lambda v: v.ratios[b])
        out.append(f"- batch {b}: the fastest static INT8 ({best.name}) runs at {best.ratios[b]:.2f}× FP32's p50 — "
                   f"{verdict(best, variants[0], b)} on this CPU.")
    if ok:
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
    failed = [v.name for v in variants if not _ok(v)]
    if failed:
        out.append(f"- failed variants (recorded, not hidden): {', '.join(failed)}.")
    return "\n".join(out)


def markdown(variants: list[Variant], batches: list[int], args, n_test: int, n_calib: int) -> str:
    """The whole RESULTS.md section."""
    from edgekd.deploy.runtime.cpu import isa_summary

    return f"""## Quantization (FP32 vs INT8)

`edgekd run --out RUN_DIR && python -m edgekd.benchmarks.suites.quantize_tradeoff RUN_DIR --rounds {args.rounds} --threads {args.threads}`

{machine_line()} Detected ISA for the presets: {isa_summary()}.

Default recipe's student (`RUN_DIR/onnx/student.onnx`, {variants[0].metrics["nodes"]} nodes); INT8 calibrated on {n_calib} training images;
top-1 on the test split ({n_test} images). ONNX Runtime CPU, {args.threads} thread(s); p50 per call; all models
timed interleaved in {args.rounds} rounds of ≥{args.min_runs} runs and ≥{args.min_time_s}s per model each; "÷ FP32"
is the median of the per-round ratios (below 1× = faster than FP32).

{table(variants, batches)}

{findings(variants, batches)}
"""


def _names(text: str, allowed, what: str) -> tuple[str, ...]:
    """Comma-separated names, each checked against ``allowed`` (a tuple or a Registry)."""
    from edgekd.deploy.errors import UsageError

    names = tuple(n for n in text.split(",") if n)
    bad = [n for n in names if n not in allowed]
    if bad or not names:
        raise UsageError(f"unknown {what} {bad or text!r}", hint=f"choose from {', '.join(allowed)}")
    return names


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring); returns the exit status."""
    from edgekd.deploy.quantize import PRESETS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path, help="a finished `edgekd run --out DIR` folder (default recipe)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batches", default="1,32")
    p.add_argument("--min-time-s", type=float, default=0.3, help="timed seconds per model per round")
    p.add_argument("--min-runs", type=int, default=200, help="timed calls per model per round")
    p.add_argument("--warmup-s", type=float, default=0.1, help="warm-up seconds per model and batch")
    p.add_argument("--methods", default=",".join(METHODS), help="static INT8 calibration methods")
    p.add_argument("--presets", default=",".join(PRESET_NAMES), help="static INT8 presets (edgekd.deploy.quantize.PRESETS)")
    p.add_argument("--json", type=Path, default=None, help="also write the raw measurements here")
    p.add_argument("--no-write", action="store_true", help="print the section, leave RESULTS.md alone")
    p.add_argument("--results-md", type=Path, default=RESULTS_MD, help="the Markdown file to update")
    args = p.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    methods, presets = _names(args.methods, METHODS, "calibration method"), _names(args.presets, PRESETS, "preset")
    timing = Timing(warmup_s=args.warmup_s, min_runs=args.min_runs * args.rounds,
                    min_time_s=args.min_time_s * args.rounds, rounds=args.rounds)
    student, calib, test, val = load_run(args.run_dir)
    with tempfile.TemporaryDirectory(prefix="edgekd-qtrade-") as tmp:
        variants = make_variants(student, calib, Path(tmp), methods, presets)
        measure_variants(variants, test, val, batches, args.threads, timing)
    md = markdown(variants, batches, args, len(test[1]), len(next(iter(calib.values()))))
    print(md)
    if args.json:
        write_json(args.json, to_json(variants))
    if not args.no_write:
        update_results_md(args.results_md, SECTION, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
