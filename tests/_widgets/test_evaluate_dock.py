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


def _tiny_evaluation(make_napari_viewer, checkpoint, image, labels, show=False):
    from napari_active_sam._widgets.models import LOCAL_FILE

    viewer = make_napari_viewer(show=show)
    viewer.add_image(image, name="img")
    viewer.add_labels(labels, name="truth")
    widget = EvaluateWidget(viewer)
    dock = viewer.window.add_dock_widget(widget, name="Evaluate")
    widget.model_name.value = LOCAL_FILE
    widget.checkpoint.value = checkpoint
    return viewer, widget, dock


def _blobs():
    image = np.zeros((128, 128), np.float32)
    labels = np.zeros((128, 128), np.int32)
    for label, (row, col) in enumerate([(30, 30), (30, 90), (90, 30), (90, 90)], start=1):
        rows, cols = np.ogrid[:128, :128]
        inside = (rows - row) ** 2 + (cols - col) ** 2 < 15**2
        image[inside], labels[inside] = 1.0, label
    return image, labels


def test_a_local_file_not_chosen_yet_is_asked_for(make_napari_viewer, tmp_path):
    image, labels = _blobs()
    _, widget, _ = _tiny_evaluation(make_napari_viewer, tmp_path / "none.pt", image, labels)
    widget.run()
    assert widget.status.value == "choose a checkpoint file" and widget.run_button.enabled


def test_strategies_needing_a_head_the_model_lacks_are_left_out(make_napari_viewer, qtbot,
                                                                tiny_checkpoint):  # fmt: skip
    image, labels = _blobs()
    _, widget, _ = _tiny_evaluation(make_napari_viewer, tiny_checkpoint, image, labels)
    widget.strategies.value = ["ritm", "bald", "random"]
    widget.clicks.value = 2
    widget.run()
    qtbot.waitUntil(lambda: widget.summary is not None, timeout=WAIT)
    assert set(widget.summary["strategies"]) == {"ritm", "random"}
    assert "bald left out: the model has no Bayesian head" in widget.status.value
    widget.strategies.value = ["bald"]
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=WAIT)
    widget.run()
    qtbot.waitUntil(lambda: widget.status.value.startswith("error"), timeout=WAIT)
    assert "Learn from my annotations" in widget.status.value and widget.summary is None


def test_a_multiscale_image_is_evaluated_at_full_resolution(make_napari_viewer, qtbot,
                                                           tiny_checkpoint):  # fmt: skip
    image, labels = _blobs()
    viewer, widget, _ = _tiny_evaluation(make_napari_viewer, tiny_checkpoint, image, labels)
    viewer.layers.remove("img")
    widget.image.value = viewer.add_image([image, image[::2, ::2]], multiscale=True)
    widget.strategies.value = ["ritm"]
    widget.clicks.value = 1
    widget.run()
    qtbot.waitUntil(lambda: widget.summary is not None, timeout=WAIT)
    assert widget.summary["strategies"]["ritm"]["objects"] == 4


def test_the_title_bars_close_button_stops_the_evaluation(make_napari_viewer, qtbot,
                                                         tiny_checkpoint):  # fmt: skip
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest

    image, labels = _blobs()
    _, widget, dock = _tiny_evaluation(make_napari_viewer, tiny_checkpoint, image, labels, True)
    widget.strategies.value = ["ritm", "random"]
    widget.clicks.value = 50
    widget.run()
    worker = widget._worker
    qtbot.waitUntil(lambda: widget.progress.value >= 1, timeout=WAIT)
    QTest.mouseClick(dock.title.close_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not worker.is_running, timeout=WAIT)
    assert worker.abort_requested  # asked to quit, not left to run to its end
    assert widget.summary is None  # and no result reaches the closed dock


def test_cancel_says_cancelled_and_keeps_saying_it(make_napari_viewer, qtbot, tiny_checkpoint):
    image, labels = _blobs()
    _, widget, _ = _tiny_evaluation(make_napari_viewer, tiny_checkpoint, image, labels)
    widget.strategies.value = ["ritm", "random"]
    widget.clicks.value = 50
    widget.run()
    qtbot.waitUntil(lambda: widget.progress.value >= 1, timeout=WAIT)
    widget.cancel.native.click()
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=WAIT)
    qtbot.wait(200)
    assert widget.status.value == "cancelled" and widget.progress.value == 0
    assert widget.summary is None
