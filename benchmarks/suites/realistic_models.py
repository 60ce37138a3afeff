"""Suite *realistic sizes*: torchvision MobileNetV3-small, ResNet-18 and ResNet-50 at 224×224 in PyTorch eager,
ONNX Runtime FP32 / FP16 / INT8 and — where ``import openvino`` works — OpenVINO FP32 / INT8, against the CPU's
arithmetic limit.

Random weights (latency does not depend on their values). Per model, every candidate is timed at batch 1,
interleaved in rounds (:func:`edgekd.benchmarks.bench.time_candidates`), so which runtime wins on *this* CPU is
measured, never assumed. FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` (2 per multiply-add); the
peak is measured: the best of a few timed 2048×2048 FP32 matmuls at the same thread count, repeated before, between
and after the models (on a shared machine, or with hyper-threads busy, one measurement can be far below the
peak; a runtime above "100 %" says the peak was measured low). "% of FP32 peak" is
FLOPs ÷ p50 ÷ that peak (INT8 and FP16 rows are compared with the same FP32 peak, so they can exceed what FP32
reaches). INT8 is ONNX Runtime's static QDQ (per-channel, the CPU's preset) calibrated on random images — right
for latency, meaningless for accuracy; OpenVINO INT8 runs the same QDQ file.

Run:
    python -m edgekd.benchmarks.suites.realistic_models [--models mobilenet_v3_small,resnet18,resnet50]
        [--size 224] [--threads 1] [--rounds 5] [--no-write]
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekd.benchmarks.bench import Timing, time_candidates
from edgekd.benchmarks.results import Latency, machine_line, publish

RESULTS_MD = Path(__file__).resolve().parents[1] / "RESULTS.md"
MODELS = ("mobilenet_v3_small", "resnet18", "resnet50")
CANDIDATES = ("pytorch-fp32", "ort-fp32", "ort-fp16", "ort-int8", "openvino-fp32", "openvino-int8")


@dataclass
class ModelCase:
    """One model: its size, its files and what each candidate measured (or why it failed)."""

    name: str
    size: int
    flops: float = 0.0
    params: int = 0
    files: dict[str, Path] = field(default_factory=dict)
    file_bytes: dict[str, int] = field(default_factory=dict)
    latency: dict[str, Latency] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    runtimes: dict[str, str] = field(default_factory=dict)


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def build(name: str, size: int):
    """A torchvision classifier with random weights, its FLOPs at batch 1 and its parameter count."""
    import torch
    import torchvision
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    return model, float(counter.get_total_flops()), sum(p.numel() for p in model.parameters())


def peak_flops(threads: int, n: int = 2048, repeats: int = 5) -> float:
    """FP32 FLOP/s of the best of ``repeats`` timed n×n matmuls with ``threads`` torch threads."""
    import torch

    from edgekd.deploy.torch_runner import torch_threads

    a, b = torch.randn(n, n), torch.randn(n, n)
    with torch_threads(threads), torch.no_grad():
        torch.mm(a, b)
        best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2.0 * n ** 3 / best


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def make_files(model, case: ModelCase, workdir: Path, wanted: tuple[str, ...], exporter: str) -> None:
    """FP32 ONNX (edgekd's exporter, parity-checked), FP16 and static INT8 QDQ files, as the candidates need."""
    import torch

    from edgekd.deploy.export import export_verified
    from edgekd.deploy.quantize import convert_fp16, quantize_static

    x = torch.randn(2, 3, case.size, case.size)
    fp32 = workdir / f"{case.name}-{case.size}.onnx"
    calib = np.random.default_rng(0).standard_normal((8, 3, case.size, case.size)).astype(np.float32)
    jobs = {"fp32": lambda: export_verified(model, x[:1], fp32, x.numpy(), exporter=exporter, atol=1e-3).path,
            "fp16": lambda: convert_fp16(fp32, workdir / f"{case.name}-fp16.onnx").path,
            "int8": lambda: quantize_static(fp32, workdir / f"{case.name}-int8.onnx", calib, min_calib_samples=1,
                                            calib_batch=8).path}
    for precision, make in jobs.items():
        users = [c for c in wanted if c.endswith(precision) and not c.startswith("pytorch")]
        if not users or (precision != "fp32" and "fp32" not in case.files):
            continue
        try:
            case.files[precision] = Path(make())
            case.file_bytes[precision] = case.files[precision].stat().st_size
        except Exception as exc:  # noqa: BLE001 - a file that cannot be made fails its candidates, not the suite
            for c in users:
                case.errors[c] = f"{precision} file: {type(exc).__name__}: {str(exc).splitlines()[0][:100]}"


def runners(model, case: ModelCase, wanted: tuple[str, ...], threads: int) -> dict:
    """Unopened runners by candidate name (only those whose file exists and whose runtime is installed)."""
    from edgekd.deploy.runtime.openvino import OpenVinoRunner
    from edgekd.deploy.runtime.ort import OnnxrtRunner
    from edgekd.deploy.runtime.runner import TensorSpec
    from edgekd.deploy.torch_runner import TorchRunner

    spec = TensorSpec("input", "float32", ("batch", 3, case.size, case.size))
    make = {"pytorch-fp32": lambda: TorchRunner(model, [spec], threads=threads),
            "ort-fp32": lambda: OnnxrtRunner(case.files["fp32"], "cpu", threads),
            "ort-fp16": lambda: OnnxrtRunner(case.files["fp16"], "cpu", threads),
            "ort-int8": lambda: OnnxrtRunner(case.files["int8"], "cpu", threads),
            "openvino-fp32": lambda: OpenVinoRunner(case.files["fp32"], threads, batch=1),
            "openvino-int8": lambda: OpenVinoRunner(case.files["int8"], threads, batch=1)}
    ov = openvino_available()
    return {name: make[name]() for name in wanted
            if name not in case.errors and (ov or not name.startswith("openvino"))}


def measure_case(model, case: ModelCase, wanted: tuple[str, ...], threads: int, timing: Timing) -> None:
    """Open every candidate (a failure becomes an error row), then time them interleaved at batch 1."""
    x = np.random.default_rng(1).standard_normal((1, 3, case.size, case.size)).astype(np.float32)
    with contextlib.ExitStack() as stack:
        opened = {}
        for name, runner in runners(model, case, wanted, threads).items():
            try:
                opened[name] = stack.enter_context(runner)
                case.runtimes[name] = runner.info().runtime
            except Exception as exc:  # noqa: BLE001 - a runtime that cannot load the model is a row, not a crash
                case.errors[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
        feeds = {name: {r.inputs()[0].name: x} for name, r in opened.items()}
        for name, got in time_candidates(opened, 1, timing, feeds).items():
            if isinstance(got, Latency):
                case.latency[name] = got
            else:
                case.errors[name] = str(got)[:160]


def table(cases: list[ModelCase], peak: float, wanted: tuple[str, ...]) -> str:
    """One row per model and candidate: p50, speed-up over PyTorch eager, achieved GFLOP/s and % of FP32 peak."""
    head = ["model", "input", "GFLOP", "params", "candidate", "runtime", "p50 ms", "p90 ms", "× PyTorch",
            "GFLOP/s", "% of FP32 peak", "file MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in cases:
        eager = c.latency.get("pytorch-fp32")
        for name in wanted:
            first = [c.name, f"{c.size}×{c.size}", f"{c.flops / 1e9:.3f}", f"{c.params / 1e6:.2f}M", name]
            if name in c.errors:
                lines.append("| " + " | ".join(first + [f"failed: {c.errors[name]}"] + [""] * 6) + " |")
                continue
            lat = c.latency.get(name)
            if lat is None:
                lines.append("| " + " | ".join(first + ["not installed"] + ["–"] * 6) + " |")
                continue
            rate = c.flops / (lat.p50 / 1e3)
            size = None if name.startswith("pytorch") else c.file_bytes.get(name.split("-")[1])
            lines.append("| " + " | ".join(first + [
                c.runtimes.get(name, ""), f"{lat.p50:.3f}", f"{lat.p90:.3f}",
                f"{eager.p50 / lat.p50:.2f}×" if eager else "–", f"{rate / 1e9:.1f}", f"{100 * rate / peak:.1f} %",
                f"{size / 2**20:.1f}" if size else "–"]) + " |")
    return "\n".join(lines)


def findings(cases: list[ModelCase]) -> str:
    """The fastest candidate per model — faster only beyond the rounds' noise (``harness.faster``), else a tie."""
    from edgekd.benchmarks.harness import faster

    out = []
    for c in cases:
        if c.latency:
            best = min(c.latency, key=lambda n: c.latency[n].p50)
            ties = [n for n in c.latency if n != best and not faster(c.latency[best], c.latency[n])]
            fp32 = {n: c.latency[n].p50 for n in c.latency if n.endswith("fp32")}
            order = " < ".join(f"{n} {v:.2f} ms" for n, v in sorted(fp32.items(), key=lambda kv: kv[1]))
            tie = f", tied within the rounds' noise with {', '.join(ties)}" if ties else ""
            out.append(f"- {c.name}: fastest is **{best}** ({c.latency[best].p50:.2f} ms){tie}; FP32 runtimes: "
                       f"{order}.")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring); returns the exit status."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODELS), help="torchvision model names, comma-separated")
    p.add_argument("--size", type=int, default=224, help="input height and width")
    p.add_argument("--candidates", default=",".join(CANDIDATES), help=f"subset of {', '.join(CANDIDATES)}")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads for every runtime and the peak")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--min-time-s", type=float, default=1.0, help="timed seconds per candidate per round")
    p.add_argument("--min-runs", type=int, default=10, help="timed calls per candidate per round")
    p.add_argument("--warmup-s", type=float, default=0.5, help="warm-up seconds per candidate")
    p.add_argument("--exporter", default="dynamo", help="ONNX exporter (edgekd.deploy.export.EXPORTERS)")
    p.add_argument("--peak-size", type=int, default=2048, help="n of the n×n FP32 matmul that measures the peak")
    p.add_argument("--workdir", type=Path, default=None, help="keep the ONNX files here (default: a temp folder)")
    p.add_argument("--no-write", action="store_true", help="print the section, leave RESULTS.md alone")
    p.add_argument("--results-md", type=Path, default=RESULTS_MD, help="the Markdown file to update")
    args = p.parse_args(argv)
    wanted = tuple(c for c in args.candidates.split(",") if c)
    bad = [c for c in wanted if c not in CANDIDATES]
    if bad:
        p.error(f"unknown candidate(s) {bad}; choose from {', '.join(CANDIDATES)}")
    timing = Timing(warmup_s=args.warmup_s, warmup_runs=3, min_runs=args.min_runs * args.rounds,
                    min_time_s=args.min_time_s * args.rounds, rounds=args.rounds)
    peaks = [peak_flops(args.threads, args.peak_size)]  # measured again after each model: the best is the peak
    cases = []
    with tempfile.TemporaryDirectory(prefix="edgekd-realistic-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for name in (m for m in args.models.split(",") if m):
            model, flops, params = build(name, args.size)
            case = ModelCase(name, args.size, flops, params)
            make_files(model, case, workdir, wanted, args.exporter)
            measure_case(model, case, wanted, args.threads, timing)
            cases.append(case)
            peaks.append(peak_flops(args.threads, args.peak_size))
    peak = max(peaks)
    cmd = (f"python -m edgekd.benchmarks.suites.realistic_models --models {args.models} --size {args.size} "
           f"--threads {args.threads} --rounds {args.rounds}")
    body = (f"`{cmd}`\n\n{machine_line()} Measured FP32 peak ({args.threads} thread(s), {args.peak_size}² matmul, "
            f"best of {len(peaks)} measurements between the models, range {min(peaks) / 1e9:.1f}–{peak / 1e9:.1f}): "
            f"{peak / 1e9:.1f} GFLOP/s. Batch 1, random weights, every candidate of a model timed interleaved in "
            f"{args.rounds} rounds of ≥{args.min_runs} calls and ≥{args.min_time_s}s; p50/p90 per call.\n\n"
            f"{table(cases, peak, wanted)}\n\n{findings(cases)}")
    publish(args, "realistic", f"Realistic model sizes ({args.size}×{args.size} classifiers)", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
