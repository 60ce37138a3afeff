"""`edgekd report`: merge results files from several runs and devices into one report."""

from __future__ import annotations

HELP = "merge results.json / bench JSON files from several runs and devices into report.md + report.html"
DESCRIPTION = """Reads results files (schema_version 1: DIR/results.json from `edgekd run`, or the file
`edgekd bench --json` writes) and writes into --out: report.md and report.html (plots embedded) with a
table per device, teacher vs student speedup, accuracy delta and size ratio; pareto.png (latency vs
accuracy, Pareto front marked), devices.png (latency across devices) and, when rows have several batch
sizes, batches.png (latency per batch size). Plots need matplotlib (`pip install 'edgekd[plots]'`).

  edgekd report runs/digits/results.json jetson.json --out report/"""


def add_arguments(p) -> None:
    p.add_argument("results", nargs="+", metavar="RESULTS.json", help="results files to merge")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for report.md, report.html and the PNGs")


def main(args) -> int:
    from pathlib import Path

    from rich.console import Console
    from rich.markup import escape

    from edgekd.report import merge_reports

    paths = merge_reports([Path(p) for p in args.results], Path(args.out))
    console = Console(highlight=False, soft_wrap=True)  # a path is never broken across lines
    for kind, path in paths.items():
        console.print(f"[green]✓[/] {kind:8s} {escape(str(path))}")
    return 0
