"""The results document (schema_version 1) shared by ``edgekd run``, ``edgekd bench`` and ``edgekd report``.

The format is documented in ``docs/benchmarking.md``. A document is ``{"schema_version": 1, "kind",
"device": fingerprint, "artifacts": [row, ...], ...}``; ``edgekd run`` adds ``recipe``, ``distillation``,
``export`` and ``bundle``.

Example:
    >>> doc = results_document([{"name": "m", "providers": ["CPUExecutionProvider"]}], settings={})
    >>> doc["schema_version"], doc["kind"]
    (1, 'bench')
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from pathlib import Path

from edgekd.benchmarks.fingerprint import fingerprint

SCHEMA_VERSION = 1


def results_document(rows: list[dict], *, settings: dict, kind: str = "bench", device: dict | None = None,
                     **extra) -> dict:
    """Wrap artifact rows with the device fingerprint (providers taken from the rows) and the settings."""
    providers = sorted({p for r in rows for p in (r.get("providers") or [])})
    return {"schema_version": SCHEMA_VERSION, "kind": kind,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "device": device if device is not None else fingerprint(providers), "settings": settings,
            "artifacts": rows, **extra}


def update_results_md(path, section: str, markdown: str, after: str | None = None) -> None:
    """Replace (or append) one suite's section of ``benchmarks/RESULTS.md``, between HTML-comment markers.

    Other sections of the file are left as they are, so several suites (and engineers) share the file.
    A new section goes right after the section ``after`` when that one exists, else at the end.
    """
    from edgekd.deploy.fileio import write_text

    path = Path(path)
    start, end = f"<!-- {section}:start -->", f"<!-- {section}:end -->"
    text = path.read_text() if path.exists() else "# Benchmark results\n\n"
    block = f"{start}\n{markdown.strip()}\n{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    elif after and f"<!-- {after}:end -->" in text:
        head, rest = text.split(f"<!-- {after}:end -->", 1)
        text = f"{head}<!-- {after}:end -->\n\n{block}{rest}"
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    write_text(path, text)


HARNESS_INTRO = """## Harness

Suites of the benchmark harness (`benchmarks/suites/bench_*.py`), each a script you can run; every table names
the machine it ran on. Latencies are per call in ms (p50 unless said otherwise), measured after warm-up with
`perf_counter_ns`. See docs/benchmarking.md for what each number means."""


def publish(args, suite: str, title: str, body: str) -> None:
    """Print a suite's Markdown, or (unless ``--no-write``) write it into RESULTS.md and print that."""
    print(body if args.no_write else write_suite_section(args.results_md, suite, title, body))


def write_suite_section(path, suite: str, title: str, body: str) -> str:
    """Put one suite's table for *this machine* into RESULTS.md under ``## Harness``; return the Markdown.

    Each (suite, machine) pair owns one block, so running a suite on a second device adds a table
    instead of replacing the first one's.
    """
    from edgekd.benchmarks.fingerprint import device_label

    label = device_label(fingerprint())
    slug = "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-")
    md = f"### {title} — {label}\n\n{body.strip()}"
    if "<!-- harness:start -->" not in (Path(path).read_text() if Path(path).exists() else ""):
        update_results_md(path, "harness", HARNESS_INTRO)
    text = Path(path).read_text()
    ours = re.findall(r"<!-- (harness(?:/[^ ]*)?):end -->", text)
    update_results_md(path, f"harness/{suite}/{slug}", md, after=ours[-1] if ours else "harness")
    return md


def machine_line() -> str:
    """One line naming the machine, ISA and runtime versions, for a RESULTS.md section."""
    from edgekd.benchmarks.fingerprint import device_label

    fp = fingerprint()
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")
    load = f"; load average {os.getloadavg()[0]:.1f} at the end" if hasattr(os, "getloadavg") else ""
    return (f"Machine: {device_label(fp)}, ISA {', '.join(fp['isa']) or 'none detected'}, {fp['os']}, "
            f"Python {fp['python']}, onnxruntime {fp['onnxruntime']}, numpy {fp['numpy']}; measured {when}{load}.")
