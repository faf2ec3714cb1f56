"""Uncertainty along z: a click on the canvas, the propagate button, then the per-slice plot
and the least-sure slice, all with real Qt mouse events."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QPoint, Qt
from qtpy.QtTest import QTest

from napari_active_sam._widgets.layers import OUTPUT

WAIT = 60_000  # ms; the encoder runs on a 2-core CPU


def _plot_point(panel, z: int) -> QPoint:
    """Where slice ``z``'s bar sits on the plot's canvas widget (Qt's top-left origin)."""
    panel.canvas.draw()
    ax = panel.axes
    low, high = ax.get_ylim()
    x, y = ax.transData.transform((z, (low + high) / 2))
    ratio = panel.canvas.device_pixel_ratio
    return QPoint(round(x / ratio), round(panel.canvas.height() - y / ratio))


def test_the_plot_shows_each_slice_and_takes_the_user_there(spine_clicked, qtbot):
    viewer, widget, _ = spine_clicked
    panel = widget.along_z
    assert not panel.worst_button.enabled and not panel.canvas.isVisible()
    QTest.mouseClick(widget.propagate_button.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: viewer.layers[OUTPUT].data.any(), timeout=WAIT)
    qtbot.waitUntil(panel.canvas.isVisible, timeout=5_000)

    grown = np.flatnonzero(viewer.layers[OUTPUT].data.any(axis=(1, 2)))
    kept = [z for z, report in panel.slices.items() if report.kept]
    assert sorted(kept) == [z for z in grown if z != 0]  # every propagated slice is plotted
    assert panel.least_sure in kept
    assert f"least sure on slice {panel.least_sure}" in panel.summary.value

    QTest.mouseClick(panel.worst_button.native, Qt.MouseButton.LeftButton)
    assert viewer.dims.current_step[0] == panel.least_sure
    other = next(z for z in kept if z != panel.least_sure)
    QTest.mouseClick(panel.canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                     _plot_point(panel, other))  # fmt: skip
    assert viewer.dims.current_step[0] == other
