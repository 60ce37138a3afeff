"""`edgekd bench`: latency, throughput, memory, cold start and accuracy of a model on this device.

Runs with numpy + onnxruntime only (or a TensorRT runner for ``.engine`` files): torch is never imported.
"""

from __future__ import annotations

HELP = "benchmark an ONNX file, INT8 ONNX, bundle or TensorRT engine on this device"
DESCRIPTION = """Times the model at each batch size with warm-up by time and count, then at least
--min-runs runs and --min-time-s seconds: p50/p90/p95/p99/mean/std/min/max, throughput, and a noise
warning when the spread is too high to trust. Also reports model size, parameters, cold start (session
creation + first inference), peak memory (RSS), top-1 with --data, the device fingerprint and the
execution providers that really ran. Needs numpy + onnxruntime only (no PyTorch). A batch size that
cannot run is reported as a failed row and the exit code is 5. Results format: docs/benchmarking.md.

  edgekd bench runs/digits/onnx/student.onnx --batch 1,8,32
  edgekd bench runs/digits/bundle --data test.npz --json bench.json
  edgekd bench student.engine --runtime trt"""

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


def add_arguments(p) -> None:
    p.add_argument("model", metavar="MODEL", help="an .onnx file, a bundle folder, or a TensorRT .engine")
    p.add_argument("--runtime", choices=["ort", "trt"], default=None,
                   help="ort (ONNX Runtime) or trt (TensorRT); default: trt for .engine/.plan files, else ort")
    p.add_argument("--provider", default=None, metavar="LIST",
                   help="ONNX Runtime execution provider(s), e.g. cpu or cuda,cpu (default: cpu)")
    p.add_argument("--batch", default="1", metavar="SIZES", help="comma-separated batch sizes (default: 1)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="intra-op threads (default: ONNX Runtime's choice, usually all cores)")
    p.add_argument("--warmup-s", type=float, default=0.5, metavar="S", help="warm-up seconds (default: 0.5)")
    p.add_argument("--warmup-runs", type=int, default=10, metavar="N", help="warm-up calls at least (default: 10)")
    p.add_argument("--min-runs", type=int, default=200, metavar="N", help="timed runs at least (default: 200)")
    p.add_argument("--min-time-s", type=float, default=2.0, metavar="S",
                   help="timed seconds at least per batch size (default: 2)")
    p.add_argument("--data", default=None, metavar="PATH",
                   help="labelled data for top-1: a .npz with inputs/labels, or an ImageFolder dir (bundle)")
    p.add_argument("--name", default=None, help="name of the result row (default: file or folder name)")
    p.add_argument("--role", choices=["teacher", "student", "baseline"], default=None,
                   help="role recorded in the results (default: from the model's metadata)")
    p.add_argument("--power", action="store_true",
                   help="on a Jetson, sample power and temperature with tegrastats during each timed run and "
                        "report energy per inference (read-only; ignored where tegrastats is missing)")
    p.add_argument("--json", default=None, metavar="OUT", help="write the results (schema_version 1) here")


def parse_batches(text: str) -> list[int]:
    """``"1,8,32"`` → ``[1, 8, 32]``; every size a positive integer."""
    from edgekd.deploy.errors import UsageError

    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise UsageError(f"--batch {text!r} is not a list of positive integers", hint="e.g. --batch 1,8,32")
    return list(dict.fromkeys(sizes))


def run_bench(args) -> list[dict]:
    """Dispatch to the ONNX Runtime or TensorRT benchmark with the command's settings."""
    from pathlib import Path

    from edgekd.benchmarks.onnx_bench import bench_onnx, check_path

    path = check_path(args.model)
    runtime = args.runtime or ("trt" if Path(path).suffix in ENGINE_SUFFIXES else "ort")
    common = dict(batches=parse_batches(args.batch), warmup_s=args.warmup_s, warmup_runs=args.warmup_runs,
                  min_runs=args.min_runs, min_time_s=args.min_time_s, name=args.name, role=args.role,
                  power=args.power)
    if runtime == "trt":
        from edgekd.benchmarks.trt_bench import bench_engine

        data = None
        if args.data:
            from edgekd.benchmarks.datasets import load_labelled

            data = load_labelled(args.data)
        return bench_engine(path, data=data, **common)
    return bench_onnx(path, providers=args.provider, threads=args.threads, data=args.data, **common)


def main(args) -> int:
    from rich.console import Console

    from edgekd.benchmarks.results import results_document
    from edgekd.deploy.fileio import write_json

    rows = run_bench(args)
    settings = {k: getattr(args, k) for k in ("runtime", "provider", "batch", "threads", "warmup_s", "warmup_runs",
                                               "min_runs", "min_time_s", "data")}
    doc = results_document(rows, settings=settings)
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(width=160, highlight=False)  # a file or pipe: keep every column readable
    print_report(console, doc)
    if args.json:
        write_json(args.json, doc)
        console.print(f"results written to {args.json}")
    return 0 if all(not r.get("error") for r in rows) else 5


def print_report(console, doc: dict) -> None:
    """The latency table, the model summary, the device fingerprint and any noise warning."""
    from rich import box
    from rich.table import Table

    from edgekd.benchmarks.fingerprint import device_label
    from edgekd.report import fmt_int, fmt_ms, fmt_pct, fmt_size

    rows = doc["artifacts"]
    first = rows[0]
    table = Table(title=f"{first['name']} ({first['format']} {first['precision']}) — latency in ms",
                  title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("batch", "p50", "p90", "p95", "p99", "mean", "std", "min", "max", "CV", "samples/s", "runs"):
        table.add_column(col, justify="right")
    for r in rows:
        if r.get("error"):
            table.add_row(str(r["batch"]), f"[red]failed: {r['error']}[/]", *[""] * 10)
            continue
        lat = r["latency_ms"]
        cv = f"{r['cv']:.1%}" + (" [yellow]⚠[/]" if r["noisy"] else "")
        table.add_row(str(r["batch"]), *(fmt_ms(lat[k]) for k in ("p50", "p90", "p95", "p99", "mean", "std",
                                                                  "min", "max")),
                      cv, fmt_int(round(r["throughput_sps"])), fmt_int(r["latency"]["runs"]))
    console.print(table)
    cold = first.get("cold_start_ms") or {}
    console.print(f"model: {first['path']}  size {fmt_size(first['size_bytes'])}  params {fmt_int(first['params'])}"
                  f"  role {first.get('role') or '–'}")
    if first.get("top1") is not None:
        console.print(f"top-1: {fmt_pct(first['top1'])} on {first['samples']} samples")
    console.print(f"cold start: {fmt_ms(cold.get('total'))} ms (session {fmt_ms(cold.get('session_create'))} ms"
                  f" + first inference {fmt_ms(cold.get('first_inference'))} ms)   peak RSS "
                  f"{fmt_size(first.get('peak_rss_bytes'))}")
    _print_power(console, rows)
    _print_device(console, doc["device"], first, device_label)
    if any(r.get("noisy") for r in rows):
        console.print("[yellow]⚠ = too noisy to trust: see the warning above (pin clocks, close other programs, "
                      "more runs).[/]")


def _print_power(console, rows: list[dict]) -> None:
    for r in rows:
        p = r.get("power")
        if not p:
            continue
        if not p.get("available"):
            console.print(f"power: not sampled ({p.get('reason')})", markup=False)
            return
        temps = ", ".join(f"{k} {v:.1f}°C" for k, v in sorted(p["temps_c_max"].items()))
        energy = p["energy_mj_per_inference"]
        console.print(f"power batch {r['batch']}: {p['power_w'] or 0:.2f} W on {p.get('rail')} "
                      f"({p['samples']} samples), "
                      f"{'n/a' if energy is None else f'{energy:.3f} mJ'}/inference; max {temps or 'n/a'}",
                      markup=False)


def _print_device(console, device: dict, first: dict, device_label) -> None:
    console.print(f"device: {device_label(device)}  ISA {', '.join(device.get('isa') or []) or 'none detected'}")
    console.print(f"software: {device.get('os')}  python {device.get('python')}  {first.get('runtime', '')}")
    providers = ", ".join(first.get("providers") or [])
    fallback = first.get("provider_fallback")
    console.print(f"providers that ran: {providers}" + (f"  [red](not available: {', '.join(fallback)})[/]"
                                                       if fallback else ""))
    jetson = device.get("jetson")
    if jetson:
        console.print(f"jetson: {jetson.get('model')}  L4T {jetson.get('l4t')}  nvpmodel {jetson.get('nvpmodel')}"
                      f"  clocks locked: {jetson.get('clocks_locked')}")

