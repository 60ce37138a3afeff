"""`edgekd bench`: latency, throughput, memory, cold start and accuracy of models on this device.

Runs with numpy + onnxruntime only (or a TensorRT runner for ``.engine`` files): torch is never imported.
"""

from __future__ import annotations

from edgekd.commands._common import number

HELP = "benchmark ONNX files, INT8/FP16 ONNX, bundles or TensorRT engines on this device"
DESCRIPTION = """Times each model at each batch size with warm-up by time and count, then at least --min-runs
runs and --min-time-s seconds per model: p50/p90/p95/p99/mean/std/min/max, throughput, and a noise warning
when the spread is too high to trust. Several models are timed interleaved in --rounds rounds, so a slow spell
of the machine hits all of them, and the report says which is faster only when the difference beats the
measured noise. Also reports model size, parameters, cold start (session creation + first inference),
memory (RSS), top-1 with --data, the device fingerprint and the execution providers that really ran. Needs
numpy + onnxruntime only (no PyTorch). A batch size that cannot run is reported as a failed row and the exit
code is 5. Results format: docs/benchmarking.md (JSON Schema: docs/results.schema.json).

  edgekd bench runs/digits/onnx/student.onnx --batch 1,8,32
  edgekd bench runs/digits/onnx/student.onnx runs/digits/onnx/student-int8.onnx --threads 1
  edgekd bench runs/digits/bundle --data test.npz --json bench.json
  edgekd bench student.engine --runtime trt
  edgekd bench runs/reviews/bundle --batch 1,32 --seq-len 16,64,128   # a text bundle: + tokenization"""


def add_arguments(p) -> None:
    p.add_argument("models", nargs="+", metavar="MODEL",
                   help="one or more .onnx files, bundle folders or TensorRT .engine files (compared interleaved)")
    p.add_argument("--runtime", choices=["ort", "trt", "openvino"], default=None,
                   help="ort (ONNX Runtime), trt (TensorRT) or openvino; default: trt for .engine/.plan files, else ort")
    p.add_argument("--provider", default=None, metavar="LIST",
                   help="ONNX Runtime execution provider(s), e.g. cpu or cuda,cpu (default: cpu)")
    p.add_argument("--batch", default="1", metavar="SIZES", help="comma-separated batch sizes (default: 1)")
    p.add_argument("--seq-len", default=None, metavar="SIZES",
                   help="text models: tokens per sequence, comma-separated (default: 16,64,128, each clipped to "
                        "the model's max_length); a text bundle's rows also time its tokenizer and tokenize + run")
    p.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                   help="intra-op threads (default: ONNX Runtime's choice, usually all cores)")
    p.add_argument("--warmup-s", type=_non_negative, default=0.5, metavar="S", help="warm-up seconds (default: 0.5)")
    p.add_argument("--warmup-runs", type=_non_negative_int, default=10, metavar="N",
                   help="warm-up calls at least (default: 10)")
    p.add_argument("--min-runs", type=_positive_int, default=200, metavar="N",
                   help="timed runs at least, per model (default: 200)")
    p.add_argument("--min-time-s", type=_non_negative, default=2.0, metavar="S",
                   help="timed seconds at least per model and batch size (default: 2)")
    p.add_argument("--rounds", type=_positive_int, default=5, metavar="N",
                   help="interleaved rounds the timing is split into (default: 5)")
    p.add_argument("--data", default=None, metavar="PATH",
                   help="labelled data for top-1: a .npz with inputs/labels, or an ImageFolder dir (bundle)")
    p.add_argument("--name", action="append", default=None,
                   help="name of a model's result rows (repeat per model; default: file or folder name)")
    p.add_argument("--role", choices=["teacher", "student", "baseline"], default=None,
                   help="role recorded in the results (default: from the model's metadata)")
    p.add_argument("--power", action="store_true",
                   help="on a Jetson, sample power and temperature with tegrastats during each timed run and "
                        "report energy per inference (read-only; ignored where tegrastats is missing)")
    p.add_argument("--json", default=None, metavar="OUT", help="write the results (schema_version 2) here")


_positive_int = number(int, lo=1)
_non_negative_int = number(int, lo=0)
_non_negative = number(float, lo=0)


def parse_batches(text: str, option: str = "--batch", example: str = "1,8,32") -> list[int]:
    """``"1,8,32"`` → ``[1, 8, 32]``; every size a positive integer."""
    from edgekd.deploy.errors import UsageError

    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise UsageError(f"{option} {text!r} is not a list of positive integers", hint=f"e.g. {option} {example}")
    return list(dict.fromkeys(sizes))


def run_bench(args):
    from edgekd.benchmarks.bench import Timing, bench_models
    from edgekd.deploy.errors import UsageError

    if args.name and len(args.name) != len(args.models):
        raise UsageError(f"{len(args.name)} --name value(s) for {len(args.models)} model(s)",
                         hint="give one --name per model, or none")
    timing = Timing(args.warmup_s, args.warmup_runs, args.min_runs, args.min_time_s, args.rounds)
    return bench_models(args.models, batches=parse_batches(args.batch), runtime=args.runtime,
                        providers=args.provider, threads=args.threads, timing=timing, data=args.data,
                        names=args.name, role=args.role, power=args.power,
                        seq_lens=parse_batches(args.seq_len, "--seq-len", "16,64,128") if args.seq_len else None)


