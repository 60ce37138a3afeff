"""Suite *harness overhead*: our p50 against a bare ``session.run`` loop, and the near-empty-model floor.

For each model, in one process and one session per model, rounds alternate (so drift hits all alike): the
harness (:func:`edgekd.benchmarks.harness.measure`), a bare loop timing each ``session.run`` with
``perf_counter_ns`` (its median), and a bare loop timed as a whole (its mean). The models themselves are
interleaved too: every round visits every model, in a rotating order, so the floor they are compared with
was measured at the same time. The ratios harness/bare should be ~1.00 (acceptance: p50 within 5 %). The
near-empty model (one ``Identity``) gives the floor of framework overhead per call: a tiny model's latency
above that floor is what its FLOPs cost, so a student 10× smaller in FLOPs is not 10× faster when both sit
near the floor.

Run:
    python -m edgekd.benchmarks.suites.bench_overhead [--run RUN_DIR] [--threads 1] [--rounds 20] [--no-write]
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import numpy as np

from edgekd.benchmarks.harness import measure
from edgekd.benchmarks.results import machine_line, publish
from edgekd.benchmarks.tiny_models import make_identity, make_tiny_cnn
from edgekd.deploy.runtime.ort import OnnxrtRunner
from edgekd.deploy.runtime.runner import make_feed

RESULTS_MD = Path(__file__).resolve().parents[1] / "RESULTS.md"
KEYS = ("h50", "hmean", "b50", "bmean")


def bare_per_call(run, n: int) -> float:
    """Median ms of ``n`` calls, each timed alone: the simplest honest loop."""
    clock, times = time.perf_counter_ns, np.empty(n, dtype=np.int64)
    for i in range(n):
        t0 = clock()
        run()
        times[i] = clock() - t0
    return float(np.median(times) / 1e6)


def bare_total(run, n: int) -> float:
    """Mean ms of ``n`` back-to-back calls timed as a whole (no per-call clock at all)."""
    t0 = time.perf_counter_ns()
    for _ in range(n):
        run()
    return (time.perf_counter_ns() - t0) / n / 1e6


def one_round(run, min_runs: int, min_time_s: float) -> dict[str, float]:
    """The harness, then both bare loops with as many calls as the harness made, on the same call."""
    stats = measure(run, warmup_s=0.1, warmup_runs=20, min_runs=min_runs, min_time_s=min_time_s)
    return {"h50": stats.p50, "hmean": stats.mean, "b50": bare_per_call(run, stats.runs),
            "bmean": bare_total(run, stats.runs)}


def compare_models(paths: dict[str, Path], threads: int | None, rounds: int, min_time_s: float,
                   min_runs: int = 500) -> dict[str, dict[str, float]]:
    """Alternate harness and bare loops ``rounds`` times on one session per model, models interleaved.

    Returns, per model, medians over rounds and the median of the *per-round* ratios: a machine whose
    speed drifts between rounds (VMs, shared hosts) moves both halves of a round alike, so paired ratios
    stay honest.
    """
    names = list(paths)
    got = {n: {k: [] for k in KEYS} for n in names}
    with contextlib.ExitStack() as stack:
        calls = {}
        for name, path in paths.items():
            runner = stack.enter_context(OnnxrtRunner(path, None, threads))
            calls[name] = runner.bind(make_feed(runner.inputs(), 1))
        for r in range(rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                for key, value in one_round(calls[name], min_runs, min_time_s).items():
                    got[name][key].append(value)
    return {n: _summary(got[n]) for n in names}


def _summary(got: dict[str, list[float]]) -> dict[str, float]:
    """Medians over rounds and the medians of the per-round harness/bare ratios."""
    out = {k: float(np.median(v)) for k, v in got.items()}
    out["r50"] = float(np.median(np.array(got["h50"]) / np.array(got["b50"])))
    out["rmean"] = float(np.median(np.array(got["hmean"]) / np.array(got["bmean"])))
    return out


def models(run_dir: Path | None, tmp: Path) -> dict[str, Path]:
    """The near-empty floor first, a tiny CNN, then the run's student and teacher ONNX when given."""
    found = {"near-empty (Identity)": make_identity(tmp / "empty.onnx"),
             "tiny CNN (170 params)": make_tiny_cnn(tmp / "tiny.onnx")}
    for name in ("student", "teacher"):
        if run_dir and (run_dir / "onnx" / f"{name}.onnx").is_file():
            found[f"digits {name} (fp32)"] = run_dir / "onnx" / f"{name}.onnx"
    return found


def table(results: dict[str, dict], threads: int | None, rounds: int) -> str:
    """The Markdown table (the first model is the floor) and the acceptance line."""
    floor = next(iter(results.values()))["h50"]
    lines = [f"Threads: {threads or 'ORT default'}; batch 1; {rounds} alternating rounds, models interleaved; "
             "latencies are medians over rounds, ratios the median of the per-round ratios (harness / bare).",
             "", "| model | harness p50 ms | bare loop p50 ms | p50 ratio | harness mean ms | "
             "bare loop mean ms | mean ratio | p50 above floor ms |", "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['h50']:.4f} | {r['b50']:.4f} | {r['r50']:.3f} | {r['hmean']:.4f} "
                     f"| {r['bmean']:.4f} | {r['rmean']:.3f} | {r['h50'] - floor:.4f} |")
    worst = max(abs(r["r50"] - 1) for r in results.values())
    lines += ["", f"Largest harness/bare p50 deviation: {worst:.1%} (acceptance: within 5 %). The floor "
              f"(near-empty model) is {floor * 1e3:.1f} µs per call: framework overhead, not compute."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring); returns the exit status."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, default=None, help="an `edgekd run` folder (adds its ONNX models)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (0: ORT default)")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--min-time-s", type=float, default=0.25, help="timed seconds per harness run per round")
    p.add_argument("--min-runs", type=int, default=500, help="timed calls per harness run per round")
    p.add_argument("--no-write", action="store_true", help="print only; do not update benchmarks/RESULTS.md")
    p.add_argument("--results-md", type=Path, default=RESULTS_MD, help="the Markdown file to update")
    args = p.parse_args(argv)
    threads = args.threads or None
    with tempfile.TemporaryDirectory() as tmp:
        results = compare_models(models(args.run, Path(tmp)), threads, args.rounds, args.min_time_s, args.min_runs)
    body = (f"`python -m edgekd.benchmarks.suites.bench_overhead{f' --run {args.run}' if args.run else ''}`\n\n"
            f"{machine_line()}\n\n{table(results, threads, args.rounds)}")
    publish(args, "overhead", "Harness overhead", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
