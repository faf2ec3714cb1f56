"""Acquisition functions: where an answer would teach the model most. One registry.

Each function maps the model's current beliefs about every pixel to a score; the next
question goes to the highest-scoring pixel not already clicked. Inputs are probability maps
``p`` of shape ``(K, H, W)``: K posterior samples, or SAM's three multimask heads taken as a
uniform posterior over masks (the "Does SAM dream of EIG?" reading).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

import numpy as np

_EPS = 1e-7


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """H(p) = -p log p - (1-p) log(1-p), in nats, elementwise (0 at p = 0 or 1)."""
    p = np.clip(np.asarray(p, np.float64), _EPS, 1 - _EPS)
    return -(p * np.log(p) + (1 - p) * np.log1p(-p))


def predictive_entropy(probabilities: np.ndarray) -> np.ndarray:
    """Entropy of the mean belief: ``H(mean_k p_k)``; ``(K, H, W)`` → ``(H, W)``."""
    return binary_entropy(np.mean(probabilities, axis=0)).astype(np.float32)


def mutual_information(probabilities: np.ndarray) -> np.ndarray:
    """``H(mean_k p_k) - mean_k H(p_k)``; ``(K, H, W)`` → ``(H, W)``.

    With K posterior samples this is BALD (Houlsby et al. 2011); with SAM's three
    multimask heads as a uniform posterior it is the closed-form expected information gain
    of asking for the label at each pixel (the binary-label case, where the nested Monte
    Carlo estimator collapses to this expression).
    """
    probabilities = np.asarray(probabilities)
    mean_entropy = binary_entropy(probabilities).mean(axis=0)
    return np.clip(binary_entropy(probabilities.mean(axis=0)) - mean_entropy, 0, None).astype(
        np.float32
    )


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


class Acquisition(StrEnum):
    """Registered acquisition functions."""

    EIG = "eig"
    """Expected information gain over SAM's multimask heads (closed form)."""
    ENTROPY = "entropy"
    """Predictive entropy of the mean belief."""
    BALD = "bald"
    """Mutual information over Laplace posterior samples of the Bayesian head."""
    RANDOM = "random"
    """Uniform scores: the baseline every other function must beat."""


def _random(probabilities: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    rng = rng or np.random.default_rng()
    return rng.random(np.shape(probabilities)[1:]).astype(np.float32)


ACQUISITIONS: dict[Acquisition, Callable[..., np.ndarray]] = {
    Acquisition.EIG: lambda p, rng=None: mutual_information(p),
    Acquisition.ENTROPY: lambda p, rng=None: predictive_entropy(p),
    Acquisition.BALD: lambda p, rng=None: mutual_information(p),
    Acquisition.RANDOM: _random,
}
"""Acquisition name → ``f(probabilities (K, H, W), rng=None) -> scores (H, W)``. EIG and
BALD share the formula; they differ in where the K maps come from (heads or samples)."""


def acquisition_map(
    name: str, probabilities: np.ndarray, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Scores ``(H, W)`` of acquisition ``name`` for probability maps ``(K, H, W)``."""
    return ACQUISITIONS[Acquisition(name)](probabilities, rng=rng)
