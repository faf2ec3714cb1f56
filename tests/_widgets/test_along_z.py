"""Uncertainty along z: a click on the canvas, the propagate button, then the per-slice plot
and the least-sure slice, all with real Qt mouse events."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QPoint, Qt
from qtpy.QtTest import QTest
from test_canvas_clicks import click  # tests/_widgets is on the path (no package)

from napari_active_sam._widgets.dock import ActiveSamWidget
from napari_active_sam._widgets.layers import OUTPUT, PROMPTS

WAIT = 60_000  # ms; the encoder runs on a 2-core CPU


def _plot_point(panel, z: int) -> QPoint:
    """Where slice ``z``'s bar sits on the plot's canvas widget (Qt's top-left origin)."""
    panel.canvas.draw()
    ax = panel.axes
    low, high = ax.get_ylim()
    x, y = ax.transData.transform((z, (low + high) / 2))
    ratio = panel.canvas.device_pixel_ratio
    return QPoint(round(x / ratio), round(panel.canvas.height() - y / ratio))


def test_the_plot_shows_each_slice_and_takes_the_user_there(make_napari_viewer, qtbot):
    from napari_active_sam._sample_data import ct_volume

    (volume, _, _), (organs, _, _) = ct_volume()
    viewer = make_napari_viewer(show=True)
    viewer.add_image(volume[6:18], name="ct")
    widget = ActiveSamWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.window.value = "soft_tissue"
    viewer.dims.current_step = (6, 0, 0)
    qtbot.waitUntil(lambda: widget.session is not None, timeout=WAIT)
    qtbot.waitUntil(lambda: widget.session.is_encoded((6,)), timeout=WAIT)
    viewer.reset_view()
    qtbot.wait(50)
    spine = organs[6:18] == 7
    rows, cols = np.nonzero(spine[6])
    click(viewer, float(np.median(rows)), float(np.median(cols)))
    qtbot.waitUntil(lambda: len(viewer.layers[PROMPTS].data) == 1, timeout=5_000)

    panel = widget.along_z
    assert not panel.worst_button.enabled and not panel.canvas.isVisible()
    QTest.mouseClick(widget.propagate_button.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: viewer.layers[OUTPUT].data.any(), timeout=WAIT)
    qtbot.waitUntil(panel.canvas.isVisible, timeout=5_000)

    grown = np.flatnonzero(viewer.layers[OUTPUT].data.any(axis=(1, 2)))
    kept = [z for z, report in panel.slices.items() if report.kept]
    assert sorted(kept) == [z for z in grown if z != 6]  # every propagated slice is plotted
    assert panel.least_sure in kept
    assert f"least sure on slice {panel.least_sure}" in panel.summary.value

    QTest.mouseClick(panel.worst_button.native, Qt.MouseButton.LeftButton)
    assert viewer.dims.current_step[0] == panel.least_sure
    other = next(z for z in kept if z != panel.least_sure)
    QTest.mouseClick(panel.canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                     _plot_point(panel, other))  # fmt: skip
    assert viewer.dims.current_step[0] == other
