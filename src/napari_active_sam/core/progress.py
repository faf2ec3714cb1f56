"""Progress of long work: the record core generators yield, and draining them."""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

Result = TypeVar("Result")


@dataclass(frozen=True)
class Progress:
    """A step of long-running work, yielded by core generators.

    Attributes
    ----------
    done, total : int
        Units finished so far and units in all (``total`` 0 when unknown).
    message : str
        What is happening, for a status line.
    """

    done: int
    total: int
    message: str = ""

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0


def drain(
    steps: Generator[Progress, Any, Result], report: Callable[[Progress], Any] | None = None
) -> Result:
    """Run a generator of progress to its end and return what it returns.

    Parameters
    ----------
    steps : generator
        Yields :class:`Progress`, returns the result (the shape of every long job in core).
    report : callable, optional
        Called with each progress record (a progress bar, a log line).
    """
    while True:
        try:
            step = next(steps)
        except StopIteration as stop:
            return stop.value
        if report is not None:
            report(step)
