"""Helpers shared by the training commands."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from edgekd.deploy.errors import DependencyError

TRAIN_MODULES = ("torch", "torchvision", "onnxruntime", "onnxscript", "sklearn", "safetensors")


def require_train_extra() -> None:
    """Say which training packages are missing — by looking them up, not importing them (fast)."""
    missing = [m for m in TRAIN_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise DependencyError(f"training and export need packages that are not installed: {', '.join(missing)}",
                              hint="install them with: pip install 'edgekd[train,ort]' (or [train,ort-gpu] on an "
                                   "NVIDIA machine)")


def add_recipe_arguments(p, default_out: str) -> None:
    p.add_argument("recipe", nargs="?", default=None,
                   help="recipe YAML path or bundled name (default: digits, or the run's own recipe.yaml with "
                        "--resume/--stages)")
    p.add_argument("--out", default=default_out, metavar="DIR", help=f"output folder (default: {default_out})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value, e.g. --set train.epochs=3 (repeatable; validated)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in --out: finished stages are kept, training continues from "
                        "its last epoch checkpoint")
    p.add_argument("--no-factories", action="store_true",
                   help="refuse every factory (package.module:function) a recipe names: for recipes from "
                        "strangers (factories are code; see README, Promises)")


def load_recipe_and_check(args, continuing: bool = False):
    """The recipe: the named one, or — when continuing a run (--resume/--stages) without a name — the run's
    own ``recipe.yaml``; validated before any heavy import, then the training packages are looked up."""
    from edgekd import factories
    from edgekd.recipe import load_recipe

    if getattr(args, "no_factories", False):
        factories.forbid_factories()
    recipe = args.recipe
    saved = Path(args.out) / "recipe.yaml"
    if recipe is None and continuing and saved.is_file():
        recipe = saved
    r = load_recipe(recipe, args.overrides)
    require_train_extra()
    return r


def run_and_summarize(recipe, out, *, stages=None, resume=False, quiet=False) -> int:
    from rich.console import Console

    from edgekd import distributed
    from edgekd.pipeline import run_pipeline
    from edgekd.ui import RichUI, summary_table

    result = run_pipeline(recipe, out, stages=stages, resume=resume, ui=RichUI(quiet=quiet))
    if distributed.is_main():
        console = Console(width=None if sys.stdout.isatty() else 160)
        _summary(console, result, out, summary_table)
    distributed.shutdown()
    return 0


def _summary(console, result, out, summary_table) -> None:
    from edgekd.benchmarks.results import load_results
    from edgekd.report import fmt_pct, fmt_pp

    if result.complete and result.run.results.is_file():
        doc = load_results(result.run.results)
        console.print(summary_table(doc))
        console.print(f"bundle: {out}/bundle — {doc.bundle.decision}" if doc.bundle and doc.bundle.chosen
                      else f"no bundle: {doc.bundle.decision if doc.bundle else 'no report'}", markup=False)
        console.print(f"report: {out}/report.md", markup=False)
    elif "distill" in result.artifacts:
        d = result.artifacts["distill"]
        base = f"  baseline {fmt_pct(d.baseline.test_top1)} (gain {fmt_pp(d.student.test_top1 - d.baseline.test_top1)})" \
            if d.baseline else ""
        console.print(f"teacher {fmt_pct(d.teacher_top1)}  student {fmt_pct(d.student.test_top1)}{base}",
                      markup=False)
    console.print(f"stages run: {', '.join(result.ran) or 'none'}; run {'complete' if result.complete else 'partial'}"
                  f" in {out}", markup=False)
