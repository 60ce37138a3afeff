"""Reports from results files: the run's ``report.md`` + ``pareto.png``, and ``edgekd report``'s merge.

The results format (schema_version 1) is documented in ``docs/benchmarking.md``. Tables are built once
as :class:`Table` objects and rendered to Markdown or HTML, so both reports say the same thing. Every
file is written atomically (:mod:`deploy.fileio`); plots are drawn by :mod:`benchmarks.plots`.

Example:
    >>> paths = write_run_report(results, Path("runs/digits"))  # doctest: +SKIP
    >>> paths["report"], paths["pareto"]  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import html
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from edgekd.benchmarks.fingerprint import device_label
from edgekd.benchmarks.results import SCHEMA_VERSION
from edgekd.deploy.errors import DependencyError, InputFileError
from edgekd.deploy.fileio import write_text

log = logging.getLogger(__name__)

ARTIFACT_HEADERS = ["artifact", "role", "format", "precision", "batch", "top-1", "p50 ms", "p90 ms", "p99 ms",
                    "throughput /s", "size", "params", "speedup", "size ratio", "acc delta"]


@dataclass
class Table:
    """A titled table rendered to Markdown or HTML."""

    title: str
    headers: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)

    def markdown(self, level: int = 2) -> str:
        lines = [f"{'#' * level} {self.title}", ""]
        if self.rows:
            lines += ["| " + " | ".join(self.headers) + " |", "|" + "---|" * len(self.headers)]
            lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in self.rows]
        for note in self.notes:
            lines += [""] if lines[-1] else []
            lines += [note, ""]
        lines += [""] if lines[-1] else []
        return "\n".join(lines)

    def html(self, level: int = 2) -> str:
        out = [f"<h{level}>{html.escape(self.title)}</h{level}>"]
        if self.rows:
            out.append("<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in self.headers)
                       + "</tr></thead><tbody>")
            out += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in self.rows]
            out.append("</tbody></table>")
        out += [f"<p>{html.escape(n)}</p>" for n in self.notes]
        return "\n".join(out)


# ---------------------------------------------------------------- formatting


def fmt_pct(x) -> str:
    return "–" if x is None else f"{100.0 * float(x):.2f}%"


def fmt_ms(x) -> str:
    return "–" if x is None else f"{float(x):.4g}"


def fmt_delta_pp(x) -> str:
    if x is None:
        return "–"
    pp = round(100.0 * float(x), 2)
    return f"{pp if pp else 0.0:+.2f} pp"  # float noise must not print as "-0.00"


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


# ---------------------------------------------------------------- comparisons


def _p50(row: dict) -> float | None:
    return (row.get("latency_ms") or {}).get("p50")


def find_reference(rows: list[dict], batch: int | None = None, threads: int | None = None) -> dict | None:
    """The teacher row to compare against: PyTorch FP32 first, then any FP32 teacher, at ``batch`` if any.

    Rows timed with the same thread count as ``threads`` are preferred when rows record ``threads``.

    Example:
        >>> rows = [{"name": "t", "role": "teacher", "format": "pytorch", "precision": "fp32", "batch": 1,
        ...          "latency_ms": {"p50": 2.0}}]
        >>> find_reference(rows, batch=1)["name"]
        't'
    """
    teachers = [r for r in rows if r.get("role") == "teacher" and _p50(r) is not None]
    same_batch = [r for r in teachers if batch is None or int(r.get("batch") or 1) == int(batch)]
    same_threads = [r for r in same_batch if r.get("threads") == threads]
    for pool in (same_threads, same_batch, teachers):
        for want in ({"format": "pytorch", "precision": "fp32"}, {"precision": "fp32"}, {}):
            hits = [r for r in pool if all(r.get(k, "fp32" if k == "precision" else None) == v
                                           for k, v in want.items())]
            if hits:
                return hits[0]
    return None


def compare(row: dict, ref: dict | None) -> dict:
    """Speedup (ref p50 / row p50), size ratio (row / ref) and accuracy delta (row - ref) vs ``ref``.

    Speedup is given only when both rows ran at the same batch size and thread setting.
    """
    out = {"speedup": None, "size_ratio": None, "acc_delta": None}
    if ref is None:
        return out
    same_setup = (int(row.get("batch") or 1) == int(ref.get("batch") or 1)
                  and row.get("threads") == ref.get("threads"))
    if _p50(row) and _p50(ref) and same_setup:
        out["speedup"] = float(_p50(ref)) / float(_p50(row))
    if row.get("size_bytes") and ref.get("size_bytes"):
        out["size_ratio"] = float(row["size_bytes"]) / float(ref["size_bytes"])
    if row.get("top1") is not None and ref.get("top1") is not None:
        out["acc_delta"] = float(row["top1"]) - float(ref["top1"])
    return out


def artifact_cells(row: dict, ref: dict | None) -> list[str]:
    """One table row: the :data:`ARTIFACT_HEADERS` cells for ``row`` compared with ``ref``."""
    lat = row.get("latency_ms") or {}
    cmp = compare(row, ref)
    p50 = fmt_ms(lat.get("p50")) + (" ⚠" if row.get("noisy") else "")
    if row.get("error"):
        p50 = f"failed: {row['error']}"
    tput = fmt_int(round(row["throughput_sps"])) if row.get("throughput_sps") else "–"
    if row.get("throughput_batch") and row.get("throughput_batch") != row.get("batch"):
        tput += f" (b{row['throughput_batch']})"
    return [str(row.get("name") or "?"), str(row.get("role") or "–"), str(row.get("format") or "–"),
            str(row.get("precision") or "–"), str(row.get("batch") or "–"), fmt_pct(row.get("top1")), p50,
            fmt_ms(lat.get("p90")), fmt_ms(lat.get("p99")), tput, fmt_size(row.get("size_bytes")),
            fmt_int(row.get("params")), fmt_ratio(cmp["speedup"]), fmt_ratio(cmp["size_ratio"]),
            fmt_delta_pp(cmp["acc_delta"])]


def artifact_table(rows: list[dict], title: str, extra: tuple[str, ...] = ()) -> Table:
    """Every row with its comparison to the reference teacher at the same batch size."""
    headers = list(extra) + ARTIFACT_HEADERS
    cells = [[str(r.get(k, "–")) for k in extra] + artifact_cells(
        r, find_reference(rows, r.get("batch"), r.get("threads")))
             for r in rows]
    notes = []
    ref = find_reference(rows)
    if ref is not None:
        notes.append(f"Speedup, size ratio and acc delta are against `{ref.get('name')}` "
                     f"({ref.get('format')} {ref.get('precision', 'fp32')}); speedup only at the same batch size "
                     "and thread count.")
    if any(r.get("noisy") for r in rows):
        notes.append("⚠ = too noisy to trust (high spread): pin clocks, close other programs, run longer.")
    return Table(title, headers, cells, notes)


# ---------------------------------------------------------------- run report sections


def distillation_table(dist: dict) -> Table:
    rows = [["temperature", str(dist.get("temperature", "–"))], ["alpha", str(dist.get("alpha", "–"))],
            ["teacher top-1", fmt_pct(dist.get("teacher_top1"))],
            ["student top-1 (distilled)", fmt_pct(dist.get("student_top1"))],
            ["baseline top-1 (same student, no teacher)", fmt_pct(dist.get("baseline_top1"))],
            ["gain from distillation", fmt_delta_pp(dist.get("gain"))]]
    return Table("Distillation", ["", "value"], rows)


def export_table(export: dict) -> Table:
    """Parity of each export with PyTorch; ``export`` is flat or holds one ParityReport dict per artifact."""
    nested = {k: v for k, v in export.items() if isinstance(v, dict)}
    items = nested or {"student": export}
    rows = [[name, _num(e.get("max_abs_diff")), _num(e.get("tolerance")), fmt_pct(e.get("top1_agreement")),
             str(e.get("samples", "–")), {True: "✓", False: "✗"}.get(e.get("passed"), "–")]
            for name, e in items.items()]
    notes = [f"opset {export['opset']}, exporter {export.get('exporter', '?')}."] if "opset" in export else []
    return Table("Export parity (ONNX vs PyTorch)", ["artifact", "max abs diff", "tolerance", "top-1 agreement",
                                                     "samples", "passed"], rows, notes)


def quantize_table(q: dict) -> Table:
    """Accuracy-aware INT8: every step, the nodes kept in float and the validation top-1 it reached."""
    rows = [[str(st.get("index")), ", ".join(st.get("newly_excluded") or []) or "–",
             str(len(st.get("excluded") or [])), fmt_pct(st.get("top1")), fmt_delta_pp(st.get("delta")),
             {True: "✓", False: "✗"}.get(st.get("passed"), "–"), str(st.get("error") or st.get("reason") or "")]
            for st in q.get("steps") or []]
    settings = (q.get("quantize") or {})
    notes = [f"Decision: **{q.get('decision')}** — validation top-1 {fmt_pct(q.get('final_top1'))} vs float "
             f"{fmt_pct(q.get('float_top1'))}, tolerance {fmt_pct(q.get('tolerance'))}."]
    if settings:
        notes.append(f"Static INT8 {settings.get('format', 'QDQ')}, calibration {settings.get('method')}, preset "
                     f"{settings.get('preset')}, {settings.get('calib_samples')} training images.")
    return Table("Quantization (accuracy-aware INT8, judged on validation)",
                 ["step", "newly kept in float", "in float", "val top-1", "Δ vs float", "passed", "note"],
                 rows, notes)


def bundle_table(bundle: dict) -> Table:
    chosen = bundle.get("chosen")
    rows = [[name, "✓" if name == chosen else "", str(reason)] for name, reason in
            (bundle.get("reasons") or {}).items()]
    notes = [f"Shipped in `bundle/`: **{chosen}**." if chosen else "No bundle was written."]
    if bundle.get("tolerance") is not None:
        notes.append(f"Accuracy tolerance vs the FP32 student: {fmt_pct(bundle['tolerance'])}.")
    return Table("Bundle", ["artifact", "chosen", "why"], rows, notes)


def device_lines(device: dict) -> list[str]:
    keep = {k: v for k, v in device.items() if v not in (None, "", [])}
    return [f"- **{k}**: {', '.join(map(str, v)) if isinstance(v, list) else _flat(v)}" for k, v in keep.items()]


def write_run_report(results: dict, out_dir: Path) -> dict[str, Path]:
    """Write ``out_dir/report.md`` and ``out_dir/pareto.png`` for one pipeline run.

    Args:
        results: a results.json document (schema_version 1); ``bundle`` = ``{"chosen", "reasons"}`` optional.
        out_dir: the run folder.

    Returns:
        ``{"report": report.md, "pareto": pareto.png}`` (``pareto`` absent when matplotlib is missing).
    """
    out_dir = Path(out_dir)
    rows = list(results.get("artifacts") or [])
    paths = {}
    plot = _try_plot("plot_pareto", rows, out_dir / "pareto.png", title="Latency vs accuracy (this run)")
    if plot:
        paths["pareto"] = plot
    parts = ["# edgekd run report", ""]
    if results.get("recipe", {}).get("name"):
        parts += [f"Recipe: `{results['recipe']['name']}`", ""]
    parts.append(artifact_table(rows, "Artifacts").markdown())
    if plot:
        parts += ["![latency vs accuracy](pareto.png)", ""]
    for key, builder in (("distillation", distillation_table), ("export", export_table),
                         ("quantize", quantize_table), ("bundle", bundle_table)):
        if results.get(key):
            parts.append(builder(results[key]).markdown())
    parts += ["## Device", ""] + device_lines(results.get("device") or {}) + [""]
    paths["report"] = write_text(out_dir / "report.md", "\n".join(parts))
    return {"report": paths["report"], **({"pareto": plot} if plot else {})}


# ---------------------------------------------------------------- merge (edgekd report)


def load_results(path: str | os.PathLike) -> dict:
    """Read and check a results file (schema_version 1, an ``artifacts`` list)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputFileError(f"results file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputFileError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("artifacts"), list):
        raise InputFileError(f"{path} is not an edgekd results file (no 'artifacts' list)",
                             hint="pass a results.json from `edgekd run` or a file from `edgekd bench --json`")
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise InputFileError(f"{path} has schema_version {doc.get('schema_version')!r}; this edgekd reads "
                             f"{SCHEMA_VERSION}", hint="re-create it with this edgekd version")
    return doc


def merged_rows(docs: list[tuple[str, dict]]) -> list[dict]:
    """Flatten every document's artifact rows, tagging each with ``device`` (label) and ``source``.

    Rows of one artifact timed at several thread counts get ``(Nt)`` appended to their name.
    """
    rows = []
    for source, doc in docs:
        label = device_label(doc.get("device") or {})
        rows += [{**r, "device": label, "source": source, "name": name}
                 for r, name in zip(doc["artifacts"], _thread_names(doc["artifacts"]), strict=True)]
    return rows


def _thread_names(artifacts: list[dict]) -> list[str]:
    seen: dict[tuple, set] = {}
    for r in artifacts:
        seen.setdefault((r.get("name"), r.get("batch")), set()).add(r.get("threads"))
    return [f"{r.get('name')} ({r['threads']}t)" if len(seen[(r.get("name"), r.get("batch"))]) > 1
            else r.get("name") for r in artifacts]


def summary_table(rows: list[dict]) -> Table:
    """Per device: the teacher reference against the fastest student row at the same batch."""
    out = []
    for device in dict.fromkeys(r["device"] for r in rows):
        mine = [r for r in rows if r["device"] == device]
        students = [r for r in mine if r.get("role") == "student" and _p50(r)]
        for batch in sorted({int(r.get("batch") or 1) for r in students}):
            best = min((r for r in students if int(r.get("batch") or 1) == batch), key=_p50)
            ref = find_reference(mine, batch, best.get("threads"))
            cmp = compare(best, ref)
            out.append([device, str(batch), ref.get("name", "?") if ref else "–", best.get("name", "?"),
                        fmt_ratio(cmp["speedup"]), fmt_delta_pp(cmp["acc_delta"]), fmt_ratio(cmp["size_ratio"])])
    return Table("Teacher vs student", ["device", "batch", "teacher", "fastest student", "speedup",
                                        "acc delta", "size ratio"], out)


def merge_reports(result_paths: list[Path], out_dir: Path) -> dict[str, Path]:
    """Merge results files from several runs/devices into ``report.md``, ``report.html`` and plots.

    Returns:
        ``{"report", "html", "pareto", "batches", "devices"}`` → paths (plots absent without matplotlib).
    """
    out_dir = Path(out_dir)
    docs = [(Path(p).name if Path(p).name != "results.json" else str(p), load_results(p)) for p in result_paths]
    rows = merged_rows(docs)
    tables = [summary_table(rows)]
    tables += [artifact_table([r for r in rows if r["device"] == d], f"Device: {d}", extra=("source",))
               for d in dict.fromkeys(r["device"] for r in rows)]
    plots = {"pareto": _try_plot("plot_pareto", rows, out_dir / "pareto.png"),
             "devices": _try_plot("plot_devices", rows, out_dir / "devices.png")}
    if any(len({r.get("batch") for r in rows if r.get("name") == n and r["device"] == d}) > 1
           for n, d in {(r.get("name"), r["device"]) for r in rows}):
        plots["batches"] = _try_plot("plot_batch_latency", rows, out_dir / "batches.png")
    plots = {k: v for k, v in plots.items() if v}
    md = _merged_markdown(docs, tables, plots)
    paths = {"report": write_text(out_dir / "report.md", md),
             "html": write_text(out_dir / "report.html", _merged_html(docs, tables, plots))}
    return {**paths, **plots}


def _merged_markdown(docs, tables: list[Table], plots: dict[str, Path]) -> str:
    parts = ["# edgekd benchmark report", "", f"Merged from {len(docs)} results file(s).", ""]
    parts += [t.markdown() for t in tables]
    parts += [f"![{name}]({path.name})\n" for name, path in plots.items()]
    for source, doc in docs:
        parts += [f"## Device of {source}", ""] + device_lines(doc.get("device") or {}) + [""]
    return "\n".join(parts)


def _merged_html(docs, tables: list[Table], plots: dict[str, Path]) -> str:
    body = [f"<h1>edgekd benchmark report</h1><p>Merged from {len(docs)} results file(s).</p>"]
    body += [t.html() for t in tables]
    for name, path in plots.items():
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        body.append(f'<h2>{html.escape(name)}</h2><img alt="{html.escape(name)}" src="data:image/png;base64,{data}">')
    for source, doc in docs:
        items = "".join(f"<li>{html.escape(line[2:])}</li>" for line in device_lines(doc.get("device") or {}))
        body.append(f"<h2>Device of {html.escape(source)}</h2><ul>{items}</ul>")
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1em}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>edgekd report</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")


def _try_plot(name: str, rows: list[dict], path: Path, **kwargs) -> Path | None:
    from edgekd.benchmarks import plots

    try:
        return getattr(plots, name)(rows, path, **kwargs)
    except DependencyError as exc:
        log.warning("skipping %s: %s", path.name, exc)
        return None


def _num(x) -> str:
    return "–" if x is None else f"{float(x):.3g}"


def _flat(v) -> str:
    if isinstance(v, dict):
        return "; ".join(f"{k}={_flat(x)}" for k, x in v.items() if x is not None)
    return str(v)
