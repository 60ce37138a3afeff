"""What the user sees: stage lines, training progress bars and the summary table (rich)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from edgekd import distributed
from edgekd.pipeline import UI


class _BarReporter:
    """Trainer callbacks: one bar per training on a terminal (loss and accuracy in its description); one line
    per epoch when the output is a file or a pipe (a CI log, `nohup`), so progress is never invisible."""

    def __init__(self, console: Console, quiet: bool):
        self.console, self.quiet = console, quiet
        self.progress: Progress | None = None
        self.task = None
        self.name = ""
        self.epochs = 0
        self.started = 0.0

    def fit_start(self, name: str, epochs: int, steps_per_epoch: int) -> None:
        import time

        self.name, self.epochs, self.started = name, epochs, time.perf_counter()
        if self.quiet or not self.console.is_terminal:
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
        import time

        stats = f"epoch {epoch}/{self.epochs} loss {metrics['train_loss']:.3f} val {metrics['val_top1']:.1%}"
        if self.progress:
            self.progress.update(self.task, stats=stats)
        elif not self.quiet:
            self.console.print(f"{self.name:>9} {stats} ({time.perf_counter() - self.started:.1f} s)", markup=False)

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

    def progress(self, name: str, total: int):
        return _Progress(self.console, name, total, self.quiet)


class _Progress:
    """A bar for a long loop outside training (decoding data, teacher outputs, the search's trials); one line
    when the output is not a terminal."""

    def __init__(self, console: Console, name: str, total: int, quiet: bool):
        self.bar = None
        if quiet:
            return
        if console.is_terminal:
            self.bar = Progress(TextColumn(f"  {name}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                console=console, transient=True)
            self.bar.start()
            self.task = self.bar.add_task(name, total=total)
        else:
            console.print(f"  {name}: 0/{total} …", markup=False)

    def advance(self, n: int = 1) -> None:
        if self.bar:
            self.bar.update(self.task, advance=n)

    def close(self) -> None:
        if self.bar:
            self.bar.stop()
            self.bar = None


def summary_table(doc) -> Table:
    """The run's artifact table for the terminal: the same table (and comparison) as report.md."""
    from edgekd.report import TERMINAL, artifact_table

    chosen = doc.bundle.chosen if doc.bundle else None
    return artifact_table(list(doc.artifacts), "edgekd results (test split; batch-1 latency)", TERMINAL,
                          chosen=chosen).rich()
