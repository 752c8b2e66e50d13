"""Rich progress bars on stderr: the one place their columns and console are set up."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


def new_progress(*columns: Any, console: Any = None, transient: bool = True, **kwargs: Any) -> Any:
    """A ``rich.progress.Progress``: description, bar and ``n/total``, then ``columns`` (default: the
    time remaining), on ``console`` (default: stderr). Not started."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    *(columns or (TimeRemainingColumn(),)), console=console or Console(stderr=True),
                    transient=transient, **kwargs)


def progress_bar(total: int, description: str, enabled: bool) -> tuple[Callable[[int], None], Callable[[], None]]:
    """A started bar as ``(advance(n), close())``; no-ops when disabled, empty or stderr is not a terminal."""
    if not enabled or total == 0 or not sys.stderr.isatty():
        return (lambda n: None), (lambda: None)
    bar = new_progress()
    bar.start()
    task = bar.add_task(description, total=total)
    return (lambda n: bar.advance(task, n)), bar.stop
