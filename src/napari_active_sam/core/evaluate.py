"""Interactive segmentation episodes: simulated clicks against ground truth."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .embeddings import Embedding
from .metrics import dice, iou
from .predictor import Predictor
from .simulate import ritm_next_click
from .types import Click, Prediction, PromptSet


@dataclass
class EpisodeResult:
    """One object annotated click by click.

    Attributes
    ----------
    clicks : list of tuple
        ``(row, col, positive)`` per click, click 1 first.
    ious, dices : list of float
        Scores of the shown mask after each click.
    first : Prediction
        SAM's answer to the first click (all heads), for ambiguity and quality studies.
    """

    clicks: list[tuple[int, int, bool]] = field(default_factory=list)
    ious: list[float] = field(default_factory=list)
    dices: list[float] = field(default_factory=list)
    first: Prediction | None = None


def shown_head(prediction: Prediction, click_number: int) -> int:
    """The head a user sees: SAM's top-rated multimask head for a lone first click, the
    single-mask head once there are several prompts (SAM's own recommendation)."""
    return prediction.best_multimask_head if click_number == 1 else 0


def run_episode(
    predictor: Predictor,
    embedding: Embedding,
    gt: np.ndarray,
    max_clicks: int = 20,
) -> EpisodeResult:
    """Annotate ``gt`` with the RITM clicker, feeding back the previous logits.

    Parameters
    ----------
    predictor : Predictor
    embedding : Embedding
        Of the image ``gt`` belongs to.
    gt : np.ndarray
        Boolean ``(H, W)`` object mask.
    max_clicks : int
        Clicks per episode; once the mask is perfect the last score is repeated.
    """
    gt = np.asarray(gt, bool)
    result = EpisodeResult()
    shown = np.zeros_like(gt)
    clicked = np.zeros_like(gt)
    prompts = PromptSet()
    previous = None
    for number in range(1, max_clicks + 1):
        click = ritm_next_click(gt, shown, clicked)
        if click is None:
            result.ious.append(result.ious[-1])
            result.dices.append(result.dices[-1])
            continue
        row, col, positive = click
        clicked[row, col] = True
        prompts = prompts.with_click(Click(x=float(col), y=float(row), positive=positive))
        prediction = predictor.predict(embedding, prompts, previous)
        head = shown_head(prediction, number)
        shown = prediction.probabilities[head] > 0.5
        previous = prediction.low_res_logits[head]
        if number == 1:
            result.first = prediction
        result.clicks.append(click)
        result.ious.append(iou(gt, shown))
        result.dices.append(dice(gt, shown))
    return result
