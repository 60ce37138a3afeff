"""`edgekd run`: the whole pipeline in one command."""

from __future__ import annotations

HELP = "teacher → distilled student → ONNX (+INT8) → benchmark → report and bundle"
DESCRIPTION = """Run the whole pipeline for a recipe:

  teacher    load the recipe's checkpoint, reuse the cached teacher, or train it (then cache it)
  distill    train the student with KD (and, by default, the same student from scratch as a baseline)
  export     student and teacher to ONNX, verified against PyTorch on test inputs
  quantize   static INT8 (QDQ, per-channel), calibrated on training images
  benchmark  accuracy, latency, throughput, size of every artifact on this machine
  report     DIR/results.json, report.md, pareto.png and DIR/bundle/ (the fastest student within tolerance)

Without RECIPE the bundled default (models/digits.yaml: scikit-learn digits, no download) runs.
Example:  edgekd run --out runs/digits --set train.epochs=10"""


def add_arguments(p) -> None:
    p.add_argument("recipe", nargs="?", default=None,
                   help="recipe YAML path or bundled name (default: digits)")
    p.add_argument("--out", default="runs/digits", metavar="DIR",
                   help="output folder (default: runs/digits); created if missing")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value, e.g. --set train.epochs=3 (repeatable; validated)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in --out from its last epoch checkpoints")
    p.add_argument("--stages", default=None, metavar="LIST",
                   help="comma-separated subset of data,teacher,distill,export,quantize,benchmark,report")


def main(args) -> int:
    from edgekd.commands._common import load_recipe_and_check, run_and_summarize

    recipe = load_recipe_and_check(args.recipe, args.overrides)
    stages = args.stages.split(",") if args.stages else None
    return run_and_summarize(recipe, args.out, stages=stages, resume=args.resume, quiet=args.quiet)
