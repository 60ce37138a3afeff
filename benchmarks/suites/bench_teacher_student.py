"""Suite *teacher vs student*: a finished run's ONNX artifacts at batch 1 and 32, 1 thread and all cores.

Times ``RUN_DIR/onnx/{teacher,student,student-int8}.onnx`` with :func:`edgekd.benchmarks.bench.bench_models`
(numpy + onnxruntime only), the three interleaved in rounds at each thread count, and reports the speedup
against the teacher ONNX at the same batch size and thread count
(:func:`edgekd.benchmarks.results.versus_teacher`); top-1 comes from ``RUN_DIR/results.json`` (the test
split, measured by the pipeline).

Run:
    edgekd run --out runs/digits
    python -m edgekd.benchmarks.suites.bench_teacher_student runs/digits [--min-time-s 2] [--json OUT] [--no-write]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from edgekd.benchmarks.bench import Timing, bench_models
from edgekd.benchmarks.harness import faster
from edgekd.benchmarks.results import (
    ResultRow,
    bench_document,
    load_results,
    machine_line,
    publish,
    versus_teacher,
)
from edgekd.deploy.errors import InputFileError
from edgekd.deploy.fileio import write_json
from edgekd.deploy.typed import to_json

RESULTS_MD = Path(__file__).resolve().parents[1] / "RESULTS.md"
ARTIFACTS = {"teacher.onnx": ("teacher-onnx-fp32", "teacher"), "student.onnx": ("student-onnx-fp32", "student"),
             "student-int8.onnx": ("student-onnx-int8", "student")}


def run_rows(run_dir: Path, batches: tuple[int, ...], threads: list[int], timing: Timing) -> list[ResultRow]:
    """Bench every artifact present at every (threads, batch), the artifacts interleaved in rounds; roles
    and top-1 come from the run (``results.json``)."""
    found = {ARTIFACTS[f][0]: (run_dir / "onnx" / f, ARTIFACTS[f][1]) for f in ARTIFACTS
             if (run_dir / "onnx" / f).is_file()}
    if not found:
        raise InputFileError(f"{run_dir}/onnx has none of {sorted(ARTIFACTS)}",
                             hint="pass a folder written by `edgekd run --out DIR`")
    top1 = _pipeline_top1(run_dir)
    paths = [path for path, _ in found.values()]
    return [dataclasses.replace(row, role=found[row.name][1], top1=top1.get(row.name))
            for t in threads
            for row in bench_models(paths, batches=batches, threads=t, timing=timing, names=list(found))]


def table(rows: list[ResultRow]) -> str:
    """One line per (threads, batch, artifact); the speedup is against the teacher ONNX at the same setup."""
    lines = ["| artifact | threads | batch | p50 ms | p90 ms | p99 ms | CV | samples/s | speedup vs teacher "
             "ONNX | top-1 |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r.threads or 0, r.batch, r.name)):
        if r.latency is None:
            lines.append(f"| {r.name} | {r.threads} | {r.batch} | failed: {r.error} |||||||")
            continue
        lat, top1 = r.latency, f"{r.top1:.2%}" if r.top1 is not None else "–"
        lines.append(f"| {r.name} | {r.threads} | {r.batch} | {lat.p50:.4f} | {lat.p90:.4f} | {lat.p99:.4f} | "
                     f"{lat.cv:.1%}{' ⚠' if lat.noisy else ''} | {r.throughput_sps:,.0f} | {speedup(r, rows)} | "
                     f"{top1} |")
    return "\n".join(lines)


def speedup(row: ResultRow, rows: list[ResultRow]) -> str:
    """``row``'s speedup over the teacher ONNX at the same batch and threads; ``≈`` marks a tie, where
    neither is faster beyond the interleaved rounds' noise (:func:`edgekd.benchmarks.harness.faster`)."""
    comp = versus_teacher(row, rows)
    ref = next((r for r in rows if r.name == comp.reference and r.batch == row.batch and r.threads == row.threads
                and r.latency), None)
    if comp.speedup is None or ref is None:
        return "–"
    tie = ref is not row and not faster(row.latency, ref.latency) and not faster(ref.latency, row.latency)
    return f"{comp.speedup:.2f}×{' ≈' if tie else ''}"


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring); returns the exit status."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path, help="a folder written by `edgekd run --out DIR`")
    p.add_argument("--min-time-s", type=float, default=2.0, help="timed seconds per artifact and setup")
    p.add_argument("--min-runs", type=int, default=200, help="timed calls per artifact and setup")
    p.add_argument("--warmup-s", type=float, default=0.5, help="warm-up seconds per artifact and setup")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    p.add_argument("--batches", default="1,32", help="comma-separated batch sizes")
    p.add_argument("--threads", default=None, help="comma-separated thread counts (default: 1 and all cores)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows as a results file")
    p.add_argument("--no-write", action="store_true", help="print only; do not update benchmarks/RESULTS.md")
    p.add_argument("--results-md", type=Path, default=RESULTS_MD, help="the Markdown file to update")
    args = p.parse_args(argv)
    threads = sorted({int(t) for t in args.threads.split(",")} if args.threads else {1, os.cpu_count() or 1})
    timing = Timing(warmup_s=args.warmup_s, min_runs=args.min_runs, min_time_s=args.min_time_s, rounds=args.rounds)
    rows = run_rows(args.run_dir, tuple(int(b) for b in args.batches.split(",")), threads, timing)
    body = (f"`python -m edgekd.benchmarks.suites.bench_teacher_student {args.run_dir}` (a run folder from "
            f"`edgekd run`, default recipe)\n\n{machine_line()}\n\n{table(rows)}\n\n"
            f"Top-1 is the pipeline's (test split); ⚠ marks a noisy measurement. The artifacts are timed "
            f"interleaved in {args.rounds} rounds at each thread count; ≈ marks a speedup within the rounds' noise. Latency is per call: at batch 32 divide by "
            "32 for the per-sample cost. samples/s = batch / mean latency.")
    if args.json:
        write_json(args.json, to_json(bench_document(rows, settings={"suite": "teacher_student", **to_json(timing)})))
    publish(args, "teacher-student", "Teacher vs student", body)
    return 0


def _pipeline_top1(run_dir: Path) -> dict[str, float | None]:
    """Top-1 per artifact name from the run's ``results.json`` (empty when it has none)."""
    path = run_dir / "results.json"
    if not path.is_file():
        return {}
    return {row.name: row.top1 for row in load_results(path).artifacts}


if __name__ == "__main__":
    raise SystemExit(main())
