"""Shared scenes of the adaptation tests."""

from __future__ import annotations

import numpy as np
import pytest


def _discs(size: int, centres, radius: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Bright discs on a dark, noisy ``size`` × ``size`` slice: ``(image, labels)``."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:size, :size]
    image = rng.normal(0.15, 0.02, (size, size)).astype(np.float32)
    labels = np.zeros((size, size), np.int32)
    for label, (r, c) in enumerate(centres, 1):
        inside = (rows - r) ** 2 + (cols - c) ** 2 < radius**2
        image[inside], labels[inside] = 0.85, label
    return image, labels


@pytest.fixture(scope="session")
def discs():
    """Makes bright discs on a dark, noisy slice: ``discs(size, centres, radius, seed=0)``."""
    return _discs
