"""Annotation files: round trip, atomic replacement, and folders that are not saves."""

from __future__ import annotations

import numpy as np
import pytest

from napari_active_sam.core.annotate.persistence import (
    SavedAnnotation,
    load_annotation,
    save_annotation,
)
from napari_active_sam.core.errors import ActiveSamError


def test_round_trip(tmp_path):
    labels = np.zeros((3, 8, 8), np.int32)
    labels[1, 2:4, 2:4] = 5
    saved = SavedAnnotation(labels, np.array([[1, 3.0, 2.5], [2, 1, 1]]),
                            np.array([True, False]), {"model": "demo"})  # fmt: skip
    save_annotation(tmp_path / "a", saved)
    loaded = load_annotation(tmp_path / "a")
    assert np.array_equal(loaded.labels, labels) and loaded.labels.dtype == np.int32
    assert np.array_equal(loaded.points, saved.points)
    assert loaded.positive.tolist() == [True, False] and loaded.settings == {"model": "demo"}
    # Saving again replaces the files and leaves no temporary file behind.
    save_annotation(tmp_path / "a", SavedAnnotation(labels * 0, np.empty((0, 3)), np.array([])))
    assert not load_annotation(tmp_path / "a").labels.any()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["annotation.json", "labels.npy"]


def test_bad_folders(tmp_path):
    with pytest.raises(ActiveSamError, match="holds no saved annotation"):
        load_annotation(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ActiveSamError, match="writable folder"):
        save_annotation(blocker / "a", SavedAnnotation(np.zeros(2), np.empty((0, 1)), np.array([])))
