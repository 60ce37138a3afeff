"""`edgekd run`: the whole pipeline in one command."""

from __future__ import annotations

HELP = "teacher → distilled student → ONNX (+INT8/FP16) → benchmark → report and bundle"
DESCRIPTION = """Run the whole pipeline for a recipe:

  data       load and split the data (the preprocessing contract the bundle will carry)
  teacher    load the recipe's checkpoint, reuse the cached teacher, or train it (then cache it)
  select     (students.candidates) the candidate student that meets the latency budget with the best accuracy
  tune       (tune.enabled) search the distillation knobs with Optuna; see `edgekd tune --help`
  distill    train the student with KD (and, by default, the same student from scratch as a baseline)
  export     student and teacher to ONNX (dynamo exporter), verified against PyTorch on test inputs
  quantize   every precision in quantize.modes: static INT8 (accuracy-aware), dynamic INT8, FP16
  benchmark  accuracy, latency (candidates interleaved in rounds), throughput, size of every artifact here
  report     DIR/results.json, report.md, pareto.png and DIR/bundle/ (the fastest student within tolerance)

Without RECIPE the bundled default (models/digits.yaml: scikit-learn digits, no download) runs. Each stage
saves a record in DIR/stages/; --stages re-runs some of them on a finished run (e.g. `--stages
benchmark,report` on another machine) and refuses, before touching anything, a subset whose inputs are
missing or stale.
Examples:  edgekd run --out runs/digits --set train.epochs=10
           edgekd run --out runs/digits --stages benchmark,report"""


def add_arguments(p) -> None:
    from edgekd.commands._common import add_recipe_arguments

    add_recipe_arguments(p, "runs/digits")
    p.add_argument("--stages", default=None, metavar="LIST",
                   help="comma-separated subset of data,teacher,select,tune,distill,export,quantize,benchmark,"
                        "report")


def main(args) -> int:
    from edgekd.commands._common import load_recipe_and_check, run_and_summarize

    stages = [s.strip() for s in args.stages.split(",") if s.strip()] if args.stages else None
    recipe = load_recipe_and_check(args, continuing=bool(stages) or args.resume)
    return run_and_summarize(recipe, args.out, stages=stages, resume=args.resume, quiet=args.quiet)
