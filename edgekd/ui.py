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


class _Bar:
    """A progress bar for loops outside training (the search's trials, the candidates' ranking runs)."""

    def __init__(self, console: Console, name: str, total: int, quiet: bool):
        self.progress = None if quiet else Progress(
            TextColumn(f"[bold cyan]{name:>9}[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, transient=True)
        if self.progress:
            self.progress.start()
            self.task = self.progress.add_task(name, total=total or None)

    def advance(self, n: int = 1) -> None:
        if self.progress:
            self.progress.advance(self.task, n)

    def close(self) -> None:
        if self.progress:
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

    def progress(self, name: str, total: int):
        return _Bar(self.console, name, total, self.quiet)


def summary_table(doc) -> Table:
    """The run's artifact table for the terminal: the same table (and comparison) as report.md."""
    from edgekd.report import TERMINAL, artifact_table

    chosen = doc.bundle.chosen if doc.bundle else None
    return artifact_table(list(doc.artifacts), "edgekd results (test split; batch-1 latency)", TERMINAL,
                          chosen=chosen).rich()
