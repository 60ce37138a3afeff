"""Helpers shared by the training commands."""

from __future__ import annotations

import sys

from edgekd.deploy.errors import DependencyError


def require_train_extra() -> None:
    missing = []
    for mod in ("torch", "torchvision", "onnxruntime", "sklearn", "safetensors", "matplotlib"):
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    if missing:
        raise DependencyError(f"training and export need packages that are not installed: {', '.join(missing)}",
                              hint="install them with: pip install 'edgekd[train]'")


def load_recipe_and_check(recipe: str | None, overrides: list[str]):
    from edgekd.recipe import load_recipe

    r = load_recipe(recipe, overrides)  # validated before any heavy import
    require_train_extra()
    return r


def run_and_summarize(recipe, out, *, stages=None, resume=False, quiet=False) -> int:
    from rich.console import Console

    from edgekd import distributed
    from edgekd.pipeline import run_pipeline
    from edgekd.ui import RichUI, summary_table

    ui = RichUI(quiet=quiet)
    results = run_pipeline(recipe, out, stages=stages, resume=resume, ui=ui)
    if distributed.is_main():
        final = results.get("final")
        console = Console(width=None if sys.stdout.isatty() else 140)
        if final:
            console.print(summary_table(final))
            chosen = final["bundle"]["chosen"]
            console.print(f"bundle: {out}/bundle ({chosen})  report: {out}/report.md")
        elif "distillation" in results:
            d = results["distillation"]
            console.print(f"teacher {d['teacher_top1']:.2%}  student {d['student_top1']:.2%}"
                          + (f"  baseline {d['baseline_top1']:.2%}" if d["baseline_top1"] is not None else ""))
    distributed.shutdown()
    return 0
