"""Progress of long work: the record core generators yield, and draining them."""

from __future__ import annotations

from dataclasses import dataclass


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