def main(args) -> int:
    from rich.console import Console

    from edgekd.benchmarks.results import bench_document
    from edgekd.commands._common import require_inputs
    from edgekd.deploy.fileio import write_json
    from edgekd.deploy.typed import to_json

    require_inputs(*[(m, "model") for m in args.models], (args.data, "--data"))
    if args.json:
        from edgekd.deploy.fileio import refuse_foreign

        refuse_foreign(args.json, "--json")
    rows = run_bench(args)
    settings = {k: getattr(args, k) for k in ("runtime", "provider", "batch", "seq_len", "threads", "warmup_s",
                                               "warmup_runs", "min_runs", "min_time_s", "rounds", "data")}
    doc = bench_document(rows, settings=settings)
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(width=170, highlight=False)  # a file or pipe: keep every column readable
    print_report(console, doc)
    if args.json:
        write_json(args.json, to_json(doc))
        console.print(f"results written to {args.json}", markup=False)
    return 0 if all(not r.error for r in rows) else 5


def print_report(console, doc) -> None:
    """The latency table, what each model is, which is faster beyond noise, the device and its software."""
    from edgekd.report import fmt_int, fmt_ms, fmt_pct, fmt_size, latency_table

    rows = doc.artifacts
    console.print(latency_table(list(rows)).rich())
    if any(r.seq_len for r in rows):
        console.print(text_table(list(rows)).rich())
    for r in {r.name: r for r in rows}.values():
        cold = r.cold_start
        console.print(f"{r.name}: {r.path}  {r.format} {r.precision}  size {fmt_size(r.size_bytes)}  params "
                      f"{fmt_int(r.params)}  role {r.role or '–'}"
                      + (f"  top-1 {fmt_pct(r.top1)} on {r.samples} samples" if r.top1 is not None else "")
                      + (f"  cold start {fmt_ms(cold.total)} ms" if cold else ""), markup=False)
    _print_comparison(console, rows)
    _print_power(console, rows)
    _print_device(console, doc.device, rows[0])
    if any(r.noisy for r in rows):
        console.print("[yellow]⚠ = too noisy to trust: see the warning above (pin clocks, close other programs, "
                      "more runs).[/]")


def _print_comparison(console, rows) -> None:
    """With several models: per batch, which is faster beyond the measured noise (interleaved rounds)."""
    from edgekd.benchmarks.harness import faster

    for batch, seq_len in sorted({(r.batch, r.seq_len or 0) for r in rows}):
        timed = sorted((r for r in rows if r.batch == batch and (r.seq_len or 0) == seq_len and r.latency),
                       key=lambda r: r.p50)
        if len(timed) < 2:
            continue
        best = timed[0]
        where = f"batch {batch}" + (f", {seq_len} tokens" if seq_len else "")
        for other in timed[1:]:
            verdict = (f"faster than {other.name} by {other.p50 / best.p50:.2f}× (beyond the noise)"
                       if faster(best.latency, other.latency) else
                       f"ties with {other.name} within the measured noise")
            console.print(f"{where}: {best.name} {verdict}", markup=False)


def text_table(rows):
    """Text models: per model, batch and sequence length, the model, the tokenizer and both together (p50)."""
    from edgekd.report import Table, fmt_ms

    cells = [[r.name, str(r.batch), str(r.seq_len), fmt_ms(r.p50) if r.latency else f"failed: {r.error}",
              fmt_ms(r.tokenize.p50) if r.tokenize else "–", fmt_ms(r.end_to_end.p50) if r.end_to_end else "–",
              f"{r.batch / (r.end_to_end.p50 / 1e3):,.0f}" if r.end_to_end else "–"]
             for r in rows if r.seq_len]
    return Table("text: p50 ms per call, by sequence length", ["model", "batch", "tokens", "model", "tokenize",
                                                                "tokenize + model", "texts/s"], cells)


def _print_power(console, rows) -> None:
    for r in rows:
        p = r.power
        if not p:
            continue
        if not p.get("available"):
            console.print(f"power: not sampled ({p.get('reason')})", markup=False)
            return
        temps = ", ".join(f"{k} {v:.1f}°C" for k, v in sorted(p["temps_c_max"].items()))
        energy = p["energy_mj_per_inference"]
        console.print(f"power {r.name} batch {r.batch}: {p['power_w'] or 0:.2f} W on {p.get('rail')} "
                      f"({p['samples']} samples), {'n/a' if energy is None else f'{energy:.3f} mJ'}/inference; "
                      f"max {temps or 'n/a'}", markup=False)


def _print_device(console, device, first) -> None:
    from rich.markup import escape

    console.print(f"device: {device.label}  ISA {', '.join(device.isa) or 'none detected'}", markup=False)
    console.print(f"software: {device.os}  python {device.python}  {first.runtime}", markup=False)
    fallback = f"  [red](not available: {escape(', '.join(first.provider_fallback))})[/]" \
        if first.provider_fallback else ""
    console.print(f"providers that ran: {escape(', '.join(first.providers))}{fallback}")
    if device.jetson:
        j = device.jetson
        console.print(f"jetson: {j.get('model')}  L4T {j.get('l4t')}  nvpmodel {j.get('nvpmodel')}  clocks locked: "
                      f"{j.get('clocks_locked')}", markup=False)
