"""`edgekd export`: a trained model (run folder or checkpoint) to a verified ONNX file."""

from __future__ import annotations

HELP = "export a run's student (or a checkpoint) to ONNX and verify it against PyTorch"
DESCRIPTION = """Export to one self-contained ONNX file with a dynamic batch axis, named input/output and
edgekd metadata, then verify it: onnx.checker (full), strict shape inference, and parity with PyTorch on
real test inputs at batch 1, 7 and the whole set (FP32 tolerance --atol).

  edgekd export runs/digits --out exported/            # the run's student
  edgekd export student.safetensors --recipe digits --out exported/"""


def add_arguments(p) -> None:
    p.add_argument("source", metavar="CHECKPOINT_OR_RUN_DIR",
                   help="a run folder from `edgekd run`/`distill`, or a .safetensors/.pt weights file")
    p.add_argument("--recipe", default=None, help="recipe for a bare checkpoint (a run folder uses its own)")
    p.add_argument("--model", default="student", choices=["student", "teacher", "baseline"],
                   help="which model of the recipe the weights belong to (default: student)")
    p.add_argument("--out", default="exported", metavar="DIR", help="output folder (default: exported)")
    from edgekd.commands._common import number

    p.add_argument("--opset", type=number(int, 11, 23), default=None, help="ONNX opset (default: the recipe's, 18)")
    p.add_argument("--atol", type=number(float, hi=1.0, above=0.0), default=None,
                   help="FP32 parity tolerance, in (0, 1] (default: 1e-4)")
    p.add_argument("--exporter", choices=["dynamo", "torchscript"], default=None,
                   help="torch.onnx exporter (default: the recipe's, dynamo; TorchScript is the recorded fallback)")
    p.add_argument("--simplify", action="store_true",
                   help="simplify the graph with onnxslim; kept only if it passes the same parity check")


def main(args) -> int:
    from pathlib import Path

    from rich.console import Console

    from edgekd.commands._common import require_inputs, require_train_extra

    require_inputs((args.source, "checkpoint or run folder"), (args.recipe if args.recipe and Path(args.recipe).suffix
                                                               else None, "recipe"))
    options = dict(opset=args.opset, atol=args.atol, exporter=args.exporter, simplify=args.simplify)
    source = Path(args.source)
    if source.is_dir():
        from edgekd.runs import export_from_run

        require_train_extra()
        outcome = export_from_run(source, args.model, args.out, **options)
    else:
        from edgekd.recipe import load_recipe
        from edgekd.runs import export_checkpoint

        recipe = load_recipe(args.recipe, [])
        require_train_extra()
        outcome = export_checkpoint(source, recipe, args.model, args.out, **options)
    console = Console()
    for line in outcome.parity.lines:
        console.print(line, markup=False)
    if outcome.fallback_reason:
        console.print(f"exporter: dynamo failed ({outcome.fallback_reason}); used {outcome.exporter}", markup=False)
    console.print(f"wrote {outcome.path} ({outcome.exporter} exporter)", markup=False)
    return 0
