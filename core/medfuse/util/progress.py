"""Rich progress bars on stderr: the one place their columns and console are set up."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

Progress = bool | Callable[[int, int, str], None]  # a bar on a terminal, or f(done, total, description)


def new_progress(*columns: Any, console: Any = None, transient: bool = True, **kwargs: Any) -> Any:
    """A ``rich.progress.Progress``: description, bar and ``n/total``, then ``columns`` (default: the
    time remaining), on ``console`` (default: stderr). Not started."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    *(columns or (TimeRemainingColumn(),)), console=console or Console(stderr=True),
                    transient=transient, **kwargs)


def _rate_columns() -> tuple[Any, ...]:
    """Images/s, elapsed time and ETA (for long runs that stay on screen)."""
    from rich.progress import ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            if not speed and task.elapsed:  # rich needs two updates for its estimate
                speed = (task.completed - task.fields.get("resumed", 0)) / task.elapsed
            return Text(f"{speed:.1f} img/s" if speed else "- img/s")

    return Rate(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()


def progress_bar(total: int, description: str, progress: Progress, *, completed: int = 0,
                 rate: bool = False) -> tuple[Callable[[int], None], Callable[[], None]]:
    """A started bar as ``(advance(n), close())``.

    ``progress``: ``True`` for a rich bar on stderr, ``False`` for nothing, or a callable
    ``f(done, total, description)`` called after every advance. ``completed``: work already done
    (a resumed run). ``rate``: a bar with images/s, elapsed time and ETA that stays when closed
    (a log that is not a terminal gets its last state); otherwise a transient bar, shown only on
    a terminal and for ``total > 0``.
    """
    if callable(progress):
        callback, done = progress, [completed]

        def report(n: int) -> None:
            done[0] += n
            callback(done[0], total, description)

        return report, (lambda: None)
    if not progress or (not rate and (total == 0 or not sys.stderr.isatty())):
        return (lambda n: None), (lambda: None)
    if rate:
        bar = new_progress(*_rate_columns(), transient=False, speed_estimate_period=60)
    else:
        bar = new_progress()
    bar.start()
    task = bar.add_task(description, total=total, completed=completed, resumed=completed)
    return (lambda n: bar.advance(task, n)), bar.stop
