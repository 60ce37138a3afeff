"""Report plots: latency vs accuracy (Pareto front marked), latency per batch size, a bar chart per device.

matplotlib is imported lazily through its object-oriented API (``Figure`` + the Agg canvas), so no GUI
backend and no global pyplot state are involved. Each writer takes :class:`Point` objects (one per timed
artifact) and writes one PNG atomically. Callers draw a plot only when they have points for it.

Example:
    >>> plot_pareto([Point("teacher", "laptop", 1, 1.2, 0.98)], "pareto.png")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from edgekd.deploy.errors import require
from edgekd.deploy.fileio import atomic_write_via

DPI = 110


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: lower latency (x) and higher accuracy (y).

    Example:
        >>> pareto_front([(1.0, 0.9), (2.0, 0.95), (3.0, 0.93)])
        [0, 1]
    """
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(ox <= x and oy >= y and (ox < x or oy > y) for j, (ox, oy) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


@dataclass(frozen=True)
class Point:
    """One timed artifact: its name, the series it belongs to (a device or results file), batch, p50 latency
    in ms and top-1 (a fraction, or ``None``)."""

    name: str
    series: str
    batch: int
    p50: float
    top1: float | None = None


def smallest_batch(points: list[Point]) -> list[Point]:
    """Per (series, artifact), the point with the smallest batch (latencies comparable)."""
    best: dict[tuple, Point] = {}
    for p in points:
        key = (p.series, p.name)
        if key not in best or p.batch < best[key].batch:
            best[key] = p
    return list(best.values())


def plot_pareto(points: list[Point], path: str | os.PathLike, title: str = "Latency vs accuracy") -> Path:
    """Scatter p50 latency vs top-1, one numbered point per artifact (key beside the plot), one colour per
    series, each series' Pareto front as a dashed line with ringed points."""
    fig, ax = _figure(width=11.0)
    groups = _by_series(p for p in smallest_batch(points) if p.top1 is not None)
    numbered = 0
    for n, (series, members) in enumerate(groups.items()):
        color = f"C{n % 10}"
        # top-1 rounded: float32 vs float64 accuracy sums differ by ~1e-8 and must not move the front
        pts = [(p.p50, round(100.0 * float(p.top1), 4)) for p in members]
        ax.scatter([x for x, _ in pts], [y for _, y in pts], color=color, label=series or None, zorder=3)
        _annotate(ax, [_label(p) for p in members], pts, numbered, color)
        numbered += len(pts)
        front = [pts[i] for i in pareto_front(pts)]
        ax.plot([x for x, _ in front], [y for _, y in front], "--o", color=color, alpha=0.6, markersize=11,
                markerfacecolor="none", label=f"Pareto front{f' ({series})' if series else ''}")
    ax.set_xscale("log")
    ax.set(xlabel="latency p50 (ms, log scale) - lower is better", ylabel="top-1 (%) - higher is better",
           title=title)
    return _save(fig, ax, path)


def plot_batch_latency(points: list[Point], path: str | os.PathLike) -> Path:
    """p50 latency per sample against batch size, one line per (series, artifact) timed at 2+ batch sizes."""
    fig, ax = _figure()
    lines: dict[tuple, list[tuple[int, float]]] = defaultdict(list)
    for p in points:
        lines[(p.series, p.name)].append((p.batch, p.p50 / p.batch))
    lines = {k: v for k, v in lines.items() if len({b for b, _ in v}) > 1}  # a line needs two batch sizes
    series = sorted({s for s, _ in lines})
    for n, ((s, name), pts) in enumerate(sorted(lines.items())):
        pts.sort()
        style = ("-", "--", ":", "-.")[series.index(s) % 4]
        ax.plot([b for b, _ in pts], [v for _, v in pts], marker="o", linestyle=style, color=f"C{n % 10}",
                label=f"{name} ({s})" if s else name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set(xlabel="batch size", ylabel="latency p50 per sample (ms)", title="Latency per batch size")
    return _save(fig, ax, path)


def plot_devices(points: list[Point], path: str | os.PathLike) -> Path:
    """Grouped bars: p50 latency at each artifact's smallest batch, one bar colour per series."""
    fig, ax = _figure()
    table: dict[str, dict[str, float]] = defaultdict(dict)
    for p in smallest_batch(points):
        table[p.series][p.name] = p.p50
    names = sorted({n for per in table.values() for n in per})
    width = 0.8 / max(len(table), 1)
    for n, (series, per) in enumerate(sorted(table.items())):
        xs = [i + n * width for i, name in enumerate(names) if name in per]
        ax.bar(xs, [per[name] for name in names if name in per], width, label=series or "this device")
    ax.set_xticks([i + width * (len(table) - 1) / 2 for i in range(len(names))], names, rotation=20, ha="right",
                  fontsize=8)
    values = [v for per in table.values() for v in per.values() if v > 0]
    if values and max(values) / min(values) > 20:
        ax.set_yscale("log")
    ax.set(ylabel="latency p50 (ms)", title="Latency across devices (smallest batch)")
    return _save(fig, ax, path)


def _figure(width: float = 7.5):
    require("matplotlib", "plots", "drawing report plots")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, 4.8), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.grid(True, which="both", alpha=0.25)
    return fig, ax


def _save(fig, ax, path: str | os.PathLike) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    handles = ax.get_legend_handles_labels()[0]
    if len(handles) > 6:  # many lines: the legend goes beside the axes, not over the data
        fig.set_size_inches(max(fig.get_figwidth(), 11.0), fig.get_figheight())
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    elif handles:
        ax.legend(fontsize=7, loc="best")
    return atomic_write_via(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI,
                                                                    bbox_inches="tight"))


def _by_series(points) -> dict[str, list[Point]]:
    groups: dict[str, list[Point]] = defaultdict(list)
    for p in points:
        groups[p.series].append(p)
    return dict(groups)


def _annotate(ax, labels: list[str], pts: list[tuple[float, float]], start: int, color: str) -> None:
    """Number each point on the plot and list ``number  label`` beside the axes (labels never overlap)."""
    for i, (label, (x, y)) in enumerate(zip(labels, pts, strict=True), start + 1):
        ax.annotate(str(i), (x, y), textcoords="offset points", xytext=(3, 4), fontsize=7, color=color,
                    fontweight="bold")
        ax.annotate(f"{i:>2}  {label}  {y:.2f}% {x:.4g} ms", (1.02, 1.0 - 0.045 * (i - 1)),
                    xycoords="axes fraction", va="top", fontsize=7, color=color, family="monospace")


def _label(point: Point) -> str:
    return point.name + (f" b{point.batch}" if point.batch != 1 else "")
