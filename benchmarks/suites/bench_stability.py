"""Suite *stability*: the same benchmark five times, each with a fresh session — how much does p50 move?

A p50 that moves more than the differences you want to show (say INT8 vs FP32) means the comparison is
noise. Uses the run's student ONNX when ``--run`` is given, else a tiny generated CNN. Each repeat is one
:func:`edgekd.benchmarks.bench.bench_models` call (a new session, warm-up, then ``--rounds`` rounds); the
repeats run one after another on purpose: this suite measures how much the same measurement moves over time.

Run:
    python -m edgekd.benchmarks.suites.bench_stability [--run RUN_DIR | --model M.onnx] [--repeats 5] [--no-write]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from edgekd.benchmarks.bench import Timing, bench_models
from edgekd.benchmarks.results import ResultRow, machine_line, publish
from edgekd.benchmarks.tiny_models import make_tiny_cnn

RESULTS_MD = Path(__file__).resolve().parents[1] / "RESULTS.md"


def repeat(path: Path, repeats: int, batch: int, threads: int | None, timing: Timing) -> list[ResultRow]:
    """``repeats`` independent benchmarks (new session each) of ``path``.

    Raises:
        RuntimeError: a repeat failed (the row's error, e.g. a fixed batch size the model cannot take).
    """
    rows = [bench_models([path], batches=(batch,), threads=threads, timing=timing)[0] for _ in range(repeats)]
    failed = next((r for r in rows if r.latency is None), None)
    if failed is not None:
        raise RuntimeError(f"{path} batch {batch}: {failed.error}")
    return rows


def spread(rows: list[ResultRow]) -> dict:
    """Median, min, max, relative range and CV of the repeats' p50."""
    p50 = np.array([r.p50 for r in rows])
    med = float(np.median(p50))
    return {"median": med, "min": float(p50.min()), "max": float(p50.max()),
            "range": float((p50.max() - p50.min()) / med), "cv": float(p50.std(ddof=1) / p50.mean())}


def table(label: str, rows: list[ResultRow], threads: int | None, batch: int) -> str:
    """One line per repeat and the spread across repeats, in Markdown."""
    s = spread(rows)
    lines = [f"Model: {label}; batch {batch}; threads {threads or 'ORT default'}; {len(rows)} repeats.", "",
             "| repeat | p50 ms | p90 ms | p99 ms | within-run CV | runs |", "|---|---|---|---|---|---|"]
    for i, r in enumerate(rows, 1):
        lat = r.latency
        lines.append(f"| {i} | {lat.p50:.4f} | {lat.p90:.4f} | {lat.p99:.4f} | {lat.cv:.1%}"
                     f"{' ⚠' if lat.noisy else ''} | {lat.runs:,} |")
    lines += ["", f"p50 across repeats: median {s['median']:.4f} ms, min {s['min']:.4f}, max {s['max']:.4f}; "
              f"range {s['range']:.1%} of the median, CV {s['cv']:.1%}. Differences smaller than the range are "
              "not meaningful on this machine."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring); returns the exit status."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--run", type=Path, default=None, help="an `edgekd run` folder (uses onnx/student.onnx)")
    src.add_argument("--model", type=Path, default=None, help="an ONNX file or bundle folder")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (0: ORT default)")
    p.add_argument("--min-time-s", type=float, default=2.0, help="timed seconds per repeat")
    p.add_argument("--min-runs", type=int, default=200, help="timed calls per repeat")
    p.add_argument("--warmup-s", type=float, default=0.5, help="warm-up seconds per repeat")
    p.add_argument("--rounds", type=int, default=1, help="rounds per repeat (their p50s: the within-run drift)")
    p.add_argument("--no-write", action="store_true", help="print only; do not update benchmarks/RESULTS.md")
    p.add_argument("--results-md", type=Path, default=RESULTS_MD, help="the Markdown file to update")
    args = p.parse_args(argv)
    threads = args.threads or None
    with tempfile.TemporaryDirectory() as tmp:
        path = args.model or (args.run / "onnx" / "student.onnx" if args.run else make_tiny_cnn(Path(tmp) / "t.onnx"))
        label = str(path) if (args.model or args.run) else "tiny generated CNN (170 params)"
        timing = Timing(warmup_s=args.warmup_s, min_runs=args.min_runs, min_time_s=args.min_time_s,
                        rounds=args.rounds)
        rows = repeat(Path(path), args.repeats, args.batch, threads, timing)
    cmd = "python -m edgekd.benchmarks.suites.bench_stability" + (f" --run {args.run}" if args.run else "") + (
        f" --model {args.model}" if args.model else "")
    body = f"`{cmd}`\n\n{machine_line()}\n\n{table(label, rows, threads, args.batch)}"
    publish(args, "stability", "Stability", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
