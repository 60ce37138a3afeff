"""`edgekd distill`: the training stages alone (teacher; select and tune when the recipe turns them on;
distill)."""

from __future__ import annotations

HELP = "load/train the teacher and distill the student (no export/benchmark)"
DESCRIPTION = """Run the data, teacher and distill stages of a recipe: DIR/weights/*.safetensors and the stage
records in DIR/stages/ (continue later with `edgekd run --out DIR --resume`). Works under torchrun for
several GPUs/processes:
  torchrun --nproc_per_node 4 -m edgekd.cli distill models/cifar10_resnet18_mbv3.yaml --out runs/c10"""


def add_arguments(p) -> None:
    from edgekd.commands._common import add_recipe_arguments

    add_recipe_arguments(p, "runs/distill")


def main(args) -> int:
    from edgekd.commands._common import load_recipe_and_check, run_and_summarize

    recipe = load_recipe_and_check(args, continuing=args.resume)
    return run_and_summarize(recipe, args.out, stages=["data", "teacher", "select", "tune", "distill"],
                             resume=args.resume, quiet=args.quiet)
