"""`edgekd tune`: the distillation search (and the student choice, when the recipe lists candidates)."""

from __future__ import annotations

HELP = "search the distillation knobs (T, alpha, method, lr) with Optuna; choose the student by latency"
DESCRIPTION = """Run the data, teacher, select and tune stages of a recipe with tune.enabled on:

  select  (when students.candidates is set) export each candidate untrained, time it here or read its
          latency from a device profile (students.profile: an `edgekd bench --json` file), drop those over
          students.latency_budget_ms, rank the rest by a short distillation
  tune    Optuna TPE over tune.methods, tune.temperature, tune.alpha, tune.lr (and tune.epochs), each trial a
          short distillation scored on the validation split (never on test), pruned per epoch

The study lives in DIR/tune.db (or tune.storage, any RDB URL, for several processes or machines): run the same
command again after a kill, or with a larger --trials, and only the rest of the budget runs. Writes
DIR/best_recipe.yaml, DIR/tune.md and DIR/tune.png; `edgekd run --out DIR --resume` then distils the student
with the best knobs and exports, quantizes, benchmarks and bundles it.
Examples:  edgekd tune --out runs/tune --trials 12 --set tune.epochs_per_trial=10
           edgekd tune my.yaml --export-candidates candidates/   # files to bench on the device"""


def add_arguments(p) -> None:
    p.add_argument("recipe", nargs="?", default=None,
                   help="recipe YAML path or bundled name (default: digits, or DIR's own recipe.yaml)")
    p.add_argument("--out", default="runs/tune", metavar="DIR", help="run folder (default: runs/tune)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value, e.g. --set tune.epochs_per_trial=10 (repeatable; validated)")
    p.add_argument("--trials", type=int, default=None, metavar="N", help="finished trials wanted (tune.trials)")
    p.add_argument("--timeout-s", type=float, default=None, metavar="S",
                   help="seconds of trials wanted, summed over the study (tune.timeout_s)")
    p.add_argument("--storage", default=None, metavar="URL", help="Optuna storage (tune.storage), e.g. "
                   "postgresql://user@host/db; default sqlite:///DIR/tune.db")
    p.add_argument("--export-candidates", default=None, metavar="FOLDER",
                   help="only export students.candidates (untrained ONNX) into FOLDER, to bench on the device")
    p.add_argument("--no-factories", action="store_true", help="refuse every factory a recipe names")


def _overrides(args) -> list[str]:
    extra = [f"tune.{k}={v}" for k, v in (("trials", args.trials), ("timeout_s", args.timeout_s),
                                          ("storage", args.storage)) if v is not None]
    return [*args.overrides, *extra, "tune.enabled=true"]


def main(args) -> int:
    from edgekd.commands._common import load_recipe_and_check
    from edgekd.deploy.errors import require

    args.overrides = _overrides(args)
    recipe = load_recipe_and_check(args, continuing=True)
    if args.export_candidates:
        return _export(recipe, args.export_candidates)
    require("optuna", "tune", "edgekd tune (the distillation search)")
    from edgekd.tuning import tune
    from edgekd.ui import RichUI

    art = tune(recipe, args.out, ui=RichUI(quiet=args.quiet))
    _summary(art, args.out)
    return 0


def _export(recipe, folder) -> int:
    from rich.console import Console

    from edgekd.data import load_data
    from edgekd.deploy.errors import UsageError
    from edgekd.tuning.students import export_candidates

    if not recipe.students.candidates:
        raise UsageError("--export-candidates: the recipe lists no students.candidates")
    files = export_candidates(recipe, load_data(recipe.data, recipe.seed), folder)
    console = Console(highlight=False)
    for e in files:
        console.print(f"{e.path}  {e.name}  ({e.signature}: {e.structure})", markup=False)
    console.print(f"on the device: edgekd bench {folder}/*.onnx --batch {recipe.students.batch} --json "
                  "profile.json   then set students.profile: profile.json", markup=False)
    return 0


def _summary(art, out) -> None:
    from rich.console import Console

    from edgekd.report import Table
    from edgekd.tuning.report import summary_rows

    console = Console(highlight=False)
    console.print(Table("edgekd tune", ["", "value"], summary_rows(art)).rich())
    for rel in art.files:
        console.print(f"wrote {out}/{rel}", markup=False)
    console.print(f"next: edgekd run --out {out} --resume   (distil with the best knobs, export, quantize, "
                  f"benchmark, bundle)", markup=False)
