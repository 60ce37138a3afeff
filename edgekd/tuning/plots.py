"""The search's and the student choice's plots, drawn with matplotlib's object-oriented API (the figure and
saving helpers of :mod:`edgekd.benchmarks.plots`: Agg canvas, no pyplot, atomic PNG writes).

* :func:`plot_knobs` — validation top-1 against each knob, one panel per knob (complete trials, pruned
  trials at their last value, the recipe's own configuration and the best one marked);
* :func:`plot_candidates` — candidates' latency against validation top-1, with the budget line; the
  candidates over it (never trained) sit on the bottom edge.

Example:
    >>> plot_knobs(artifact.trials, "tune.png")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path

from edgekd.benchmarks.plots import DPI, _figure, _save
from edgekd.deploy.errors import require
from edgekd.deploy.fileio import atomic_write_via

#: knob → (axis label, log scale)
AXES = {"method": ("method", False), "temperature": ("temperature T (log)", True), "alpha": ("alpha", False),
        "lr": ("learning rate (log)", True), "epochs": ("epochs", False)}


def plot_knobs(trials, path: str | os.PathLike, knobs=("method", "temperature", "alpha", "lr")) -> Path:
    """Validation top-1 (%) of every trial against each knob in ``knobs``."""
    require("matplotlib", "plots", "drawing the search plots")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.4 * len(knobs), 3.6), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, len(knobs), sharey=True, squeeze=False)[0]
    shown = [t for t in trials if t.knobs is not None and t.value is not None]
    best = max((t for t in shown if t.state == "COMPLETE"), key=lambda t: (t.value, -t.number), default=None)
    methods = sorted({t.knobs.method for t in shown})
    for ax, knob in zip(axes, knobs, strict=True):
        _panel(ax, knob, shown, best, methods)
    axes[0].set_ylabel("validation top-1 (%)")
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=4, fontsize=7)
    fig.suptitle("Search: validation top-1 against each knob", fontsize=10)
    FigureCanvasAgg(fig)
    return atomic_write_via(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight"))


def _x(t, knob: str, methods: list[str]) -> float:
    value = getattr(t.knobs, knob)
    return methods.index(value) + 0.08 * ((t.number % 5) - 2) if knob == "method" else value


def _panel(ax, knob: str, shown, best, methods) -> None:
    label, log = AXES[knob]
    groups = {"complete": [t for t in shown if t.state == "COMPLETE"],
              "pruned (last value)": [t for t in shown if t.state != "COMPLETE"]}
    for (name, members), style in zip(groups.items(), ({"color": "C0"}, {"color": "0.6", "marker": "v"}),
                                      strict=True):
        ax.scatter([_x(t, knob, methods) for t in members], [100 * t.value for t in members], s=18, label=name,
                   zorder=3, **style)
    default = [t for t in shown if t.origin == "recipe"]
    if default:
        ax.scatter([_x(default[0], knob, methods)], [100 * default[0].value], s=70, marker="D", facecolors="none",
                   edgecolors="k", label="recipe's own knobs", zorder=4)
    if best is not None:
        ax.scatter([_x(best, knob, methods)], [100 * best.value], s=140, marker="*", color="C3", label="best",
                   zorder=5)
    if knob == "method":
        ax.set_xticks(range(len(methods)), methods)
        ax.set_xlim(-0.5, len(methods) - 0.5)
    if log:
        _log_axis(ax, [getattr(t.knobs, knob) for t in shown])
    ax.set_xlabel(label)
    ax.grid(True, which="major", alpha=0.25)


def _log_axis(ax, values) -> None:
    """A log x axis labelled in plain numbers: 1, 2, 5, 10, ... over a short range, powers of ten over a long
    one (no crowded labels)."""
    import math

    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    values = [v for v in values if v and v > 0]
    decades = math.log10(max(values) / min(values)) if values else 0.0
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0,) if decades > 1.3 else (1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def plot_candidates(results, budget: float | None, chosen: str | None, path: str | os.PathLike) -> Path:
    """Candidates' p50 latency (x) against validation top-1 after the ranking run (y), the budget as a
    vertical line; candidates over budget (not trained) are crosses on the bottom edge."""
    fig, ax = _figure()  # checks that matplotlib is installed
    from matplotlib.transforms import blended_transform_factory

    ranked = [c for c in results if c.val_top1 is not None]
    ax.scatter([c.latency_ms for c in ranked], [100 * c.val_top1 for c in ranked], color="C0", zorder=3,
               label="within budget (ranked)")
    for i, c in enumerate(sorted(ranked, key=lambda c: c.latency_ms)):  # alternate sides: close points stay legible
        ax.annotate(c.name + (" ★" if c.name == chosen else ""), (c.latency_ms, 100 * c.val_top1),
                    textcoords="offset points", xytext=(4, 5 if i % 2 == 0 else -12), fontsize=7)
    edge = blended_transform_factory(ax.transData, ax.transAxes)  # x in ms, y on the bottom edge
    dropped = [c for c in results if c.val_top1 is None]
    if dropped:
        ax.scatter([c.latency_ms for c in dropped], [0.04] * len(dropped), marker="x", color="C3", zorder=3,
                   transform=edge, label="over budget (dropped, not trained)")
    for c in dropped:
        ax.annotate(c.name, (c.latency_ms, 0.04), xycoords=edge, textcoords="offset points", xytext=(4, 5),
                    fontsize=7, color="C3")
    if budget is not None:
        ax.axvline(budget, linestyle="--", color="C3", alpha=0.7, label=f"budget {budget:g} ms")
    xs = [c.latency_ms for c in results] + ([budget] if budget is not None else [])
    _log_axis(ax, xs)
    ax.set_xlim(min(xs) / 1.5, max(xs) * 1.5)  # the dropped (axes-coordinate) points do not autoscale
    ax.set(xlabel="latency p50 (ms, log scale)", ylabel="validation top-1 (%) after the ranking run",
           title="Student choice: latency vs accuracy (★ chosen)")
    return _save(fig, ax, path)
