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


def number(kind: type, lo: float | None = None, hi: float | None = None, above: float | None = None):
    """An argparse ``type`` for a finite number in ``[lo, hi]`` (``above``: strictly greater): a gate such as
    ``--atol inf`` or a budget such as ``--min-runs -1`` is refused before any work."""
    import argparse
    import math

    bounds = f"{'(' + str(above) if above is not None else '[' + str(lo if lo is not None else '-inf')}, " \
             f"{hi if hi is not None else 'inf'}]"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not math.isfinite(value) or (lo is not None and value < lo) or (hi is not None and value > hi) or (
                above is not None and value <= above):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number in {bounds}")
        return value

    return parse


def require_inputs(*paths: tuple[str | None, str]) -> None:
    """Every ``(path, what)`` given must exist; the first missing one (in command-line order) is named, so a
    command with several wrong inputs reports the missing file first."""
    from edgekd.deploy.errors import InputFileError

    for path, what in paths:
        if path is not None and not Path(path).exists():
            raise InputFileError(f"{what} not found: {path}", hint="check the path")


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
    p.add_argument("--seeds", type=number(int, 1, 100), default=None, metavar="N",
                   help="train student and baseline on N seeds and report the KD gain as mean ± std with a 95%% "
                        "interval (same as --set distill.seeds=N)")
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
    overrides = list(args.overrides) + ([f"distill.seeds={args.seeds}"] if getattr(args, "seeds", None) else [])
    r = load_recipe(recipe, overrides)
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

    d = result.artifacts.get("distill")
    if result.complete and result.run.results.is_file():
        doc = load_results(result.run.results)
        console.print(summary_table(doc))
        if d is not None and d.gain is not None:
            console.print(f"distillation: {d.gain.statement}", markup=False)
        console.print(f"bundle: {out}/bundle — {doc.bundle.decision}" if doc.bundle and doc.bundle.chosen
                      else f"no bundle: {doc.bundle.decision if doc.bundle else 'no report'}", markup=False)
        console.print(f"report: {out}/report.md", markup=False)
    elif d is not None:
        base = f"  baseline {fmt_pct(d.baseline.test_top1)} (gain {fmt_pp(d.student.test_top1 - d.baseline.test_top1)})" \
            if d.baseline else ""
        console.print(f"teacher {fmt_pct(d.teacher_top1)}  student {fmt_pct(d.student.test_top1)}{base}"
                      f" — seed {d.shipped_seed}", markup=False)
        if d.gain is not None:
            console.print(f"distillation: {d.gain.statement}", markup=False)
    console.print(f"stages run: {', '.join(result.ran) or 'none'}; run {'complete' if result.complete else 'partial'}"
                  f" in {out}", markup=False)
