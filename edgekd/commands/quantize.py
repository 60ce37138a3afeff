"""`edgekd quantize`: static/dynamic INT8 or FP16 with ONNX Runtime, optionally accuracy-aware."""

from __future__ import annotations

HELP = "quantize an ONNX model: static INT8 (QDQ), dynamic INT8 or FP16, optionally accuracy-aware"
DESCRIPTION = """Quantize with ONNX Runtime. Static INT8 (default) writes QDQ with per-channel weights,
calibrated on training samples (--calib CALIB.npz with an array 'x', or --calib-from RUN_DIR to take them
from a run's training split — never the test split). Presets pick the INT8 settings for the target:
x86 (no VNNI: U8S8 + reduce_range against saturation), x86-vnni, arm64, tensorrt (symmetric, zero
points 0); 'auto' reads this CPU's instruction sets.

With --tolerance T (and --val VAL.npz holding 'x' and 'y', or --calib-from RUN_DIR) the result must
stay within T top-1 of the float model on the validation split; otherwise the most sensitive nodes are
kept in float step by step, or the float model is kept (the output is then not written).

  edgekd quantize runs/digits/onnx/student.onnx --calib-from runs/digits --out student-int8.onnx
  edgekd quantize model.onnx --calib calib.npz --preset tensorrt --out model-int8-trt.onnx
  edgekd quantize model.onnx --mode fp16 --out model-fp16.onnx
  edgekd quantize model.onnx --calib-from runs/digits --tolerance 0.01 --out model-int8.onnx"""


def add_arguments(p) -> None:
    from edgekd.commands._common import number
    from edgekd.deploy.quantize import PRESETS

    p.add_argument("model", metavar="MODEL.onnx", help="the float ONNX model")
    p.add_argument("--out", required=True, metavar="OUT.onnx", help="where the quantized model goes")
    p.add_argument("--mode", choices=["static", "dynamic", "fp16"], default="static",
                   help="static INT8 (QDQ, calibrated; default), dynamic INT8, or FP16 with FP32 I/O")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--calib", metavar="CALIB.npz",
                     help="calibration inputs: .npz with an array 'x' (N,C,H,W), or one array per model input "
                          "by name (a text model: input_ids, attention_mask)")
    src.add_argument("--calib-from", metavar="RUN_DIR", help="take calibration (and validation) data from a run")
    p.add_argument("--calib-samples", type=number(int, lo=1), default=None,
                   help="how many calibration samples to use (default: all in CALIB, or the run recipe's)")
    p.add_argument("--method", choices=["minmax", "entropy", "percentile"], default="minmax",
                   help="calibration method (default: minmax)")
    p.add_argument("--preset", choices=["auto", *PRESETS], default="auto",
                   help="INT8 settings for the target (default: auto, from this CPU)")
    p.add_argument("--no-per-channel", action="store_true", help="per-tensor instead of per-channel weights")
    p.add_argument("--tolerance", type=number(float, 0.0, 1.0), default=None,
                   help="accuracy-aware: largest accepted top-1 drop on the validation split, e.g. 0.01")
    p.add_argument("--val", metavar="VAL.npz", help="validation data for --tolerance: .npz with 'x' and 'y'")
    p.add_argument("--max-steps", type=number(int, 0, 1000), default=6,
                   help="accuracy-aware: exclusion steps before giving up")


def main(args) -> int:
    from pathlib import Path

    from rich.console import Console

    from edgekd.commands._common import require_inputs
    from edgekd.deploy.errors import UsageError
    from edgekd.deploy.fileio import refuse_foreign
    from edgekd.deploy.quantize import quantize

    require_inputs((args.model, "ONNX model"), (args.calib, "calibration data"), (args.calib_from, "run folder"),
                   (args.val, "validation data"))
    if Path(args.out).resolve() == Path(args.model).resolve():
        raise UsageError(f"--out {args.out} is the input model: a quantized model never replaces its source",
                         hint="write it to another file, e.g. model-int8.onnx")
    refuse_foreign(args.out)
    console = Console(highlight=False, soft_wrap=True)
    calib, val = _load_data(args)
    if args.tolerance is not None:
        if args.mode != "static":
            raise UsageError("--tolerance works with --mode static only")
        return _accuracy_aware(args, calib, val, console)
    kwargs = {} if args.mode == "fp16" else {"preset": args.preset}
    if args.mode == "static":
        kwargs.update(method=args.method, per_channel=not args.no_per_channel)
    result = quantize(args.mode, args.model, args.out, calib, **kwargs)
    _print_result(console, result)
    return 0


