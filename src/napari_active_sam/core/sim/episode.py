"""THE interactive loop: prompts in, the mask a user sees out, corrective clicks, again.

An episode annotates one object: an opening prompt (a click inside it, or a box), then
rounds of corrections, each decoded with the logits of the mask shown before fed back as
SAM's mask prompt. The loop exists once, in two forms:

- :func:`interaction` is the loop as a coroutine. It yields each round's :class:`Turn`
  (the prompts to decode) and is sent the :class:`Step` the model answered, from which the
  corrector chooses the next clicks. Code that decodes many objects at once (training on a
  batch) drives several interactions in lockstep.
- :func:`episode` drives one interaction with a :class:`Predictor` on one slice's embedding
  and yields its steps: the benchmark, the Bayesian head's and the quality estimators'
  training examples and their evaluation all read episodes.

Clicks are ``(row, col, positive)`` in pixels of the slice, as the clickers give them.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch

from ..engine.predictor import Prediction, Predictor, shown_head
from ..engine.store import Embedding
from ..prompts import Click, PromptSet
from .clicker import ClickList, click_inside, error_click


@dataclass(frozen=True, eq=False)
class Turn:
    """What one round asks the model: decode these prompts.

    Attributes
    ----------
    iteration : int
        1 for the opening round.
    prompts : PromptSet
        Every prompt so far, the round's clicks last.
    added : tuple of (int, int, bool)
        The clicks this round added (the opening's clicks in round 1).
    clicked : np.ndarray
        Boolean ``(H, W)``, True where clicks are (read only: the loop owns it).
    """

    iteration: int
    prompts: PromptSet
    added: tuple[tuple[int, int, bool], ...]
    clicked: np.ndarray = field(repr=False)


@dataclass(frozen=True, eq=False)
class Step:
    """A round the model answered: the turn, SAM's answer and the mask the user sees.

    Attributes
    ----------
    turn : Turn
    prediction : Prediction or None
        SAM's answer (every head); None where a batched decoder answered (training).
    head : int or None
        The head whose mask is shown, chosen once per round.
    mask : np.ndarray or None
        Boolean ``(H, W)`` mask shown, when the decoder gives it directly; otherwise it is
        the ``head``'s mask of ``prediction``.
    """

    turn: Turn
    prediction: Prediction | None = None
    head: int | None = None
    mask: np.ndarray | None = field(default=None, repr=False)

    @property
    def iteration(self) -> int:
        return self.turn.iteration

    @property
    def prompts(self) -> PromptSet:
        return self.turn.prompts

    @property
    def clicked(self) -> np.ndarray:
        return self.turn.clicked

    @cached_property
    def shown(self) -> np.ndarray:
        """Boolean ``(H, W)`` mask the user sees after this round."""
        if self.mask is not None:
            return self.mask
        return self.prediction.mask(self.head)

    @property
    def feedback(self) -> torch.Tensor:
        """The shown head's low-resolution logits, fed back with the next round's prompts
        (on the decoding device)."""
        return self.prediction.logits[self.head]


Corrector = Callable[[Step], ClickList]
"""The next round's clicks after a step; an empty list ends the episode."""

HeadChoice = Callable[[Prediction, PromptSet], int]
"""Which head's mask a user sees for an answer (default :func:`shown_head`)."""


def interaction(
    shape: tuple[int, int],
    opening: PromptSet,
    correct: Corrector,
    rounds: int,
) -> Generator[Turn, Step, None]:
    """The interactive loop as a coroutine: yields turns, is sent the answered steps.

    The corrector is asked for the next clicks only when a step is sent back and another
    round is due, so an episode stopped early never draws a click it does not use.

    Parameters
    ----------
    shape : tuple of int
        ``(H, W)`` of the slice.
    opening : PromptSet
        The first round's prompts (a click inside the object, a box, or both).
    correct : Corrector
        Chooses each later round's clicks from the step before.
    rounds : int
        At most this many rounds (the opening counts as one).
    """
    clicked = np.zeros(shape, bool)
    added = tuple((int(round(c.y)), int(round(c.x)), c.positive) for c in opening.clicks)
    prompts = opening
    for iteration in range(1, rounds + 1):
        for row, col, _ in added:
            clicked[row, col] = True
        step = yield Turn(iteration, prompts, added, clicked)
        if iteration == rounds:
            return
        clicks = correct(step)
        if not clicks:
            return
        added = tuple((int(r), int(c), bool(p)) for r, c, p in clicks)
        for row, col, positive in added:
            prompts = prompts.with_click(Click(float(col), float(row), positive))


def episode(
    predictor: Predictor,
    embedding: Embedding,
    opening: PromptSet,
    correct: Corrector,
    rounds: int,
    choose_head: HeadChoice = shown_head,
) -> Generator[Step, None, None]:
    """Annotate one object on one slice: each round decoded, its shown head chosen once.

    Parameters
    ----------
    predictor : Predictor
    embedding : Embedding
        Of the slice.
    opening, correct, rounds
        See :func:`interaction`.
    choose_head : callable
        The head a user sees (default :func:`shown_head`; the EIG and entropy benchmarks
        keep the top-rated multimask head at every round).

    Yields
    ------
    Step
        One per round, in order.
    """
    loop = interaction(embedding.original_size, opening, correct, rounds)
    turn = next(loop)
    previous = None
    while True:
        prediction = predictor.predict(embedding, turn.prompts, previous)
        step = Step(turn, prediction, choose_head(prediction, turn.prompts))
        yield step
        previous = step.feedback
        try:
            turn = loop.send(step)
        except StopIteration:
            return


def clicks_to_prompts(clicks: Sequence[tuple[int, int, bool]]) -> PromptSet:
    """A prompt set of ``(row, col, positive)`` clicks."""
    return PromptSet(tuple(Click(float(c), float(r), bool(p)) for r, c, p in clicks))


def sam_recipe(gt: np.ndarray, rng: np.random.Generator) -> tuple[PromptSet, Corrector]:
    """SAM's interactive training recipe for one object: the opening click inside it
    (:func:`~.clicker.click_inside`) and corrections into the error of the mask shown
    (:func:`~.clicker.error_click`).

    Parameters
    ----------
    gt : np.ndarray
        Boolean ``(H, W)`` object mask, not empty.
    """
    row, col = click_inside(gt, rng)
    return clicks_to_prompts([(row, col, True)]), corrections(gt, rng)


def corrections(gt: np.ndarray, rng: np.random.Generator) -> Corrector:
    """SAM's corrective clicks: one per round into the error of the mask shown
    (:func:`~.clicker.error_click`)."""

    def correct(step: Step) -> ClickList:
        return [error_click(gt, step.shown, step.clicked, rng)]

    return correct
