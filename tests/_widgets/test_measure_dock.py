"""Volumes with error bars in the dock: propagate an object, press Measure, read the volume
in the list and the labels layer's features, choose it to go there (real Qt events)."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtTest import QTest

from napari_active_sam._widgets.layers import OUTPUT

WAIT = 60_000  # ms; the encoder runs on a 2-core CPU


def test_measure_gives_each_object_its_volume_and_interval(spine_clicked, qtbot, sample_ct):
    viewer, widget, _ = spine_clicked
    spacing = sample_ct[2]
    QTest.mouseClick(widget.propagate_button.native, Qt.MouseButton.LeftButton)
    output = viewer.layers[OUTPUT]
    qtbot.waitUntil(lambda: output.data.any(), timeout=WAIT)
    viewer.layers["ct"].scale = spacing  # the voxel size the measurement reads
    panel = widget.quality_panel

    QTest.mouseClick(panel.measure_button.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(panel.volumes.choices) == 1, timeout=WAIT)
    voxels = int((output.data == 1).sum())
    expected = voxels * float(np.prod(spacing))
    [entry] = panel.volumes.choices
    assert entry.startswith(f"object 1: {expected:.0f} mm³ (")
    features = output.features
    row = features[features["index"] == 1]
    assert np.isclose(float(row["volume_mm3"].iloc[0]), expected)
    low, high = float(row["volume_low_mm3"].iloc[0]), float(row["volume_high_mm3"].iloc[0])
    assert low <= expected <= high and high > low
    assert "measured 1 object(s) in mm³" in widget.status.value

    viewer.dims.current_step = (11, 0, 0)
    item = panel.volumes.native.item(0)
    where = panel.volumes.native.visualItemRect(item).center()
    QTest.mouseClick(panel.volumes.native.viewport(), Qt.MouseButton.LeftButton,
                     Qt.KeyboardModifier.NoModifier, where)  # fmt: skip
    first = int(np.flatnonzero(output.data.any(axis=(1, 2)))[0])
    assert viewer.dims.current_step[0] == first  # the object's first slice
