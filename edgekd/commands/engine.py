"""`edgekd engine`: build a TensorRT engine (+ sidecar) from an ONNX model, or print the trtexec command."""

from __future__ import annotations

HELP = "build a TensorRT engine from an ONNX model (or print the equivalent trtexec command)"
DESCRIPTION = """Build a TensorRT engine with the installed `tensorrt` Python package: strongly typed on
TensorRT >= 10 (precision from the ONNX graph: FP16 is converted on the fly, INT8 needs a QDQ model made
with `edgekd quantize --preset tensorrt`), builder flags on TensorRT 8.x. The dynamic batch gets an
optimization profile (--min/--opt/--max-batch); a timing cache and a workspace limit are used; the layer
precisions are checked with the engine inspector; a sidecar ENGINE.json records TensorRT version, GPU and
settings (the engine is refused anywhere else).

Without TensorRT (or with --print-trtexec) the equivalent `trtexec` command is printed, so a Jetson can
build the engine on the device:

  edgekd engine runs/digits/onnx/student.onnx --out student.engine --precision fp16
  edgekd engine student-int8.onnx --out student-int8.engine --precision int8 --print-trtexec"""


def add_arguments(p) -> None:
    from edgekd.commands._common import number

    p.add_argument("model", metavar="MODEL.onnx", help="the ONNX model (FP32, FP16 or INT8 QDQ)")
    p.add_argument("--out", required=True, metavar="ENGINE", help="engine file to write, e.g. model.engine")
    p.add_argument("--precision", choices=["fp16", "int8", "fp32"], default="fp16",
                   help="engine precision (default: fp16)")
    p.add_argument("--input", default=None, help="the dynamic-batch input (default: the first input)")
    p.add_argument("--min-batch", type=number(int, lo=1), default=1, help="smallest batch of the profile (default: 1)")
    p.add_argument("--opt-batch", type=number(int, lo=1), default=8, help="batch TensorRT optimises for (default: 8)")
    p.add_argument("--max-batch", type=number(int, lo=1), default=64, help="largest batch of the profile (default: 64)")
    p.add_argument("--workspace-mb", type=number(int, lo=1), default=1024, help="workspace memory limit in MiB (default: 1024)")
    p.add_argument("--timing-cache", default=None, metavar="FILE",
                   help="timing cache file, reused across builds (default: ENGINE.timing.cache)")
    p.add_argument("--print-trtexec", action="store_true",
                   help="only print the equivalent trtexec command lines, do not build")
    p.add_argument("--no-strict", action="store_true",
                   help="keep an engine whose layers do not run in the requested precision (not recommended)")


def main(args) -> int:
    from rich.console import Console

    from edgekd.commands._common import require_inputs
    from edgekd.deploy.engines.tensorrt import trtexec_plan
    from edgekd.deploy.errors import DependencyError
    from edgekd.deploy.fileio import refuse_foreign

    require_inputs((args.model, "ONNX model"))
    refuse_foreign(args.out)
    console = Console(highlight=False, soft_wrap=True)
    profile = dict(input_name=args.input, min_batch=args.min_batch, opt_batch=args.opt_batch,
                   max_batch=args.max_batch, workspace_mb=args.workspace_mb, timing_cache=args.timing_cache)
    plan = trtexec_plan(args.model, args.out, args.precision, **profile)
    if args.print_trtexec:
        _print_plan(console, plan)
        return 0
    from edgekd.deploy.engines import get_builder

    try:
        result = get_builder("tensorrt")(args.model, args.out, precision=args.precision,
                                         strict=not args.no_strict, **profile)
    except DependencyError:
        _print_plan(console, plan)
        raise
    check = result.precision_check
    console.print(f"{'✓' if check.passed else '✗'} {result.path}: {result.precision}, {result.build_path} build, "
                  f"TensorRT {result.tensorrt}, {result.gpu.get('name')} — {check.note}")
    console.print(f"sidecar: {result.sidecar}")
    console.print(f"trtexec equivalent: {result.trtexec}")
    return 0


def _print_plan(console, plan: dict) -> None:
    console.print("# TensorRT >= 10 (strongly typed; precision from the ONNX graph):")
    console.print(plan["strongly_typed"])
    console.print("# TensorRT 8.x (e.g. JetPack 5; builder flags):")
    console.print(plan["legacy"])
    if plan["onnx"] and plan["onnx"].endswith(".fp16.onnx"):
        console.print(f"# copy {plan['onnx']} (FP16, FP32 inputs/outputs) to the device with the command above")
