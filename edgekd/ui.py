"""What the user sees: stage lines, training progress bars and the summary table (rich)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from edgekd import distributed
from edgekd.pipeline import UI


class _BarReporter:
    """Trainer callbacks drawing one bar per training (loss and accuracy live in the description)."""

    def __init__(self, console: Console, quiet: bool):
        self.console, self.quiet = console, quiet
        self.progress: Progress | None = None
        self.task = None
        self.name = ""

    def fit_start(self, name: str, epochs: int, steps_per_epoch: int) -> None:
        self.name = name
        if self.quiet:
            return
        self.progress = Progress(TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[stats]}"), TimeElapsedColumn(),
                                 console=self.console, transient=False)
        self.progress.start()
        self.task = self.progress.add_task(f"{name:8s}", total=epochs * steps_per_epoch, stats="")

    def step(self, loss: float, acc: float) -> None:
        if self.progress:
            self.progress.update(self.task, advance=1, stats=f"loss {loss:.3f} acc {acc:.1%}")

    def epoch_end(self, epoch: int, metrics: dict) -> None:
        if self.progress:
            self.progress.update(self.task, stats=f"epoch {epoch} loss {metrics['train_loss']:.3f} "
                                                  f"val {metrics['val_top1']:.1%}")

    def fit_end(self) -> None:
        if self.progress:
            self.progress.update(self.task, completed=self.progress.tasks[0].total)
            self.progress.stop()
            self.progress = None


class RichUI(UI):
    def __init__(self, quiet: bool = False):
        self.console = Console(stderr=True, highlight=False, soft_wrap=True)
        self.quiet = quiet or not distributed.is_main()

    def stage(self, name: str, text: str) -> None:
        if not self.quiet:
            self.console.print(f"[bold cyan]{name:>9}[/] {escape(text)}")

    def done(self, name: str, text: str) -> None:
        if not self.quiet:
            self.console.print(f"[bold green]{name:>9}[/] {escape(text)}")

    def reporter(self, name: str):
        return _BarReporter(self.console, self.quiet)


def summary_table(results: dict) -> Table:
    """One row per artifact: accuracy, latency, throughput, size, and the ratios against the teacher."""
    table = Table(title="edgekd results (test split; batch-1 latency)", title_justify="left")
    for col in ("artifact", "top-1", "Δ vs teacher", "p50 ms", "p99 ms", "samples/s", "size", "params",
                "speedup"):
        table.add_column(col, justify="left" if col == "artifact" else "right")
    chosen = (results.get("bundle") or {}).get("chosen")
    for r in results.get("artifacts", []):
        vs = r.get("vs_teacher", {})
        name = f"{r['name']} ★" if r["name"] == chosen else r["name"]
        table.add_row(name, f"{r['top1']:.2%}", f"{vs.get('top1_delta', 0):+.2%}",
                      f"{r['latency_ms']['p50']:.3f}", f"{r['latency_ms']['p99']:.3f}",
                      f"{r['throughput_sps']:,.0f}", _size(r["size_bytes"]), f"{r['params']:,}",
                      f"{vs.get('speedup', 1):.2f}×")
    return table


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
