"""A SAM 2 model in the dock: a local checkpoint, a real click on the canvas, the
propagate button; the object tracked with SAM 2's memory and plotted along z."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt
from qtpy.QtTest import QTest
from test_canvas_clicks import click  # tests/_widgets is on the path (no package)

pytest.importorskip("sam2")

from napari_active_sam._widgets.dock import ActiveSamWidget  # noqa: E402
from napari_active_sam._widgets.layers import OUTPUT, PROMPTS  # noqa: E402
from napari_active_sam._widgets.models import LOCAL_FILE  # noqa: E402
from napari_active_sam.core.engine.checkpoints import random_model, save_checkpoint  # noqa: E402
from napari_active_sam.core.engine.sam2_family import SMOKE_SAM2_ARCHITECTURE  # noqa: E402

WAIT = 60_000  # ms; the encoder runs on a 2-core CPU


def test_a_sam2_checkpoint_answers_clicks_and_tracks_the_object(
    make_napari_viewer, qtbot, tmp_path, sample_ct
):
    tiny = random_model(SMOKE_SAM2_ARCHITECTURE, seed=2)
    object_head = tiny.sam.sam_mask_decoder.pred_obj_score_head.layers[-1]
    object_head.bias.data.fill_(8.0)  # random weights: say the object is on every slice
    checkpoint = tmp_path / "tiny_sam2.pt"
    save_checkpoint(checkpoint, tiny.sam, tiny.architecture)  # names its architecture

    volume, organs, _ = sample_ct
    viewer = make_napari_viewer(show=True)
    viewer.add_image(volume[6:12], name="ct")
    widget = ActiveSamWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.model_name.value = LOCAL_FILE
    widget.checkpoint.value = checkpoint
    viewer.dims.current_step = (2, 0, 0)
    qtbot.waitUntil(lambda: widget.session is not None, timeout=WAIT)
    assert widget.session.model.is_sam2
    qtbot.waitUntil(lambda: widget.session.is_encoded((2,)), timeout=WAIT)
    viewer.reset_view()
    qtbot.wait(50)
    rows, cols = np.nonzero(organs[8] == 1)
    click(viewer, float(np.median(rows)), float(np.median(cols)))
    qtbot.waitUntil(lambda: len(viewer.layers[PROMPTS].data) == 1, timeout=5_000)
    qtbot.waitUntil(lambda: (2,) in widget.session.previous, timeout=WAIT)  # answered

    QTest.mouseClick(widget.propagate_button.native, Qt.MouseButton.LeftButton)
    panel = widget.along_z
    qtbot.waitUntil(panel.canvas.isVisible, timeout=WAIT)
    assert {1, 3} <= set(panel.slices)  # tracked both ways from the clicked slice
    qtbot.waitUntil(lambda: viewer.layers[OUTPUT].data.any(), timeout=WAIT)
    labels = viewer.layers[OUTPUT].data
    assert labels.max() == 1 and labels[2].any()  # committed as one object, seed included
    # the labels hold the object on exactly the slices SAM 2 kept (and found it on)
    for z, report in panel.slices.items():
        assert labels[z].any() == (report.kept and report.area > 0)
