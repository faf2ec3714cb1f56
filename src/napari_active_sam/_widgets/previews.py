"""What a slice's preview was decoded from, the suggestions on offer after an answer, and the
hint line that asks about the first."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.prompts import PromptSet, Suggestion


@dataclass(frozen=True, eq=False)
class Asked:
    """What a slice's preview is decoded from: the user's ``prompts`` there, the prompts
    ``asked`` of SAM (those of a correction while an object is corrected) and the mask
    they refine (``prior``; None if none)."""

    prompts: PromptSet
    asked: PromptSet
    prior: np.ndarray | None

    def same(self, other: Asked | None) -> bool:
        """Whether ``other`` decodes the same: equal prompts and equal masks."""
        if other is None or (self.prompts, self.asked) != (other.prompts, other.asked):
            return False
        if self.prior is None or other.prior is None:
            return self.prior is other.prior
        return np.array_equal(self.prior, other.prior)


@dataclass
class Offer:
    """Suggestions on screen: the slice and prompts they answer, and how many were skipped."""

    index: tuple[int, ...]
    prompts: PromptSet
    suggestions: tuple[Suggestion, ...]
    skipped: int = 0

    @property
    def remaining(self) -> tuple[Suggestion, ...]:
        return self.suggestions[self.skipped :]


def hint(suggestions: tuple[Suggestion, ...]) -> str:
    """The question of the first suggestion and the keys that answer it, for a line of its
    own ("" when nothing is on offer)."""
    if not suggestions:
        return ""
    top = suggestions[0]
    return f"{top.rank} · inside? A = yes, D = no, S = skip ({top.belief:.0%})"
