"""Click strategies: where a user (or a strategy standing in for one) clicks next.

Every strategy goes through one registry, :data:`STRATEGIES`; the benchmark, the studies
and the tests all use it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from ..active.acquisition import Uncertainty
from ..engine.predictor import Prediction
from ..enums import Strategy, parse_option
from ..errors import ActiveSamError
from ..sim.clicker import ClickList, random_pixel, ritm_next_click


@dataclass
class ClickContext:
    """What a strategy may look at when choosing the next click(s).

    Attributes
    ----------
    gt : np.ndarray
        Boolean ``(H, W)`` ground truth; strategies that model a person may only read the
        label at the pixel they choose (the answer), the others may read it all.
    shown : np.ndarray
        Boolean ``(H, W)`` mask currently shown.
    clicked : np.ndarray
        Boolean ``(H, W)``, True where clicks already are.
    prediction : Prediction or None
        The model's last answer (all heads).
    rng : np.random.Generator
    dice_if_clicked : callable or None
        ``f((row, col, positive)) -> float``: Dice of the mask that would be shown after
        adding that click (the greedy oracle's look-ahead).
    uncertainty : callable or None
        ``f(acquisition name) -> Uncertainty`` for the current answer (maps and
        suggestions, :func:`~napari_active_sam.core.active.acquisition.uncertainty`).
    """

    gt: np.ndarray
    shown: np.ndarray
    clicked: np.ndarray
    prediction: Prediction | None
    rng: np.random.Generator
    dice_if_clicked: Callable[[tuple[int, int, bool]], float] | None = None
    uncertainty: Callable[[str], Uncertainty] | None = None


def _answered(ctx: ClickContext, row: int, col: int) -> tuple[int, int, bool]:
    return int(row), int(col), bool(ctx.gt[row, col])


def ritm_strategy(ctx: ClickContext) -> ClickList:
    click = ritm_next_click(ctx.gt, ctx.shown, ctx.clicked)
    return [] if click is None else [click]


def microsam_strategy(ctx: ClickContext) -> ClickList:
    """micro-sam's iterative protocol: one random positive from the false negatives and one
    random negative from the false positives."""
    clicks = []
    fn = random_pixel(ctx.gt & ~ctx.shown & ~ctx.clicked, ctx.rng)
    if fn is not None:
        clicks.append((*fn, True))
    fp = random_pixel(~ctx.gt & ctx.shown & ~ctx.clicked, ctx.rng)
    if fp is not None:
        clicks.append((*fp, False))
    return clicks


def random_strategy(ctx: ClickContext) -> ClickList:
    pixel = random_pixel(~ctx.clicked, ctx.rng)
    return [] if pixel is None else [_answered(ctx, *pixel)]


def _acquisition_strategy(name: str) -> Callable[[ClickContext], ClickList]:
    def choose(ctx: ClickContext) -> ClickList:
        for suggestion in ctx.uncertainty(name).suggestions:
            row, col = round(suggestion.y), round(suggestion.x)
            if not ctx.clicked[row, col]:
                return [_answered(ctx, row, col)]
        return []  # the model is certain everywhere: nothing to ask

    choose.__name__ = f"{name}_strategy"
    choose.__doc__ = f"Ask for the label at the best {name} suggestion not yet clicked."
    return choose


ORACLE_CANDIDATES = 8
"""Random error-region pixels the greedy oracle tries besides the RITM click."""


def oracle_strategy(ctx: ClickContext) -> ClickList:
    """Greedy oracle: of the RITM click and a few random error pixels, the click whose next
    shown mask has the highest Dice against the ground truth."""
    error = (ctx.gt ^ ctx.shown) & ~ctx.clicked
    candidates = []
    first = ritm_next_click(ctx.gt, ctx.shown, ctx.clicked)
    if first is not None:
        candidates.append(first)
    for _ in range(ORACLE_CANDIDATES):
        pixel = random_pixel(error, ctx.rng)
        if pixel is not None:
            candidates.append(_answered(ctx, *pixel))
    if not candidates:
        return []
    scores = [ctx.dice_if_clicked(c) for c in candidates]
    return [candidates[int(np.argmax(scores))]]


@dataclass(frozen=True)
class StrategySpec:
    """How a strategy plays an episode.

    Attributes
    ----------
    next_clicks : callable
        ``f(ClickContext) -> [(row, col, positive), ...]``; empty when it has nothing to ask.
    multimask_every_step : bool
        Keep SAM in multimask mode at every step (the acquisition strategies read the
        disagreement between heads); otherwise multimask for the first click only.
    random_first_click : bool
        Start from a random pixel inside the object instead of the RITM click.
    needs_head : bool
        Cannot play without the Bayesian head's posterior.
    reads_head : bool
        Reads the Bayesian head's posterior when there is one.
    """

    next_clicks: Callable[[ClickContext], ClickList]
    multimask_every_step: bool = False
    random_first_click: bool = False
    needs_head: bool = False
    reads_head: bool = False


STRATEGIES: dict[Strategy, StrategySpec] = {
    Strategy.RITM: StrategySpec(ritm_strategy),
    Strategy.MICROSAM: StrategySpec(microsam_strategy, random_first_click=True),
    Strategy.ORACLE: StrategySpec(oracle_strategy),
    Strategy.BALD: StrategySpec(
        _acquisition_strategy("bald"), needs_head=True, reads_head=True
    ),
    Strategy.EIG: StrategySpec(_acquisition_strategy("eig"), multimask_every_step=True),
    Strategy.ENTROPY: StrategySpec(
        _acquisition_strategy("entropy"), multimask_every_step=True, reads_head=True
    ),
    Strategy.RANDOM: StrategySpec(random_strategy),
}


def first_click(spec: StrategySpec, gt: np.ndarray, rng: np.random.Generator) -> ClickList:
    """The opening click of an episode: RITM's (object centre) or a random inside pixel."""
    if spec.random_first_click:
        pixel = random_pixel(gt, rng)
        return [] if pixel is None else [(*pixel, True)]
    click = ritm_next_click(gt, np.zeros_like(gt))
    return [] if click is None else [click]


def parse_strategy(strategy: str) -> Strategy:
    """The :class:`Strategy` named ``strategy``; a clear error for an unknown name."""
    return parse_option(Strategy, strategy, "strategy")


def reads_head(strategies: Iterable[str]) -> bool:
    """Whether any of ``strategies`` reads the Bayesian head (so one should be loaded)."""
    return any(STRATEGIES[parse_strategy(s)].reads_head for s in strategies)


def needing_head(strategies: Iterable[str]) -> list[str]:
    """Those of ``strategies`` that cannot play without a Bayesian head."""
    return [str(s) for s in map(parse_strategy, strategies) if STRATEGIES[s].needs_head]


def require_head(strategies: Iterable[str], has_head: bool, model_name: str) -> None:
    """Raise :class:`ActiveSamError` if any of ``strategies`` needs a Bayesian head and
    there is none."""
    wanted = needing_head(strategies)
    if wanted and not has_head:
        raise ActiveSamError(
            f"{', '.join(wanted)} needs a Bayesian head for {model_name}: fit one with "
            "`napari-active-sam train-head` (or 'Learn from my annotations' in napari) and "
            "pass it with --head, or choose another strategy."
        )
