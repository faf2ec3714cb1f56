"""Clicks as a user makes them: real Qt mouse presses and releases on napari's canvas."""

from __future__ import annotations

import numpy as np
import pytest
from napari.utils.colormaps.standardize_color import transform_color
from qtpy.QtCore import QPoint, Qt
from qtpy.QtTest import QTest

from napari_active_sam._widgets.dock import ActiveSamWidget
from napari_active_sam._widgets.layers import (
    CLICK_BORDER,
    CLICK_PIXELS,
    INSIDE_COLOUR,
    LEFT_OUT_BORDER,
    LEFT_OUT_COLOUR,
    OUTSIDE_COLOUR,
    PREVIEW,
    PROMPTS,
    UNCERTAINTY,
)
from napari_active_sam.core.data.scenes import make_scene

WAIT = 60_000  # ms; the encoder runs on a 2-core CPU


def _camera(viewer):
    """The canvas camera (napari 0.9 moved it under ``viewer.scene``)."""
    return viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera


def canvas_point(viewer, row: float, col: float) -> QPoint:
    """Where data pixel (row, col) of a 2D layer at scale 1 sits on the canvas widget."""
    canvas = viewer.window._qt_viewer.canvas.native
    centre_row, centre_col = _camera(viewer).center[-2:]
    zoom = _camera(viewer).zoom
    x = (col - centre_col) * zoom + canvas.width() / 2
    y = (row - centre_row) * zoom + canvas.height() / 2
    return QPoint(round(x), round(y))


def click(viewer, row: float, col: float, button=Qt.MouseButton.LeftButton) -> None:
    """Press and release ``button`` over data pixel (row, col), as a hand would."""
    canvas = viewer.window._qt_viewer.canvas.native
    where = canvas_point(viewer, row, col)
    QTest.mouseMove(canvas, where)
    QTest.mousePress(canvas, button, Qt.KeyboardModifier.NoModifier, where)
    QTest.mouseRelease(canvas, button, Qt.KeyboardModifier.NoModifier, where)


@pytest.fixture
def scene():
    return make_scene("ultrasound", np.random.default_rng(8), 256)


def test_left_click_inside_and_right_click_outside_on_the_canvas(make_napari_viewer, qtbot,
                                                                 scene):  # fmt: skip
    viewer = make_napari_viewer(show=True)
    viewer.add_image(scene.image, name="us")
    widget = ActiveSamWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.window.value = "percentile"
    qtbot.waitUntil(lambda: widget.session is not None, timeout=WAIT)
    qtbot.waitUntil(lambda: widget.session.is_encoded(()), timeout=WAIT)
    viewer.reset_view()
    qtbot.wait(50)

    gt = scene.labels == 1
    rows, cols = np.nonzero(gt)
    inside = float(np.median(rows)), float(np.median(cols))
    outside = np.argwhere(scene.labels == 0)[0]
    click(viewer, *inside)
    qtbot.waitUntil(lambda: len(viewer.layers[PROMPTS].data) == 1, timeout=5_000)
    click(viewer, float(outside[0] + 5), float(outside[1] + 5), Qt.MouseButton.RightButton)
    qtbot.waitUntil(lambda: len(viewer.layers[PROMPTS].data) == 2, timeout=5_000)

    points = viewer.layers[PROMPTS]
    assert list(points.features["positive"]) == [True, False]
    np.testing.assert_allclose(points.data[0], inside, atol=1.0)
    # Blue inside, orange outside (apart for colour-blind eyes too), and markers of the same
    # size on screen at any zoom.
    expected = transform_color([INSIDE_COLOUR, OUTSIDE_COLOUR])
    np.testing.assert_allclose(points.face_color, expected, atol=1e-6)
    for zoom in (0.05, 1.0, 20.0):
        _camera(viewer).zoom = zoom
        on_screen = np.clip(points.size * zoom, *points.canvas_size_limits)
        assert np.all(on_screen == CLICK_PIXELS), zoom
    viewer.reset_view()
    preview = viewer.layers[PREVIEW]
    qtbot.waitUntil(lambda: preview.data.any(), timeout=WAIT)
    overlap = (preview.data > 0) & gt
    assert overlap.sum() / ((preview.data > 0) | gt).sum() > 0.5
    # The mask is drawn as an outline above the map, and the map keeps a fixed scale in
    # nats, so a confident model does not glow as brightly as an unsure one.
    layers = viewer.layers
    uncertainty = layers[UNCERTAINTY]
    qtbot.waitUntil(lambda: uncertainty.data.any(), timeout=WAIT)
    assert layers.index(PREVIEW) > layers.index(UNCERTAINTY)
    assert preview.visible and preview.opacity == 1 and preview.contour > 0
    assert uncertainty.contrast_limits == pytest.approx([0, np.log(2)])
    assert uncertainty.data.max() <= np.log(2) + 1e-6


def test_a_click_the_mask_leaves_out_is_ringed_and_said(spine_clicked, qtbot):
    """A click inside the spine gives a mask that holds it: white borders, nothing said of
    it. A right click (outside) a few pixels beside the first, inside the vertebral body,
    is one the demo model cannot take in: the mask still covers it, so that click is ringed
    and the status line says so and what to do."""
    viewer, widget, spine = spine_clicked
    points, preview = viewer.layers[PROMPTS], viewer.layers[PREVIEW]
    qtbot.waitUntil(lambda: preview.data[0].any(), timeout=WAIT)
    qtbot.waitUntil(lambda: not widget.controller.decoding, timeout=WAIT)
    np.testing.assert_allclose(points.border_color, transform_color(["white"]), atol=1e-6)
    assert "leaves out" not in widget.status.value

    first = points.data[0]
    click(viewer, float(first[1]), float(first[2] + 8), Qt.MouseButton.RightButton)
    qtbot.waitUntil(lambda: "leaves out" in widget.status.value, timeout=WAIT)
    row, col = np.round(points.data[1][1:]).astype(int)
    assert spine[0, row, col] and preview.data[0, row, col]  # the mask still holds it
    assert "1 of your clicks (ringed)" in widget.status.value
    assert "adapt the model" in widget.status.value
    np.testing.assert_allclose(points.border_color,
                               transform_color(["white", LEFT_OUT_COLOUR]), atol=1e-6)  # fmt: skip
    np.testing.assert_allclose(points.border_width, [CLICK_BORDER, LEFT_OUT_BORDER])
