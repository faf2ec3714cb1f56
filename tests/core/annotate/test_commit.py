"""Which pixels a commit writes into the labels."""

from __future__ import annotations

import numpy as np
import pytest

from napari_active_sam.core.annotate.session import commit_pixels


def _written(labels, mask, **kwargs) -> np.ndarray:
    written = np.zeros(labels.shape, bool)
    written[commit_pixels(labels, mask, **kwargs)] = True
    return written


def test_a_commit_leaves_other_objects_alone_unless_it_overwrites_or_replaces_one():
    labels = np.zeros((4, 6), np.int32)
    labels[:, :2] = 1
    labels[:, 4:] = 2
    mask = np.ones((4, 6), bool)
    assert np.array_equal(_written(labels, mask), labels == 0)
    assert _written(labels, mask, overwrite=True).all()
    replaced = _written(labels, mask, replacing=1)  # the object a correction started from
    assert np.array_equal(replaced, labels != 2)
    with pytest.raises(ValueError, match="differ in shape"):
        commit_pixels(labels, mask[:2])
