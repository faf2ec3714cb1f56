"""The suggestions on offer after an answer, and the hint line that asks about the first."""

from __future__ import annotations

from dataclasses import dataclass

from ..core.prompts import PromptSet, Suggestion


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
