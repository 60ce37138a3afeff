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
    p.add_argument("--recipe", default=None, help="recipe for a bare checkpoint (default: the run's recipe.yaml)")
    p.add_argument("--model", default="student", choices=["student", "teacher", "baseline"],
                   help="which model of the recipe the weights belong to (default: student)")
    p.add_argument("--out", default="exported", metavar="DIR", help="output folder (default: exported)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the recipe's, 17)")
    p.add_argument("--atol", type=float, default=None, help="FP32 parity tolerance (default: 1e-4)")
    p.add_argument("--exporter", choices=["torchscript", "dynamo"], default=None,
                   help="torch.onnx exporter (default: the recipe's, torchscript)")
    p.add_argument("--simplify", action="store_true",
                   help="simplify the graph with onnxslim; kept only if it passes the same parity check")


def main(args) -> int:
    import dataclasses
    from pathlib import Path

    import torch
    from rich.console import Console

    from edgekd import __version__
    from edgekd.checkpoint import load_weights
    from edgekd.data import load_data, to_numpy
    from edgekd.deploy.export import export_metadata, export_verified
    from edgekd.deploy.fileio import sha256_file
    from edgekd.models import model_from_config

    recipe, weights = _resolve_source(args)
    spec = recipe.teacher if args.model == "teacher" else recipe.student
    splits = load_data(recipe.data, recipe.seed)
    model = model_from_config(dataclasses.replace(spec, checkpoint=None), splits.num_classes, splits.input_shape)
    load_weights(model, weights)
    x, _ = to_numpy(splits.test, limit=256)
    meta = export_metadata(__version__, source_sha256=sha256_file(weights), normalization=splits.normalization,
                           labels=splits.labels, role=args.model)
    out, report = export_verified(
        model.eval(), torch.from_numpy(x[:1]), Path(args.out) / f"{args.model}.onnx", x,
        atol=args.atol if args.atol is not None else recipe.export.atol, opset=args.opset or recipe.export.opset,
        metadata=meta, exporter=args.exporter or recipe.export.exporter,
        simplify=args.simplify or recipe.export.simplify)
    console = Console()
    for line in report.lines:
        console.print(line, markup=False)
    console.print(f"wrote {out}", markup=False)
    return 0


def _resolve_source(args):
    """(recipe, weights path) from a run folder or a weights file (+ --recipe)."""
    from pathlib import Path

    from edgekd.commands._common import load_recipe_and_check
    from edgekd.deploy.errors import InputFileError

    src = Path(args.source)
    if not src.is_dir():
        return load_recipe_and_check(args.recipe, []), src
    if not args.recipe and not (src / "recipe.yaml").is_file():
        raise InputFileError(f"{src} is not a run folder: it has no recipe.yaml",
                             hint="pass a folder written by `edgekd run/distill --out DIR`, or a weights "
                                  "file with --recipe")
    recipe = load_recipe_and_check(args.recipe or src / "recipe.yaml", [])
    weights = src / "weights" / f"{args.model}.safetensors"
    if not weights.is_file():
        raise InputFileError(f"{src} has no {weights.relative_to(src)}",
                             hint="pass a finished run folder (edgekd run/distill --out DIR)")
    return recipe, weights
