"""Report plots: latency vs accuracy (Pareto front marked), latency per batch size, a bar chart per device.

matplotlib is imported lazily through its object-oriented API (``Figure`` + the Agg canvas), so no GUI
backend and no global pyplot state are involved. Each writer takes result rows (results.json artifact
dicts, optionally with a ``device`` label) and writes one PNG atomically.

Example:
    >>> rows = [{"name": "teacher", "top1": 0.98, "latency_ms": {"p50": 1.2}}]
    >>> plot_pareto(rows, "pareto.png")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections import defaultdict
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


def p50(row: dict) -> float | None:
    """The row's median latency in ms, or ``None`` when it has none (a failed row)."""
    value = (row.get("latency_ms") or {}).get("p50")
    return float(value) if value is not None else None


def smallest_batch(rows: list[dict]) -> list[dict]:
    """Per (device, artifact name), the timed row with the smallest batch (latencies comparable)."""
    best: dict[tuple, dict] = {}
    for r in rows:
        key = (r.get("device") or "", r.get("name", "?"))
        if p50(r) is not None and (key not in best or int(r.get("batch") or 1) < int(best[key].get("batch") or 1)):
            best[key] = r
    return list(best.values())


def plot_pareto(rows: list[dict], path: str | os.PathLike, title: str = "Latency vs accuracy") -> Path:
    """Scatter p50 latency vs top-1, one numbered point per row (key beside the plot), each device's
    Pareto front as a dashed line with ringed points."""
    fig, ax = _figure(width=11.0)
    groups = _by_device(r for r in smallest_batch(rows) if r.get("top1") is not None)
    numbered = 0
    for n, (device, members) in enumerate(groups.items()):
        color = f"C{n % 10}"
        # top-1 rounded: float32 vs float64 accuracy sums differ by ~1e-8 and must not move the front
        pts = [(p50(r), round(100.0 * float(r["top1"]), 4)) for r in members]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], color=color, label=device or None, zorder=3)
        _annotate(ax, [_label(r) for r in members], pts, numbered, color)
        numbered += len(pts)
        front = [pts[i] for i in pareto_front(pts)]
        ax.plot([p[0] for p in front], [p[1] for p in front], "--o", color=color, alpha=0.6, markersize=11,
                markerfacecolor="none", label=f"Pareto front{f' ({device})' if device else ''}")
    if not groups:
        _empty(ax, "no rows with both latency and top-1")
    ax.set_xscale("log")
    ax.set(xlabel="latency p50 (ms, log scale) - lower is better", ylabel="top-1 (%) - higher is better",
           title=title)
    return _save(fig, ax, path)


def plot_batch_latency(rows: list[dict], path: str | os.PathLike) -> Path:
    """p50 latency per sample against batch size, one line per (device, artifact) timed at 2+ batch sizes."""
    fig, ax = _figure()
    lines: dict[tuple, list[tuple[int, float]]] = defaultdict(list)
    for r in rows:
        if p50(r) is not None and r.get("batch"):
            lines[(r.get("device") or "", r.get("name", "?"))].append((int(r["batch"]), p50(r) / int(r["batch"])))
    lines = {k: v for k, v in lines.items() if len({b for b, _ in v}) > 1}  # a line needs two batch sizes
    devices = sorted({device for device, _ in lines})
    for n, ((device, name), pts) in enumerate(sorted(lines.items())):
        pts.sort()
        style = ("-", "--", ":", "-.")[devices.index(device) % 4]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", linestyle=style, color=f"C{n % 10}",
                label=f"{name} ({device})" if device else name)
    if not lines:
        _empty(ax, "no artifact was timed at several batch sizes")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set(xlabel="batch size", ylabel="latency p50 per sample (ms)", title="Latency per batch size")
    return _save(fig, ax, path)


def plot_devices(rows: list[dict], path: str | os.PathLike) -> Path:
    """Grouped bars: p50 latency at each artifact's smallest batch, one bar colour per device."""
    fig, ax = _figure()
    table: dict[str, dict[str, float]] = defaultdict(dict)
    for r in smallest_batch(rows):
        table[r.get("device") or ""][r.get("name", "?")] = p50(r)
    names = sorted({n for per in table.values() for n in per})
    width = 0.8 / max(len(table), 1)
    for n, (device, per) in enumerate(sorted(table.items())):
        xs = [i + n * width for i, name in enumerate(names) if name in per]
        ax.bar(xs, [per[name] for name in names if name in per], width, label=device or "this device")
    if names:
        ax.set_xticks([i + width * (len(table) - 1) / 2 for i in range(len(names))], names, rotation=20,
                      ha="right", fontsize=8)
    else:
        _empty(ax, "no latency rows")
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


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray")


def _by_device(rows) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[r.get("device") or ""].append(r)
    return dict(groups)


def _annotate(ax, labels: list[str], pts: list[tuple[float, float]], start: int, color: str) -> None:
    """Number each point on the plot and list ``number  label`` beside the axes (labels never overlap)."""
    for i, (label, (x, y)) in enumerate(zip(labels, pts, strict=True), start + 1):
        ax.annotate(str(i), (x, y), textcoords="offset points", xytext=(3, 4), fontsize=7, color=color,
                    fontweight="bold")
        ax.annotate(f"{i:>2}  {label}  {y:.2f}% {x:.4g} ms", (1.02, 1.0 - 0.045 * (i - 1)),
                    xycoords="axes fraction", va="top", fontsize=7, color=color, family="monospace")


def _label(row: dict) -> str:
    batch = row.get("batch")
    return f"{row.get('name', '?')}" + (f" b{batch}" if batch and int(batch) != 1 else "")