def _accuracy_aware(args, calib, val, console) -> int:
    from edgekd.deploy.accuracy_aware import accuracy_aware_quantize
    from edgekd.deploy.errors import UsageError

    if calib is None or val is None:
        raise UsageError("--tolerance needs calibration and validation data",
                         hint="pass --calib CALIB.npz --val VAL.npz, or --calib-from RUN_DIR")
    res = accuracy_aware_quantize(args.model, args.out, calib, val[0], val[1], tolerance=args.tolerance,
                                  method=args.method, preset=args.preset, max_steps=args.max_steps,
                                  per_channel=not args.no_per_channel)
    for line in res.lines:
        console.print(line)
    if res.quantize is not None:
        _print_result(console, res.quantize)
    else:
        console.print(f"kept the float model {res.path}; {args.out} was not written")
    return 0


def _print_result(console, result) -> None:
    isa = result.cpu_isa
    flags = ", ".join(k.upper() for k in ("avx2", "avx512", "vnni", "neon", "dotprod") if isa.get(k)) or "none"
    what = f"{result.mode} {result.precision.upper()} ({result.format}"
    what += f", {result.method}, preset {result.preset}" if result.method else ""
    console.print(f"✓ wrote {result.path}: {what}) on {isa.get('arch')} [{flags}]")
    if result.settings:
        console.print("  settings: " + ", ".join(f"{k}={v}" for k, v in result.settings.items()))


def _load_data(args):
    """(calibration inputs or None, (val_x, val_y) or None) from --calib/--val or --calib-from."""
    import numpy as np

    from edgekd.deploy.errors import UsageError

    if args.mode == "static" and not (args.calib or args.calib_from):
        raise UsageError("static INT8 needs calibration data",
                         hint="pass --calib CALIB.npz (array 'x') or --calib-from RUN_DIR, or use --mode dynamic")
    calib = val = None
    if args.calib_from:
        calib, val = _from_run(args.calib_from, args.calib_samples)
    elif args.calib:
        calib = _calib_npz(args.calib, args.model)
    if args.val:
        arrays = _npz(args.val, ("x", "y"))
        val = (arrays["x"].astype(np.float32), arrays["y"])
    if isinstance(calib, np.ndarray):
        calib = calib[: args.calib_samples].astype(np.float32) if args.calib_samples else calib.astype(np.float32)
    elif isinstance(calib, dict) and args.calib_samples:
        calib = {k: v[: args.calib_samples] for k, v in calib.items()}
    return calib, val


def _calib_npz(path: str, model: str):
    """Calibration inputs from a .npz: the array 'x' (one input), or one array per model input by name (a
    text model: input_ids and attention_mask, int64 — fed as they are, never quantized)."""
    from edgekd.benchmarks.datasets import read_npz
    from edgekd.deploy.runtime.intake import check_file, check_model

    check_file(path, "data file")
    names = [v.name for v in check_model(model).graph_inputs]
    arrays = read_npz(path)
    if len(names) > 1 and all(n in arrays for n in names):
        return {n: arrays[n] for n in names}
    return _npz(path, ("x",))["x"]


def _npz(path: str, keys: tuple[str, ...]) -> dict:
    from edgekd.benchmarks.datasets import read_npz
    from edgekd.deploy.errors import InputFileError
    from edgekd.deploy.runtime.intake import check_file

    check_file(path, "data file")
    arrays = read_npz(path)
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise InputFileError(f"{path} has no array(s) {missing}; it holds {sorted(arrays)}",
                             hint="save it with numpy.savez(path, x=inputs, y=labels)")
    return arrays


def _from_run(run_dir: str, samples: int | None):
    """Training-split calibration samples and the validation split of a run (:func:`edgekd.runs.calibration_data`)."""
    from edgekd.commands._common import require_train_extra
    from edgekd.runs import calibration_data

    require_train_extra()
    return calibration_data(run_dir, samples)
