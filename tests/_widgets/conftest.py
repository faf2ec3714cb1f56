"""Shared set-ups of the dock tests."""

from __future__ import annotations

import numpy as np
import pytest
from test_canvas_clicks import click  # tests/_widgets is on the path (no package)

from napari_active_sam._widgets.dock import ActiveSamWidget
from napari_active_sam._widgets.layers import PROMPTS

WAIT = 60_000  # ms; the encoder runs on a 2-core CPU


@pytest.fixture
def spine_clicked(make_napari_viewer, qtbot, sample_ct):
    """The dock on slices 6-17 of the sample CT (soft-tissue window, scale 1) with a click
    on the canvas inside the spine on the first of them: ready to propagate. Returns the
    viewer, the dock and the spine's mask."""
    volume, organs, _ = sample_ct
    viewer = make_napari_viewer(show=True)
    viewer.add_image(volume[6:18], name="ct")
    widget = ActiveSamWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.window.value = "soft_tissue"
    viewer.dims.current_step = (0, 0, 0)
    qtbot.waitUntil(lambda: widget.session is not None, timeout=WAIT)
    qtbot.waitUntil(lambda: widget.session.is_encoded((0,)), timeout=WAIT)
    viewer.reset_view()
    qtbot.wait(50)
    spine = organs[6:18] == 7
    rows, cols = np.nonzero(spine[0])
    click(viewer, float(np.median(rows)), float(np.median(cols)))
    qtbot.waitUntil(lambda: len(viewer.layers[PROMPTS].data) == 1, timeout=5_000)
    return viewer, widget, spine
