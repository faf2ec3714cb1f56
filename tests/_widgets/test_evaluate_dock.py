"""The Evaluate dock in a real napari viewer: strategies benchmarked on an open image."""

from __future__ import annotations

import numpy as np

from napari_active_sam._widgets.evaluate import EvaluateWidget

WAIT = 120_000  # ms


def test_evaluate_draws_one_curve_per_strategy(make_napari_viewer, qtbot):
    from napari_active_sam._sample_data import nuclei

    (image, _, _), (labels, _, _) = nuclei()
    viewer = make_napari_viewer()
    viewer.add_image(image, name="nuclei")
    viewer.add_labels(labels, name="truth")
    widget = EvaluateWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.strategies.value = ["ritm", "bald", "random"]
    widget.clicks.value = 3
    widget.run()
    qtbot.waitUntil(lambda: widget.summary is not None, timeout=WAIT)
    strategies = widget.summary["strategies"]
    assert set(strategies) == {"ritm", "bald", "random"}
    objects = len(np.unique(labels)) - 1
    assert all(s["objects"] == objects and len(s["miou"]) == 3 for s in strategies.values())
    assert strategies["ritm"]["miou"][0] > 0.3  # the demo model segments from one click
    (ax,) = widget.figure.axes
    assert {line.get_label() for line in ax.get_lines()} == {"ritm", "bald", "random"}
    assert "ritm: AUC" in widget.table.value
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=WAIT)


def test_ground_truth_of_another_shape_is_a_clear_error(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((64, 64), np.float32), name="img")
    truth = viewer.add_labels(np.ones((32, 32), np.int32), name="truth")
    widget = EvaluateWidget(viewer)
    widget.strategies.value = ["ritm"]
    widget.run()
    qtbot.waitUntil(lambda: widget.status.value.startswith("error"), timeout=WAIT)
    assert "shape (32, 32)" in widget.status.value
    assert truth.data.shape == (32, 32) and widget.summary is None


def test_a_local_checkpoint_asks_for_its_architecture(make_napari_viewer, tiny_checkpoint):
    from napari_active_sam._widgets.models import LOCAL_FILE, chosen_model

    viewer = make_napari_viewer()
    widget = EvaluateWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert not widget.architecture.native.isVisibleTo(widget.native)
    widget.model_name.value = LOCAL_FILE
    assert widget.architecture.native.isVisibleTo(widget.native)
    widget.checkpoint.value = tiny_checkpoint
    widget.architecture.value = "vit_b"
    assert chosen_model(widget.model_name, widget.checkpoint, widget.architecture) == (
        "vit_b", tiny_checkpoint
    )  # fmt: skip
