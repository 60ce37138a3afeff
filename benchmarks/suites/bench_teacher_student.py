"""Suite *teacher vs student*: a finished run's ONNX artifacts at batch 1 and 32, 1 thread and all cores.

Times ``RUN_DIR/onnx/{teacher,student,student-int8}.onnx`` with :func:`benchmarks.onnx_bench.bench_onnx`
(numpy + onnxruntime only) and reports speedup against the teacher ONNX at the same batch size and thread
count; top-1 comes from ``RUN_DIR/results.json`` (the test split, measured by the pipeline).

Run:
    edgekd run --out runs/digits
    python -m edgekd.benchmarks.suites.bench_teacher_student runs/digits [--min-time-s 2] [--json OUT] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from edgekd.benchmarks.onnx_bench import bench_onnx
from edgekd.benchmarks.results import machine_line, publish, results_document
from edgekd.deploy.errors import InputFileError
from edgekd.deploy.fileio import write_json

RESULTS_MD = Path(__file__).with_name("RESULTS.md")
ARTIFACTS = {"teacher.onnx": ("teacher-onnx-fp32", "teacher"), "student.onnx": ("student-onnx-fp32", "student"),
             "student-int8.onnx": ("student-onnx-int8", "student")}


def run_rows(run_dir: Path, batches: tuple[int, ...], threads: list[int], min_time_s: float) -> list[dict]:
    """Bench every artifact present at every (threads, batch); top-1 copied from results.json."""
    top1 = _pipeline_top1(run_dir)
    rows = []
    for file, (name, role) in ARTIFACTS.items():
        path = run_dir / "onnx" / file
        if not path.is_file():
            continue
        for t in threads:
            for row in bench_onnx(path, batches=batches, threads=t, min_time_s=min_time_s, min_runs=200,
                                  name=name, role=role):
                rows.append({**row, "threads": t, "top1": top1.get(name)})
    if not rows:
        raise InputFileError(f"{run_dir}/onnx has none of {sorted(ARTIFACTS)}",
                             hint="pass a folder written by `edgekd run --out DIR`")
    return rows


def table(rows: list[dict]) -> str:
    teacher = {(r["threads"], r["batch"]): r for r in rows if r["role"] == "teacher"}
    lines = ["| artifact | threads | batch | p50 ms | p90 ms | p99 ms | CV | samples/s | speedup vs teacher "
             "ONNX | top-1 |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["threads"], r["batch"], r["name"])):
        if r.get("error"):
            lines.append(f"| {r['name']} | {r['threads']} | {r['batch']} | failed: {r['error']} |||||||")
            continue
        lat, ref = r["latency_ms"], teacher.get((r["threads"], r["batch"]))
        speedup = f"{ref['latency_ms']['p50'] / lat['p50']:.2f}×" if ref and not ref.get("error") else "–"
        top1 = f"{r['top1']:.2%}" if r.get("top1") is not None else "–"
        lines.append(f"| {r['name']} | {r['threads']} | {r['batch']} | {lat['p50']:.4f} | {lat['p90']:.4f} | "
                     f"{lat['p99']:.4f} | {r['cv']:.1%}{' ⚠' if r['noisy'] else ''} | "
                     f"{r['throughput_sps']:,.0f} | {speedup} | {top1} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path, help="a folder written by `edgekd run --out DIR`")
    p.add_argument("--min-time-s", type=float, default=2.0)
    p.add_argument("--json", type=Path, default=None, help="also write the rows as a results file")
    p.add_argument("--no-write", action="store_true", help="print only; do not update benchmarks/RESULTS.md")
    p.add_argument("--results-md", type=Path, default=RESULTS_MD, help="the Markdown file to update")
    args = p.parse_args(argv)
    threads = sorted({1, os.cpu_count() or 1})
    rows = run_rows(args.run_dir, (1, 32), threads, args.min_time_s)
    body = (f"`python -m edgekd.benchmarks.suites.bench_teacher_student {args.run_dir}` (a run folder from `edgekd run`, "
            f"default recipe)\n\n{machine_line()}\n\n{table(rows)}\n\n"
            "Top-1 is the pipeline's (test split); ⚠ marks a noisy measurement. Latency is per call: at batch "
            "32 divide by 32 for the per-sample cost. samples/s = batch / mean latency.")
    if args.json:
        write_json(args.json, results_document(rows, settings={"suite": "teacher_student"}))
    publish(args, "teacher-student", "Teacher vs student", body)
    return 0


def _pipeline_top1(run_dir: Path) -> dict[str, float]:
    try:
        doc = json.loads((run_dir / "results.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return {a["name"]: a.get("top1") for a in doc.get("artifacts", [])}


if __name__ == "__main__":
    raise SystemExit(main())
