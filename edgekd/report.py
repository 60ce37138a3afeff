"""Reports from results documents: a run's ``report.md`` + ``pareto.png``, and ``edgekd report``'s merge of
several devices into a report that says what to ship where.

Every table is built once as a :class:`Table` and rendered to Markdown, HTML or the terminal (rich), so all
three say the same thing. Figures: accuracy in %, differences in pp, speedups against the teacher *in the same
runtime* (student ONNX vs teacher ONNX) with the speedup over the PyTorch teacher in its own column, ⚠ on
latencies too noisy to trust. User-controlled text (names, labels, device strings) is escaped for the format
it is written into. Files are written atomically; plots are drawn by :mod:`edgekd.benchmarks.plots`.

Example:
    >>> paths = write_run_report(doc, Path("runs/digits"))  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import html
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from edgekd.benchmarks.results import BundleChoice, ResultRow, ResultsDocument, load_results, versus_teacher
from edgekd.deploy.errors import DependencyError
from edgekd.deploy.fileio import write_text

log = logging.getLogger(__name__)
__all__ = ["Table", "artifact_table", "load_results", "merge_reports", "write_run_report"]


# ---------------------------------------------------------------------------------------------- tables
def md_escape(text: str) -> str:
    """Text a user controls, made inert in Markdown: no table cells, links, images, HTML or emphasis."""
    text = str(text).replace("\\", "\\\\").replace("\n", " ").replace("\r", " ")
    return re.sub(r"([|`*_\[\]<>!#~])", r"\\\1", text)


@dataclass
class Table:
    """A titled table. Cells and notes are plain text; ``**bold**`` in notes is the only markup."""

    title: str
    headers: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)

    def markdown(self, level: int = 2) -> str:
        lines = [f"{'#' * level} {md_escape(self.title)}", ""]
        if self.rows:
            lines += ["| " + " | ".join(self.headers) + " |", "|" + "---|" * len(self.headers)]
            lines += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in self.rows]
            lines.append("")
        for note in self.notes:
            lines += [_md_note(note), ""]
        return "\n".join(lines)

    def html(self, level: int = 2) -> str:
        out = [f"<h{level}>{html.escape(self.title)}</h{level}>"]
        if self.rows:
            out.append("<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in self.headers)
                       + "</tr></thead><tbody>")
            out += ["<tr>" + "".join(f"<td{'' if _numeric(c) else ' class=t'}>{html.escape(c)}</td>" for c in row)
                    + "</tr>" for row in self.rows]
            out.append("</tbody></table>")
        out += [f"<p>{_html_note(n)}</p>" for n in self.notes]
        return "\n".join(out)

    def rich(self):
        from rich.markup import escape
        from rich.table import Table as RichTable

        table = RichTable(title=self.title, title_justify="left")
        for i, h in enumerate(self.headers):
            table.add_column(h, justify="left" if i == 0 else "right")
        for row in self.rows:
            table.add_row(*(escape(c) for c in row))
        return table


def _md_note(note: str) -> str:
    parts = note.split("**")
    return "".join(md_escape(p) if i % 2 == 0 else f"**{md_escape(p)}**" for i, p in enumerate(parts))


def _html_note(note: str) -> str:
    parts = note.split("**")
    return "".join(html.escape(p) if i % 2 == 0 else f"<strong>{html.escape(p)}</strong>" for i, p in enumerate(parts))


# ---------------------------------------------------------------------------------------------- formatting
_NUMBER = re.compile(r"^[-+–]?[\d.,]*\d[\d.,]*(e[-+]?\d+)?\s*(%|pp|ms|s|×|B|KB|MB|GB)?( ⚠)?$|^[–-]$")


def _numeric(cell: str) -> bool:
    """A figure (right-aligned in HTML), as opposed to text (left-aligned)."""
    return bool(_NUMBER.match(cell.strip()))


def fmt_pct(x) -> str:
    return "–" if x is None else f"{100.0 * float(x):.2f}%"


def fmt_pp(x) -> str:
    if x is None:
        return "–"
    pp = round(100.0 * float(x), 2)
    return f"{pp if pp else 0.0:+.2f} pp"  # float noise must not print as "-0.00"


def fmt_ms(x) -> str:
    return "–" if x is None else f"{float(x):.4g}"


def fmt_ratio(x) -> str:
    return "–" if x is None else f"{float(x):.3g}×"


def fmt_size(n) -> str:
    if n is None:
        return "–"
    n = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def fmt_int(n) -> str:
    return "–" if n is None else f"{int(n):,}"


# ---------------------------------------------------------------------------------------------- artifacts
COLUMNS = {
    "artifact": lambda r, c, mark: r.name + mark,
    "source": lambda r, c, mark: r.extra.get("source", "–"),
    "role": lambda r, c, mark: r.role or "–",
    "precision": lambda r, c, mark: r.precision + (f" ({r.variant})" if r.variant not in (None, "export",
                                                                                          r.precision) else ""),
    "runtime": lambda r, c, mark: r.runtime or r.format,
    "threads": lambda r, c, mark: str(r.threads) if r.threads else "default",
    "batch": lambda r, c, mark: str(r.batch),
    "top-1": lambda r, c, mark: fmt_pct(r.top1),
    "val top-1": lambda r, c, mark: fmt_pct(r.val_top1),
    "Δ top-1 vs teacher": lambda r, c, mark: fmt_pp(c.top1_delta),
    "p50 ms": lambda r, c, mark: f"failed: {r.error}" if r.error else fmt_ms(r.p50) + (" ⚠" if r.noisy else ""),
    "p99 ms": lambda r, c, mark: fmt_ms(r.latency.p99 if r.latency else None),
    "samples/s": lambda r, c, mark: fmt_int(round(r.throughput_sps)) if r.throughput_sps else "–",
    "size": lambda r, c, mark: fmt_size(r.size_bytes),
    "params": lambda r, c, mark: fmt_int(r.params),
    "speedup (same runtime)": lambda r, c, mark: fmt_ratio(c.speedup),
    "vs teacher PyTorch": lambda r, c, mark: fmt_ratio(c.cross_speedup),
    "size vs teacher": lambda r, c, mark: fmt_ratio(c.size_ratio),
}
FULL = ["artifact", "role", "precision", "runtime", "batch", "top-1", "val top-1", "Δ top-1 vs teacher", "p50 ms",
        "p99 ms", "samples/s", "size", "params", "speedup (same runtime)", "vs teacher PyTorch", "size vs teacher"]
TERMINAL = ["artifact", "top-1", "Δ top-1 vs teacher", "p50 ms", "p99 ms", "samples/s", "size", "params",
            "speedup (same runtime)", "vs teacher PyTorch"]


def artifact_table(rows: list[ResultRow], title: str, columns: list[str] = FULL, chosen: str | None = None) -> Table:
    """One row per artifact, compared with the teacher by :func:`~edgekd.benchmarks.results.versus_teacher`."""
    cells = [[COLUMNS[col](r, versus_teacher(r, rows), " ★" if r.name == chosen else "") for col in columns]
             for r in rows]
    notes = ["Speedup (same runtime) compares with the teacher in the same runtime, format, batch and threads "
             "(student ONNX vs teacher ONNX); \"vs teacher PyTorch\" is the speedup over the teacher as you "
             "trained it. Accuracy in %, differences in pp (percentage points)."]
    if chosen:
        notes.append(f"★ = shipped in the bundle: **{chosen}**.")
    if any(r.noisy for r in rows):
        notes.append("⚠ = too noisy to trust (high spread): pin clocks, close other programs, measure longer.")
    return Table(title, columns, cells, notes)


def latency_table(rows: list[ResultRow]) -> Table:
    """Per model and batch size: the latency statistics (``edgekd bench``'s table)."""
    cells = []
    for r in rows:
        if r.error:
            cells.append([r.name, str(r.batch), f"failed: {r.error}"] + [""] * 10)
            continue
        lat = r.latency
        cells.append([r.name, str(r.batch), *(fmt_ms(getattr(lat, k)) for k in ("p50", "p90", "p95", "p99", "mean",
                                                                                "std", "min", "max")),
                      f"{lat.cv:.1%}" + (" ⚠" if lat.noisy else ""), fmt_int(round(r.throughput_sps)),
                      fmt_int(lat.runs)])
    return Table("latency in ms", ["model", "batch", "p50", "p90", "p95", "p99", "mean", "std", "min", "max", "CV",
                                   "samples/s", "runs"], cells)


def distillation_table(dist: dict) -> Table:
    rows = [["method", str(dist.get("method", "–"))], ["temperature", _knob(dist.get("temperature"))],
            ["alpha", _knob(dist.get("alpha"))], ["teacher outputs", str(dist.get("teacher_outputs", "–"))],
            ["augmentation", str(dist.get("augmentation", "–"))],
            ["teacher top-1", fmt_pct(dist.get("teacher_top1"))],
            ["student top-1 (distilled, shipped seed)", fmt_pct(dist.get("student_top1"))],
            ["baseline top-1 (same student, no teacher)", fmt_pct(dist.get("baseline_top1"))],
            ["gain from distillation (this seed)", fmt_pp(dist.get("gain"))]]
    notes = []
    if dist.get("shipped_because"):
        notes.append(f"Shipped: the student of seed {dist.get('shipped_seed')} ({dist['shipped_because']}).")
    gain = dist.get("gain_over_seeds")
    if gain:
        rows.append([f"gain over {gain['n']} seeds", _gain_text(gain)])
        notes.append(gain["statement"])
    return Table("Distillation", ["", "value"], rows, notes)


def seeds_table(dist: dict) -> Table | None:
    """Per seed: student and baseline top-1 (test, and validation, which chose the shipped seed)."""
    seeds = dist.get("seeds") or []
    if len(seeds) < 2:
        return None
    rows = [[str(s["seed"]) + (" (shipped)" if s["seed"] == dist.get("shipped_seed") else ""),
             fmt_pct(s["student_top1"]), fmt_pct(s.get("baseline_top1")),
             fmt_pp(s["student_top1"] - s["baseline_top1"]) if s.get("baseline_top1") is not None else "–",
             fmt_pct(s["student_val_top1"]), fmt_pct(s.get("baseline_val_top1"))] for s in seeds]
    return Table("Seeds (test top-1; validation picks the shipped seed)",
                 ["seed", "student", "baseline", "gain", "student val", "baseline val"], rows)


def _knob(x) -> str:
    """A distillation knob as a person reads it (a searched one is a long float: 4 significant digits)."""
    return "–" if x is None else f"{x:.4g}" if isinstance(x, float) else str(x)


def _gain_text(gain: dict) -> str:
    text = f"{fmt_pp(gain['mean'])}"
    if gain.get("std") is not None:
        text += f" ± {100 * gain['std']:.2f} pp"
    if gain.get("ci_low") is not None:
        text += f", {100 * gain['confidence']:.0f}% interval [{fmt_pp(gain['ci_low'])}, {fmt_pp(gain['ci_high'])}]"
    return text


def tune_table(tune: dict) -> Table:
    """The distillation search (``results.json`` → ``distillation.tune``): best knobs against the recipe's own."""
    trials = tune.get("trials") or []
    states = [t["state"] for t in trials]
    best = tune.get("best") or {}
    knobs = ", ".join(f"{k}={best[k]:.3g}" if isinstance(best[k], float) else f"{k}={best[k]}" for k in best)
    rows = [["trials", f"{states.count('COMPLETE')} complete, {states.count('PRUNED')} pruned, "
                       f"{states.count('FAIL')} failed"],
            ["best knobs (used by distill)", knobs or "–"], ["best validation top-1", fmt_pct(tune.get("best_value"))],
            ["recipe's own knobs, validation top-1", fmt_pct(tune.get("default_value"))]]
    notes = [f"Objective: {tune.get('objective', '')}; selection on validation only, the distilled student is "
             f"evaluated on test once. Study {tune.get('study', '')} in {tune.get('storage', '')}. Every trial: "
             "tune.md, tune.png."]
    return Table("Distillation search (edgekd tune)", ["", "value"], rows, notes)


def student_choice_table(choice: dict) -> Table:
    """The hardware-aware student choice (``results.json`` → ``distillation.student_choice``)."""
    budget = choice.get("budget_ms")
    rows = [[c["name"] + (" ★" if c["name"] == choice.get("chosen") else ""), fmt_int(c["params"]),
             fmt_ms(c["latency_ms"]), "over" if c["over_budget"] else "within", fmt_pct(c.get("val_top1")),
             c["latency_source"]] for c in choice.get("candidates", [])]
    notes = [f"Decision: **{choice.get('decision', '')}**.",
             f"Latency: p50 at batch {choice.get('batch')}; budget "
             f"{f'{budget:g} ms' if budget is not None else 'none'}. Candidates over budget are dropped before "
             f"any training; the rest are ranked by validation top-1 after {choice.get('rank_epochs')} epoch(s) of "
             "distillation (ties: the faster)."]
    return Table("Student choice (latency vs accuracy)", ["candidate", "params", "p50 ms", "budget",
                                                          "val top-1 (ranking run)", "latency from"], rows, notes)


SEARCH_TABLES = {"student_choice": (student_choice_table, "students.png"), "tune": (tune_table, "tune.png")}


def export_table(export: dict) -> Table:
    rows = []
    for m in export.get("models", []):
        p, d = m["details"]["parity"], m["details"]
        rows.append([m["name"], d.get("exporter", "?"), f"{p['max_abs_diff']:.3g}", f"{p['tolerance']:g}",
                     fmt_pct(p["top1_agreement"]), str(p["samples"]), "✓" if p["passed"] else "✗"])
    notes = [f"opset {export.get('opset')}."]
    notes += [f"{m['name']}: the dynamo exporter failed ({m['details']['fallback_reason']}); the TorchScript "
              "exporter was used." for m in export.get("models", []) if m["details"].get("fallback_reason")]
    return Table("Export parity (ONNX vs PyTorch, test inputs at batch 1, 7 and all)",
                 ["artifact", "exporter", "max abs diff", "tolerance", "top-1 agreement", "samples", "passed"],
                 rows, notes)


def quantize_table(q: dict) -> Table:
    rows = [[m["name"], m["precision"], m["variant"], fmt_pct(m["details"].get("val_top1"))]
            for m in q.get("models", [])]
    failed = [(mode, a["error"]) for mode, a in (q.get("attempts") or {}).items() if isinstance(a, dict)
              and a.get("error")]
    notes = [f"{mode}: failed — {err}" for mode, err in failed]
    static = (q.get("attempts") or {}).get("static") or {}
    if static.get("steps"):
        notes.append(f"Static INT8 (accuracy-aware): {len(static['steps'])} step(s), decision **{static['decision']}**, "
                     f"{len(static['steps'][-1].get('excluded') or [])} node(s) kept in float.")
    notes += qat_notes((q.get("attempts") or {}).get("qat") or {})
    return Table("Quantization candidates (validation top-1)", ["artifact", "precision", "variant", "val top-1"],
                 rows, notes)


def qat_notes(qat: dict) -> list[str]:
    """One line on quantization-aware distillation: skipped (post-training was good enough) or what it gained."""
    if qat.get("decision") == "skipped":
        return [f"QAT-KD skipped: the post-training start point ({fmt_pct(qat.get('start_val_top1'))}) is within "
                f"tolerance of FP32 ({fmt_pct(qat.get('float_val_top1'))})."]
    if qat.get("decision") == "qat":
        return [f"QAT-KD: validation top-1 {fmt_pct(qat.get('start_val_top1'))} post-training → "
                f"{fmt_pct(qat.get('val_top1'))} after {qat.get('epochs')} epoch(s) (FP32 "
                f"{fmt_pct(qat.get('float_val_top1'))}); explicit Q/DQ, symmetric, {qat.get('exporter')} exporter."]
    return []


def bundle_table(choice: BundleChoice) -> Table:
    rows = [[name, "✓" if name == choice.chosen else "", reason] for name, reason in choice.reasons.items()]
    notes = [f"Decision: **{choice.decision}**.", f"Rule: {choice.rule}."]
    return Table("Bundle", ["artifact", "chosen", "why"], rows, notes)


def device_lines(device) -> list[str]:
    from edgekd.deploy.typed import to_json

    keep = {k: v for k, v in to_json(device).items() if v not in (None, "", [], {})}
    return [f"- **{k}**: {md_escape(_flat(v))}" for k, v in keep.items()]


def _flat(v) -> str:
    if isinstance(v, dict):
        return "; ".join(f"{k}={_flat(x)}" for k, x in v.items() if x is not None)
    if isinstance(v, list | tuple):
        return ", ".join(map(str, v))
    return str(v)


# ---------------------------------------------------------------------------------------------- run report
def write_run_report(doc: ResultsDocument, out_dir: Path) -> dict[str, Path]:
    """Write ``out_dir/report.md`` and ``out_dir/pareto.png`` for one run; returns their paths."""
    out_dir = Path(out_dir)
    rows = list(doc.artifacts)
    chosen = doc.bundle.chosen if doc.bundle else None
    paths = {}
    plot = _try_plot("plot_pareto", _points(rows), out_dir / "pareto.png", title="Latency vs accuracy (this run)")
    parts = ["# edgekd run report", ""]
    if doc.recipe and doc.recipe.get("name"):
        parts += [f"Recipe: {md_escape(doc.recipe['name'])} — {md_escape(doc.device.label)}", ""]
    parts.append(artifact_table(rows, "Artifacts", chosen=chosen).markdown())
    if plot:
        paths["pareto"] = plot
        parts += ["![latency vs accuracy](pareto.png)", ""]
    if doc.distillation:
        parts.append(distillation_table(doc.distillation).markdown())
        per_seed = seeds_table(doc.distillation)
        if per_seed:
            parts.append(per_seed.markdown())
        parts += _search_parts(doc.distillation, out_dir)
    if doc.export:
        parts.append(export_table(doc.export).markdown())
    if doc.quantize:
        parts.append(quantize_table(doc.quantize).markdown())
    if doc.bundle:
        parts.append(bundle_table(doc.bundle).markdown())
    parts += ["## Device", ""] + device_lines(doc.device) + [""]
    paths["report"] = write_text(out_dir / "report.md", "\n".join(parts))
    return paths


def _search_parts(dist: dict, out_dir: Path) -> list[str]:
    """The student choice and the search, when those stages ran (with their plots)."""
    parts = []
    for key, (builder, plot) in SEARCH_TABLES.items():
        if dist.get(key):
            parts.append(builder(dist[key]).markdown())
            if (out_dir / plot).is_file():
                parts += [f"![{key.replace('_', ' ')}]({plot})", ""]
    return parts


def _points(rows: list[ResultRow], series: str | None = None):
    from edgekd.benchmarks.plots import Point

    return [Point(r.name, series or "", r.batch, r.p50, r.top1) for r in rows if r.p50 is not None]


def _try_plot(name: str, points, path: Path, **kwargs) -> Path | None:
    """Draw a plot when there is something to draw (never an empty plot); ``None`` without matplotlib."""
    from edgekd.benchmarks import plots

    if not points:
        return None
    try:
        return getattr(plots, name)(points, path, **kwargs)
    except DependencyError as exc:
        log.warning("skipping %s: %s", path.name, exc.message)
        return None


# ---------------------------------------------------------------------------------------------- merge
@dataclass(frozen=True)
class Source:
    """One merged results file: a short label, its document, and the settings that tell it apart."""

    label: str
    path: Path
    doc: ResultsDocument


def _labels(paths: list[Path]) -> list[str]:
    """Short unique labels: the file name, or the folder name for a run's ``results.json``."""
    out = []
    for p in paths:
        label = p.parent.name if p.name == "results.json" else p.stem
        out.append(label if label not in out else f"{label}-{len(out) + 1}")
    return out


def row_settings(row: ResultRow) -> dict[str, str]:
    return {"runtime": row.runtime, "threads": str(row.threads) if row.threads else "default",
            "providers": ", ".join(row.providers) or "–", "batch": str(row.batch)}


def settings_table(sources: list[Source]) -> Table:
    """The settings that differ between sources (device, runtime, threads, providers, bench settings)."""
    per = {}
    for s in sources:
        rows = list(s.doc.artifacts)
        values = {"device": s.doc.device.label, **{k: " / ".join(sorted({row_settings(r)[k] for r in rows}))
                                                 for k in ("runtime", "threads", "providers", "batch")}}
        for k, v in (s.doc.settings or {}).items():
            if _flat(v) != values.get(k):  # (the bench --threads setting is the threads column already)
                values[f"bench {k}" if k in values else k] = _flat(v)
        per[s.label] = values
    keys = list(dict.fromkeys(k for v in per.values() for k in v))
    differing = [k for k in keys if len({per[s][k] if k in per[s] else "–" for s in per}) > 1]
    rows = [[k, *(per[s].get(k, "–") for s in per)] for k in differing]
    notes = [] if differing else ["The sources were measured with the same settings."]
    return Table("What differs between the sources", ["setting", *per], rows, notes)


def recommendations(sources: list[Source]) -> Table:
    """Per device (and source): what to ship by the bundle rule, and why."""
    from edgekd.stages.report import choose_bundle

    rows = []
    for s in sources:
        tolerance = s.doc.bundle.tolerance if s.doc.bundle and s.doc.bundle.tolerance is not None else 0.01
        accuracy = "val_top1" if any(r.val_top1 is not None for r in s.doc.artifacts) else "top1"
        choice = choose_bundle(list(s.doc.artifacts), tolerance, accuracy=accuracy)
        rows.append([s.doc.device.label, s.label, choice.chosen or "–", choice.decision])
    return Table("What to ship on each device", ["device", "source", "ship", "why"], rows,
                 ["The bundle rule: the fastest student ONNX artifact whose accuracy is within the tolerance of the "
                  "FP32 export's, faster only beyond the measured noise; ties go to the more accurate, then the "
                  "smaller. Accuracy: validation top-1 for runs, top-1 on --data for bench files."])


PLOT_TITLES = {"pareto": "Latency vs accuracy", "devices": "Latency across devices (smallest batch)",
               "batches": "Latency by batch size"}
REPORT_FILES = ("report.md", "report.html", "pareto.png", "devices.png", "batches.png")


def check_report_folder(out_dir: Path) -> None:
    """``--out`` must be new, empty, or a report folder edgekd wrote (its files are replaced, nothing else)."""
    from edgekd.deploy.errors import UsageError
    from edgekd.deploy.fileio import made_by_edgekd

    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir} is a file, expected a folder", hint="choose another --out folder")
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    ours = (out_dir / "report.md").is_file() and made_by_edgekd(out_dir / "report.md")
    foreign = [n for n in REPORT_FILES if (out_dir / n).exists() and not ours]
    if not ours or foreign:
        raise UsageError(f"--out {out_dir} already holds files and is not an edgekd report folder; refusing to "
                         "write report files there", hint="choose a new or empty folder")


