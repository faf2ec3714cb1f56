"""Writing objects into the output labels layer: one undo step, other objects kept."""

from __future__ import annotations

import numpy as np
from napari.components import ViewerModel

from napari_active_sam._widgets.layers import OUTPUT
from napari_active_sam._widgets.objects import CommittedObjects


def _objects(labels: np.ndarray, overwrite: bool = False) -> CommittedObjects:
    viewer = ViewerModel()
    viewer.add_labels(labels.copy(), name=OUTPUT)
    objects = CommittedObjects(viewer, None, None, None, None)
    objects.overwrite = overwrite
    return objects


def test_replacing_an_object_moves_it_keeps_the_others_and_undoes_in_one_step():
    labels = np.zeros((4, 20, 20), np.int32)
    labels[1:3, 5:10, 5:10] = 1  # the object regrown
    labels[0:4, 12:16, 12:16] = 2  # a neighbour it grows into
    grown = np.zeros(labels.shape, bool)
    grown[0:4, 6:14, 6:14] = True  # moved, on more slices, and over object 2
    objects = _objects(labels)
    output = objects.viewer.layers[OUTPUT]
    assert objects.replace(1, grown) == 1
    expected = labels.copy()
    expected[expected == 1] = 0
    expected[grown & (expected == 0)] = 1
    assert np.array_equal(output.data, expected)  # object 2's pixels stayed object 2's
    output.undo()
    assert np.array_equal(output.data, labels)

    objects = _objects(labels, overwrite=True)
    objects.replace(1, grown)
    data = objects.viewer.layers[OUTPUT].data
    assert np.array_equal(data == 1, grown) and (data == 2).sum() < (labels == 2).sum()
