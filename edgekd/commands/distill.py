"""`edgekd distill`: the teacher and distill stages alone."""

from __future__ import annotations

HELP = "load/train the teacher and distill the student (no export/benchmark)"
DESCRIPTION = """Run the teacher and distill stages of a recipe and write DIR/results.json with the
distillation figures and DIR/weights/*.safetensors. Works under torchrun for several GPUs/processes:
  torchrun --nproc_per_node 4 -m edgekd.cli distill models/cifar10_resnet18_mbv3.yaml --out runs/c10"""


def add_arguments(p) -> None:
    p.add_argument("recipe", nargs="?", default=None, help="recipe YAML path or bundled name (default: digits)")
    p.add_argument("--out", default="runs/distill", metavar="DIR", help="output folder (default: runs/distill)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value, e.g. --set train.epochs=3 (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue from the last epoch checkpoints in --out")


def main(args) -> int:
    from edgekd.commands._common import load_recipe_and_check, run_and_summarize

    recipe = load_recipe_and_check(args.recipe, args.overrides)
    return run_and_summarize(recipe, args.out, stages=["data", "teacher", "distill"], resume=args.resume,
                             quiet=args.quiet)