def merge_reports(result_paths: list[Path], out_dir: Path) -> dict[str, Path]:
    """Merge results files from several runs/devices into ``report.md``, ``report.html`` and plots.

    Returns:
        ``{"report", "html"}`` plus ``pareto``/``devices``/``batches`` for the plots that had data.
    """
    out_dir = Path(out_dir)
    check_report_folder(out_dir)
    paths = [Path(p) for p in result_paths]
    sources = [Source(label, p, load_results(p)) for label, p in zip(_labels(paths), paths, strict=True)]
    tables = [recommendations(sources), settings_table(sources)]
    tables += [artifact_table(list(s.doc.artifacts), f"{s.label} — {s.doc.device.label}",
                              chosen=s.doc.bundle.chosen if s.doc.bundle else None) for s in sources]
    points = [p for s in sources for p in _points(list(s.doc.artifacts), series=s.label)]
    plots = {"pareto": _try_plot("plot_pareto", [p for p in points if p.top1 is not None], out_dir / "pareto.png"),
             "devices": _try_plot("plot_devices", points, out_dir / "devices.png")}
    if any(len({p.batch for p in points if (p.name, p.series) == (q.name, q.series)}) > 1 for q in points):
        plots["batches"] = _try_plot("plot_batch_latency", points, out_dir / "batches.png")
    plots = {k: v for k, v in plots.items() if v}
    out = {"report": write_text(out_dir / "report.md", _merged_markdown(sources, tables, plots)),
           "html": write_text(out_dir / "report.html", _merged_html(sources, tables, plots))}
    return {**out, **plots}


