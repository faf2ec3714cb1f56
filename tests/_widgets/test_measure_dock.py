"""Volumes with error bars in the dock: propagate an object, press Measure, read the volume
in the list and the labels layer's features, choose it to go there (real Qt events)."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtTest import QTest
from test_canvas_clicks import click  # tests/_widgets is on the path (no package)

from napari_active_sam._widgets.dock import ActiveSamWidget
from napari_active_sam._widgets.layers import OUTPUT, PROMPTS

WAIT = 60_000  # ms; the encoder runs on a 2-core CPU


def test_measure_gives_each_object_its_volume_and_interval(make_napari_viewer, qtbot,
                                                           sample_ct):  # fmt: skip
    volume, organs, spacing = sample_ct
    viewer = make_napari_viewer(show=True)
    viewer.add_image(volume[6:18], name="ct")  # at scale 1 the canvas click lands simply
    widget = ActiveSamWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.window.value = "soft_tissue"
    viewer.dims.current_step = (6, 0, 0)
    qtbot.waitUntil(lambda: widget.session is not None, timeout=WAIT)
    qtbot.waitUntil(lambda: widget.session.is_encoded((6,)), timeout=WAIT)
    assert widget.session.head is not None  # the demo model ships its head
    viewer.reset_view()
    qtbot.wait(50)
    spine = organs[6:18] == 7
    rows, cols = np.nonzero(spine[6])
    click(viewer, float(np.median(rows)), float(np.median(cols)))
    qtbot.waitUntil(lambda: len(viewer.layers[PROMPTS].data) == 1, timeout=5_000)
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
