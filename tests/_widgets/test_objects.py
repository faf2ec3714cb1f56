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


def test_writing_an_object_fills_only_free_pixels_of_its_box_wherever_it_lies():
    """A volume's object, one touching the volume's far corner, and a slice's object: each
    written where it is free (another object's pixels stay that object's), at the right
    place, as the next free label, in one undo step."""
    labels = np.zeros((5, 16, 18), np.int32)
    labels[2:5, 10:16, 12:18] = 1  # an object in the far corner
    objects = _objects(labels)
    output = objects.viewer.layers[OUTPUT]
    mask = np.zeros(labels.shape, bool)
    mask[1:5, 8:16, 9:18] = True  # reaches the last row, column and slice, over object 1
    assert objects.write(mask) == (2, int((mask & (labels == 0)).sum()))
    expected = labels.copy()
    expected[mask & (labels == 0)] = 2
    assert np.array_equal(output.data, expected)

    flat = np.zeros(labels.shape[1:], bool)
    flat[0:3, 1:4] = True
    assert objects.write(flat, (4,)) == (3, 9)
    expected[4][flat] = 3
    assert np.array_equal(output.data, expected)
    assert objects.write(np.zeros(labels.shape[1:], bool), (0,))[1] == 0
    output.undo()
    output.undo()
    assert np.array_equal(output.data, labels)


def test_object_features_keep_the_users_text_columns():
    from napari_active_sam._widgets.layers import set_object_features

    viewer = ViewerModel()
    labels = np.zeros((20, 20), np.int32)
    labels[2:6, 2:6], labels[10:14, 10:14] = 1, 2
    layer = viewer.add_labels(labels, name=OUTPUT)
    layer.features = {"index": [0, 1, 2], "tissue": [None, "bg", "tumour"],
                      "grade": [np.nan, 2.0, np.nan]}  # fmt: skip
    set_object_features(viewer, {"predicted_dice": {1: 0.9, 2: 0.4}})
    table = layer.features.set_index("index")
    assert list(table.loc[[1, 2], "tissue"]) == ["bg", "tumour"]
    assert table.loc[1, "grade"] == 2.0 and np.isnan(table.loc[2, "grade"])
    assert list(table.loc[[1, 2], "predicted_dice"]) == [0.9, 0.4]