def _merged_markdown(sources, tables: list[Table], plots: dict[str, Path]) -> str:
    parts = ["# edgekd benchmark report", "", f"Merged from {len(sources)} results file(s).", ""]
    parts += [t.markdown() for t in tables]
    parts += [f"![{PLOT_TITLES.get(name, name)}]({path.name})\n" for name, path in plots.items()]
    for s in sources:
        parts += [f"## Device of {md_escape(s.label)}", ""] + device_lines(s.doc.device) + [""]
    return "\n".join(parts)


def _merged_html(sources, tables: list[Table], plots: dict[str, Path]) -> str:
    body = [f"<h1>edgekd benchmark report</h1><p>Merged from {len(sources)} results file(s).</p>"]
    body += [t.html() for t in tables]
    for name, path in plots.items():
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        title = PLOT_TITLES.get(name, name)
        body.append(f'<h2>{html.escape(title)}</h2><img alt="{html.escape(title)}" src="data:image/png;base64,{data}">')
    for s in sources:
        items = "".join(f"<li><strong>{html.escape(k)}</strong>: {html.escape(_flat(v))}</li>"
                        for k, v in _device_items(s.doc.device))
        body.append(f"<h2>Device of {html.escape(s.label)}</h2><ul>{items}</ul>")
    style = ("body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;"
             "margin-bottom:1em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
             "td:first-child,th:first-child,td.t{text-align:left}td:first-child{white-space:nowrap}img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>edgekd report</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")


def _device_items(device):
    from edgekd.deploy.typed import to_json

    return [(k, v) for k, v in to_json(device).items() if v not in (None, "", [], {})]
