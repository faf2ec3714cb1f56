"""Acquisition functions: where an answer would teach the model most. One registry.

Each function maps the model's current beliefs about every pixel to a score; the next
question goes to the highest-scoring pixel not already clicked. Inputs are probability maps
``p`` of shape ``(K, H, W)``: K posterior samples, or SAM's three multimask heads taken as a
uniform posterior over masks (the "Does SAM dream of EIG?" reading).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from ..engine.checkpoints import LoadedModel
from ..engine.device import to_device, to_host
from ..engine.predictor import Prediction, shown_head
from ..enums import Acquisition, Source
from ..errors import ActiveSamError
from ..prompts import PromptSet, Suggestion
from .bayes_head import DEFAULT_SAMPLES, BayesHead, head_inputs
from .suggest import suggestion_candidates, suggestions_from

_EPS = 1e-7


Maps = np.ndarray | torch.Tensor
"""Probability maps: numpy in, numpy out; torch in, torch out (float32 either way)."""


def _tensor(p: Maps) -> torch.Tensor:
    return p.float() if isinstance(p, torch.Tensor) else torch.from_numpy(np.asarray(p, np.float32))


def _like(result: torch.Tensor, template: Maps) -> Maps:
    if isinstance(template, torch.Tensor):
        return to_device(result, template.device)
    return result.numpy()


def _entropy(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(0, 1)
    q = 1 - p
    return -(torch.special.xlogy(p, p) + torch.special.xlogy(q, q))


def predictive_entropy(probabilities: Maps) -> Maps:
    """Entropy of the mean belief: ``H(mean_k p_k)``; ``(K, H, W)`` → ``(H, W)``."""
    return _like(_entropy(_tensor(probabilities).mean(dim=0)), probabilities)


def mutual_information(probabilities: Maps, logits: torch.Tensor | None = None) -> Maps:
    """``H(mean_k p_k) - mean_k H(p_k)``; ``(K, H, W)`` → ``(H, W)``.

    With K posterior samples this is BALD (Houlsby et al. 2011); with SAM's three
    multimask heads as a uniform posterior it is the closed-form expected information gain
    of asking for the label at each pixel (the binary-label case, where the nested Monte
    Carlo estimator collapses to this expression). Given the ``logits`` behind the
    probabilities, each map's entropy is taken as ``softplus(z) - z σ(z)``: the same value
    for one transcendental function per value instead of two.
    """
    maps = _tensor(probabilities)
    if logits is None:
        each = _entropy(maps).mean(dim=0)
    else:
        each = (F.softplus(logits) - logits * maps).mean(dim=0)
    gain = _entropy(maps.mean(dim=0)) - each
    return _like(gain.clamp(min=0), probabilities)


def nested_monte_carlo_eig(
    probabilities: np.ndarray,
    weights: np.ndarray | None = None,
    outer: int = 256,
    inner: int = 256,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """General nested Monte Carlo estimate of the expected information gain per pixel.

    EIG(d) = E_{θ~q, y~p(y|θ,d)} [ log p(y|θ,d) - log E_{θ'~q} p(y|θ',d) ], estimated with
    ``outer`` draws of (θ, y) and ``inner`` fresh draws of θ' for the marginal. It needs no
    closed form, so it also serves posteriors that are not a handful of atoms; for a discrete
    posterior it converges to :func:`mutual_information`.

    Parameters
    ----------
    probabilities : np.ndarray
        ``(K, ...)``: p(y = 1 | θ_k, d) for each atom θ_k of the posterior.
    weights : np.ndarray, optional
        ``(K,)`` posterior weights (uniform by default).
    outer, inner : int
        Monte Carlo sample counts N and M.
    """
    rng = rng or np.random.default_rng(0)
    probs = np.clip(np.asarray(probabilities, np.float64), _EPS, 1 - _EPS)
    k = probs.shape[0]
    weights = np.full(k, 1 / k) if weights is None else np.asarray(weights) / np.sum(weights)
    theta = rng.choice(k, size=outer, p=weights)
    p_theta = probs[theta]  # (N, ...)
    y = rng.random(p_theta.shape) < p_theta
    log_lik = np.where(y, np.log(p_theta), np.log1p(-p_theta))
    theta_inner = rng.choice(k, size=inner, p=weights)
    p_inner = probs[theta_inner].mean(axis=0)  # marginal p(y = 1 | d) from M draws
    log_marginal = np.where(y, np.log(p_inner), np.log1p(-p_inner))
    return np.mean(log_lik - log_marginal, axis=0).astype(np.float32)


def _random(probabilities: Maps, rng: np.random.Generator | None = None, logits=None) -> Maps:
    rng = rng or np.random.default_rng()
    scores = rng.random(tuple(probabilities.shape[1:]), dtype=np.float32)
    return _like(torch.from_numpy(scores), probabilities)


@dataclass(frozen=True)
class AcquisitionSpec:
    """A registered acquisition function and the probability maps it reads."""

    score: Callable[..., Maps]
    """``f(probabilities (K, H, W), rng=None, logits=None) -> scores (H, W)``, numpy or
    torch; ``logits`` (torch), when known, may spare work."""
    source: Source
    title: str
    corrections_first: bool = True
    """Rank suggestions by the score times the chance that the answer corrects the mask
    shown (see :func:`uncertainty`); the random baseline ranks by its scores alone."""


ACQUISITIONS: dict[Acquisition, AcquisitionSpec] = {
    Acquisition.BALD: AcquisitionSpec(
        lambda p, rng=None, logits=None: mutual_information(p, logits),
        Source.POSTERIOR,
        "BALD (Laplace samples)",
    ),
    Acquisition.EIG: AcquisitionSpec(
        lambda p, rng=None, logits=None: mutual_information(p, logits),
        Source.HEADS,
        "EIG (multimask heads)",
    ),
    Acquisition.ENTROPY: AcquisitionSpec(
        lambda p, rng=None, logits=None: predictive_entropy(p),
        Source.ANY,
        "Predictive entropy",
    ),
    Acquisition.RANDOM: AcquisitionSpec(_random, Source.ANY, "Random", corrections_first=False),
}
"""Acquisition name → spec. EIG and BALD share the formula; they differ in where the K maps
come from (SAM's heads or the head's posterior samples)."""


@dataclass(frozen=True, eq=False)
class Uncertainty:
    """Where the model is unsure after one click, and what it would ask next.

    Attributes
    ----------
    acquisition : Acquisition
    scores : np.ndarray
        float32 ``(H, W)`` acquisition map at the image's resolution.
    suggestions : tuple of Suggestion
        Best first; empty when the map is flat (nothing worth asking).
    probability : np.ndarray
        float32 ``(H, W)`` mean probability of the K maps the scores came from.
    samples : int
        K: posterior samples, or 3 for SAM's multimask heads.
    source : Source
        Where the K maps came from.
    """

    acquisition: Acquisition
    scores: np.ndarray = field(repr=False)
    suggestions: tuple[Suggestion, ...]
    probability: np.ndarray = field(repr=False)
    samples: int
    source: Source

    @property
    def top(self) -> Suggestion | None:
        return self.suggestions[0] if self.suggestions else None


def uncertainty(
    acquisition: str,
    prediction: Prediction,
    prompts: PromptSet,
    model: LoadedModel,
    head: BayesHead | None = None,
    samples: int = DEFAULT_SAMPLES,
    suggestions: int = 5,
    min_distance: float = 8.0,
    rng: np.random.Generator | None = None,
    shown: int | None = None,
) -> Uncertainty:
    """Acquisition map and ranked suggestions for the current answer on one slice.

    Everything is computed on acquisition cells
    (:data:`~napari_active_sam.core.engine.geometry.ACQUISITION_CELL`; SAM's own
    low-resolution grid at 1024 px, where the model's belief lives) and only the final maps
    are upscaled, so a map costs a fraction of a decoder pass. The posterior samples are
    the Bayesian head's refinements of SAM's three multimask heads, K spread evenly over
    them (see :meth:`BayesHead.sample_logits`); the mask the user sees stays SAM's.

    An answer decoded in a zoom window (:attr:`Prediction.zoomed`) is judged on that
    window's cells; its maps are placed on the slice (zero outside the window) and its
    suggestions given in the slice's pixels.

    The map shows the acquisition function itself. Suggestions are its peaks after weighting
    each cell by the chance that the answer contradicts the mask shown (the mean belief
    where the mask is empty, one minus it where the mask covers the cell): an answer that
    confirms the mask teaches the user's mask little, one that corrects it changes it.

    Parameters
    ----------
    acquisition : str
        A key of :data:`ACQUISITIONS`.
    prediction, prompts
        The answer and the prompts that produced it (in the slice's pixels).
    model : LoadedModel
    head : BayesHead, optional
        Required for BALD; used by entropy when given.
    samples : int
        K posterior samples.
    suggestions : int
        How many suggestions to return.
    min_distance : float
        Minimum distance between suggestions, in image pixels.
    rng : np.random.Generator, optional
        Seeds the posterior samples and the random acquisition.
    shown : int, optional
        The head whose mask the user sees (default: :func:`shown_head`'s choice); the
        suggestions are ranked by the chance that an answer corrects it. Its probability
        at the image's resolution comes to the host with the maps (one trip from a GPU)
        and is kept in ``prediction`` for :meth:`Prediction.mask`.

    Raises
    ------
    ActiveSamError
        BALD without a Bayesian head.
    ModelError
        A head fitted for another model.
    """
    name = Acquisition(acquisition)
    spec = ACQUISITIONS[name]
    rng = rng or np.random.default_rng()
    use_posterior = head is not None and spec.source != Source.HEADS
    if spec.source == Source.POSTERIOR and head is None:
        raise ActiveSamError(
            f"{spec.title} needs a Bayesian head for {model.name}: fit one with 'Learn from "
            "my annotations' or `napari-active-sam train-head`, or choose EIG."
        )
    cells = prediction.cells(model)
    row, col = prediction.origin
    prompts = prompts.translated(-row, -col)  # in the decoded window's pixels
    with torch.inference_mode():
        pooled = cells.pool(prediction.logits)  # every head, in SAM's order, on its device
        if use_posterior:
            head.check_model(model)
            generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
            inputs = head_inputs(pooled[1:], prompts, cells)
            logits = head.sample_logits(inputs, samples, generator)
            source = Source.POSTERIOR
        else:
            logits = pooled[1:]
            source = Source.HEADS
        maps = torch.sigmoid(logits)
        grid_scores = spec.score(maps, rng=rng, logits=logits)
        belief = maps.mean(dim=0)
        upscaled = cells.upscale(torch.stack([grid_scores, belief.clamp(0, 1)]))
        index = shown_head(prediction, prompts) if shown is None else shown
        ranking = grid_scores
        if spec.corrections_first:
            inside = pooled[index] > 0
            ranking = grid_scores * torch.where(inside, 1 - belief, belief)
        candidates = suggestion_candidates(
            ranking, belief, cells, prompts, suggestions, min_distance
        )
        # One trip to the host: both maps and the mask shown at the image's resolution,
        # and the peaks.
        upscaled, candidates, mask_map = to_host(
            prediction.place(upscaled), candidates, prediction.device_probabilities([index])
        )
        prediction.keep(index, mask_map[0])

    found = suggestions_from(candidates, cells, prompts, suggestions, min_distance)
    if prediction.zoomed:
        found = tuple(replace(s, x=s.x + col, y=s.y + row) for s in found)
    return Uncertainty(
        acquisition=name,
        scores=upscaled[0],
        suggestions=found,
        probability=upscaled[1],
        samples=int(maps.shape[0]),
        source=source,
    )
