"""What the search writes for a person: the trials table (``tune.md``), the knob plots (``tune.png``) and
``best_recipe.yaml`` — the recipe that reproduces the final student on its own.

Example:
    >>> files = write_tune_files(ctx, artifact)  # doctest: +SKIP
"""

from __future__ import annotations

import logging

import yaml

from edgekd.deploy.errors import DependencyError
from edgekd.deploy.fileio import write_text
from edgekd.report import Table, fmt_pct

log = logging.getLogger(__name__)


def _knob_cells(k, epochs: bool) -> list[str]:
    if k is None:
        return ["–"] * (5 if epochs else 4)
    cells = [k.method, f"{k.temperature:.3g}", f"{k.alpha:.3g}", f"{k.lr:.3g}"]
    return cells + [str(k.epochs)] if epochs else cells


def trials_table(art) -> Table:
    """Every trial, best first: state, knobs, validation top-1, epochs trained, duration, origin."""
    searched = bool(art.space.get("epochs"))
    order = sorted(art.trials, key=lambda t: (t.state != "COMPLETE", -(t.value or 0.0), t.number))
    rows = [[str(t.number), t.state.lower(), *_knob_cells(t.knobs, searched), fmt_pct(t.value), str(t.epochs_run),
             f"{t.duration_s:.1f}" if t.duration_s is not None else "–", t.origin, t.note] for t in order]
    notes = [f"Objective: {art.objective}. Pruned trials show their last reported value.",
             f"Search space: {space_text(art.space)}.", f"Study {art.study} in {art.storage}."]
    knobs = ["method", "T", "alpha", "lr"] + (["epochs"] if searched else [])
    return Table("Trials", ["#", "state", *knobs, "val top-1", "epochs trained", "seconds", "origin", "note"], rows,
                 notes)


def space_text(space: dict) -> str:
    """``methods kd, dkd; temperature 1–8 (log); ...`` for notes and summaries."""
    parts = [f"methods {', '.join(space.get('methods', []))}"]
    for key, log in (("temperature", True), ("alpha", False), ("lr", True), ("epochs", False)):
        if space.get(key):
            lo, hi = space[key]
            parts.append(f"{key} {lo:g}–{hi:g}{' (log)' if log else ''}")
    if not space.get("epochs"):
        parts.append(f"{space.get('epochs_per_trial') or 'the recipe’s'} epochs per trial")
    return "; ".join(parts)


def summary_rows(art) -> list[list[str]]:
    """The search in a few rows (the run report and the terminal use these too)."""
    states = [t.state for t in art.trials]
    b = art.best
    best = "–" if b is None else f"{b.method}, T={b.temperature:.3g}, alpha={b.alpha:.3g}, lr={b.lr:.3g}, " \
                                 f"epochs={b.epochs}"
    return [["trials", f"{states.count('COMPLETE')} complete, {states.count('PRUNED')} pruned, "
                       f"{states.count('FAIL')} failed ({art.found_finished} found from before, {art.ran_now} now)"],
            ["best knobs", best], ["best validation top-1", fmt_pct(art.best_value)],
            ["recipe's own knobs, validation top-1", fmt_pct(art.default_value)
             if art.default_value is not None else "not a trial (outside the search space)"]]


def write_tune_files(run, recipe, art, select) -> tuple[str, ...]:
    """``best_recipe.yaml``, ``tune.md`` and ``tune.png`` in the run folder; returns their relative paths."""
    from edgekd.tuning.space import best_recipe

    files = []
    if art.best is not None:
        header = (f"# edgekd tune: the best of {len(art.trials)} trial(s) of study {art.study}\n"
                  f"# objective: {art.objective} = {fmt_pct(art.best_value)}\n")
        text = header + yaml.safe_dump(best_recipe(recipe, art.best, select), sort_keys=False)
        files.append(write_text(run.best_recipe, text))
    plot = _plot(run, art, recipe)
    parts = ["# edgekd tune", "", Table("Search", ["", "value"], summary_rows(art)).markdown(),
             trials_table(art).markdown()]
    if plot:
        parts += [f"![validation top-1 vs each knob]({plot.name})", ""]
        files.append(plot)
    files.append(write_text(run.tune_report, "\n".join(parts)))
    return tuple(run.rel(p) for p in files)


def _plot(run, art, recipe):
    from edgekd.tuning.plots import plot_knobs

    knobs = ("method", "temperature", "alpha", "lr") + (("epochs",) if recipe.tune.epochs else ())
    try:
        return plot_knobs(art.trials, run.tune_plot, knobs)
    except DependencyError as exc:
        log.warning("skipping %s: %s", run.tune_plot.name, exc.message)
        return None
