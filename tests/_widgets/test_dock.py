"""The dock widget in a real napari viewer: click, preview, commit, undo, volumes."""

from __future__ import annotations

import numpy as np
import pytest

from napari_active_sam._widgets.dock import ActiveSamWidget
from napari_active_sam._widgets.layers import OUTPUT, PREVIEW, PROMPTS, SUGGESTIONS, UNCERTAINTY
from napari_active_sam._widgets.models import LOCAL_FILE, device_chooser
from napari_active_sam.core.data.scenes import make_scene

WAIT = 60_000  # ms; encoder runs on a 2-core CPU


@pytest.fixture
def scene():
    return make_scene("ultrasound", np.random.default_rng(8), 256)


def _ready(qtbot, widget):
    qtbot.waitUntil(lambda: widget.session is not None, timeout=WAIT)
    qtbot.waitUntil(lambda: widget.session.is_encoded(widget.current_index()), timeout=WAIT)


def test_full_2d_annotation_click_preview_commit_undo(make_napari_viewer, qtbot, scene):
    viewer = make_napari_viewer()
    viewer.add_image(scene.image, name="us")
    widget = ActiveSamWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.window.value = "percentile"
    _ready(qtbot, widget)
    assert {PROMPTS, PREVIEW, OUTPUT} <= {layer.name for layer in viewer.layers}

    gt = scene.labels == 1
    rows, cols = np.nonzero(gt)
    widget.add_click(float(np.median(rows)), float(np.median(cols)))
    preview = viewer.layers[PREVIEW]
    qtbot.waitUntil(lambda: preview.data.any(), timeout=WAIT)
    overlap = (preview.data > 0) & gt
    assert overlap.sum() / ((preview.data > 0) | gt).sum() > 0.5  # the demo model segments

    label = widget.commit()
    output = viewer.layers[OUTPUT]
    assert label == 1 and (output.data == 1).sum() > 0
    assert len(viewer.layers[PROMPTS].data) == 0 and not preview.data.any()
    output.undo()
    assert not output.data.any()


def test_a_multiscale_image_is_annotated_at_full_resolution(make_napari_viewer, qtbot, scene):
    viewer = make_napari_viewer()
    viewer.add_image([scene.image, scene.image[::2, ::2]], multiscale=True, name="us")
    widget = ActiveSamWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.window.value = "percentile"
    _ready(qtbot, widget)
    assert widget.session.source.data.shape == scene.image.shape
    rows, cols = np.nonzero(scene.labels == 1)
    widget.add_click(float(np.median(rows)), float(np.median(cols)))
    preview = viewer.layers[PREVIEW]
    qtbot.waitUntil(lambda: preview.data.any(), timeout=WAIT)
    assert preview.data.shape == scene.image.shape
    gt = scene.labels == 1
    assert ((preview.data > 0) & gt).sum() / ((preview.data > 0) | gt).sum() > 0.5


def _docked(make_napari_viewer, qtbot, scene):
    """A shown viewer with the scene's image and the dock ready on it."""
    viewer = make_napari_viewer(show=True)
    viewer.add_image(scene.image, name="us")
    widget = ActiveSamWidget(viewer)
    viewer.window.add_dock_widget(widget)
    _ready(qtbot, widget)
    return viewer, widget


def test_c_on_a_mask_that_lies_on_other_objects_commits_nothing_and_keeps_the_clicks(
    make_napari_viewer, qtbot, scene
):
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest

    viewer, widget = _docked(make_napari_viewer, qtbot, scene)
    output = viewer.layers[OUTPUT]
    output.data[:] = 9  # one object covers the whole image
    rows, cols = np.nonzero(scene.labels == 1)
    widget.add_click(float(np.median(rows)), float(np.median(cols)))
    qtbot.waitUntil(lambda: viewer.layers[PREVIEW].data.any(), timeout=WAIT)
    viewer.layers.selection.active = viewer.layers[PROMPTS]
    canvas = viewer.window._qt_viewer.canvas.native
    canvas.setFocus()
    QTest.keyClick(canvas, Qt.Key.Key_C)
    assert "nothing was committed" in widget.status.value
    assert set(np.unique(output.data)) == {9} and len(viewer.layers[PROMPTS].data) == 1
    widget.overwrite.value = True  # as the message says
    QTest.keyClick(canvas, Qt.Key.Key_C)
    assert 10 in output.data and not len(viewer.layers[PROMPTS].data)


def test_a_preview_layer_the_user_removed_comes_back_with_the_next_click(
    make_napari_viewer, qtbot, scene
):
    from test_canvas_clicks import click

    viewer, widget = _docked(make_napari_viewer, qtbot, scene)
    viewer.layers.remove(PREVIEW)
    viewer.reset_view()
    rows, cols = np.nonzero(scene.labels == 1)
    click(viewer, float(np.median(rows)), float(np.median(cols)))
    qtbot.waitUntil(lambda: PREVIEW in viewer.layers and viewer.layers[PREVIEW].data.any(),
                    timeout=WAIT)  # fmt: skip
    assert widget.commit() == 1 and viewer.layers[OUTPUT].data.any()


def test_commit_never_overwrites_another_object(make_napari_viewer, qtbot, scene):
    viewer = make_napari_viewer()
    viewer.add_image(scene.image, name="us")
    widget = ActiveSamWidget(viewer)
    _ready(qtbot, widget)
    output = viewer.layers[OUTPUT]
    output.data[:, :128] = 9  # another object covers the left half
    viewer.layers[PREVIEW].data[100:150, 100:150] = 1
    label = widget.commit()
    assert label == 10
    assert (output.data[100:150, 100:128] == 9).all() and (
        output.data[100:150, 128:150] == 10
    ).all()
    widget.overwrite.value = True
    viewer.layers[PREVIEW].data[100:150, 100:150] = 1
    widget.commit()
    assert (output.data[100:150, 100:150] == 11).all()
    widget.use_selected.value = True
    output.selected_label = 4
    viewer.layers[PREVIEW].data[0:10, 200:210] = 1
    assert widget.commit() == 4 and (output.data[0:10, 200:210] == 4).all()


def test_toggle_and_clear_and_right_click_polarity(make_napari_viewer, qtbot, scene):
    viewer = make_napari_viewer()
    viewer.add_image(scene.image, name="us")
    widget = ActiveSamWidget(viewer)
    _ready(qtbot, widget)
    widget.add_click(50, 60)
    widget.add_click(70, 80, positive=False)
    assert [c.positive for c in widget.current_prompts().clicks] == [True, False]
    widget.toggle_last()
    assert [c.positive for c in widget.current_prompts().clicks] == [True, True]
    widget.clear_prompts()
    assert widget.current_prompts().clicks == ()


def test_volume_prompts_stay_on_their_slice(make_napari_viewer, qtbot):
    from napari_active_sam._sample_data import ct_volume

    (volume, meta, _), _ = ct_volume()
    viewer = make_napari_viewer()
    viewer.add_image(volume[:4], name="ct", scale=meta["scale"])
    widget = ActiveSamWidget(viewer)
    widget.window.value = "soft_tissue"
    viewer.dims.current_step = (2, 0, 0)
    _ready(qtbot, widget)
    assert widget.current_index() == (2,)
    widget.add_click(120, 100)
    viewer.dims.current_step = (1, 0, 0)
    assert widget.current_prompts().clicks == ()
    viewer.dims.current_step = (2, 0, 0)
    assert len(widget.current_prompts().clicks) == 1


def test_t_flips_the_last_click_of_the_slice_shown_only(make_napari_viewer, qtbot):
    """T on a slice without clicks changes nothing (the last click, on another slice, is
    out of sight); on that slice, it flips the click there."""
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest

    from napari_active_sam._sample_data import ct_volume

    (volume, meta, _), _ = ct_volume()
    viewer = make_napari_viewer(show=True)
    viewer.add_image(volume[:4], name="ct", scale=meta["scale"])
    widget = ActiveSamWidget(viewer)
    viewer.window.add_dock_widget(widget)
    viewer.dims.current_step = (2, 0, 0)
    _ready(qtbot, widget)
    widget.add_click(120, 100)
    viewer.dims.current_step = (1, 0, 0)
    viewer.layers.selection.active = viewer.layers[PROMPTS]
    canvas = viewer.window._qt_viewer.canvas.native
    canvas.setFocus()
    QTest.keyClick(canvas, Qt.Key.Key_T)
    assert np.asarray(viewer.layers[PROMPTS].features["positive"]).tolist() == [True]
    viewer.dims.current_step = (2, 0, 0)
    QTest.keyClick(canvas, Qt.Key.Key_T)
    assert [c.positive for c in widget.current_prompts().clicks] == [False]


def test_labels_layer_of_another_shape_is_a_clear_error(make_napari_viewer, qtbot, scene):
    viewer = make_napari_viewer()
    viewer.add_labels(np.zeros((10, 10), np.int32), name=OUTPUT)
    viewer.add_image(scene.image, name="us")
    widget = ActiveSamWidget(viewer)
    qtbot.waitUntil(lambda: "error" in widget.status.value, timeout=WAIT)
    assert "has shape (10, 10)" in widget.status.value
    assert viewer.layers[OUTPUT].data.shape == (10, 10)  # the user's layer is untouched


def test_local_checkpoint_needs_a_file(make_napari_viewer, tiny_checkpoint, scene, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(scene.image[:128, :128], name="us")
    widget = ActiveSamWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.model_name.value = LOCAL_FILE
    assert widget.checkpoint.native.isVisibleTo(widget.native)
    assert widget.architecture.native.isVisibleTo(widget.native)
    widget.checkpoint.value = tiny_checkpoint
    _ready(qtbot, widget)
    assert widget.session.model.architecture.name == "tiny"


def test_propagation_grows_one_3d_object_and_clears_its_prompts(make_napari_viewer, qtbot):
    from napari_active_sam._sample_data import ct_volume

    (volume, meta, _), (organs, _, _) = ct_volume()
    viewer = make_napari_viewer()
    viewer.add_image(volume[6:18], name="ct", scale=meta["scale"])
    widget = ActiveSamWidget(viewer)
    widget.window.value = "soft_tissue"
    viewer.dims.current_step = (6, 0, 0)
    _ready(qtbot, widget)
    spine = organs[6:18] == 7
    rows, cols = np.nonzero(spine[6])
    widget.add_click(float(np.median(rows)), float(np.median(cols)))
    widget.propagate()
    # A click for the next object, made while the first one grows, is kept.
    viewer.layers[PROMPTS].add(np.array([9.0, 20.0, 20.0]))
    output = viewer.layers[OUTPUT]
    qtbot.waitUntil(lambda: output.data.any(), timeout=WAIT)
    object_slices = np.flatnonzero(output.data.any(axis=(1, 2)))
    assert len(object_slices) >= 6 and set(np.unique(output.data)) == {0, 1}
    dice = 2 * ((output.data == 1) & spine).sum() / ((output.data == 1).sum() + spine.sum())
    assert dice > 0.5
    # The seed's click is done with: only the next object's click is left.
    np.testing.assert_array_equal(widget.viewer.layers[PROMPTS].data, [[9.0, 20.0, 20.0]])
    # The object's quality check follows the commit; the status keeps what propagation said.
    qtbot.waitUntil(lambda: "predicted Dice" in widget.status.value, timeout=WAIT)
    assert f"committed object 1 on {len(object_slices)} slices" in widget.status.value
    worst = int(widget.status.value.split("least sure on slice ")[1].split()[0].rstrip(";"))
    assert worst in object_slices  # one summary: where to look first
    output.undo()
    assert not output.data.any()


def test_an_object_that_grows_nowhere_says_why_in_the_along_z_panel(make_napari_viewer,
                                                                    qtbot):  # fmt: skip
    rng = np.random.default_rng(0)
    volume = rng.normal(0.2, 0.05, (12, 128, 128)).astype(np.float32)
    rows, cols = np.mgrid[:128, :128]
    volume[6][(rows - 64) ** 2 + (cols - 64) ** 2 < 15**2] = 1.0  # a disc on one slice
    viewer = make_napari_viewer()
    viewer.add_image(volume, name="disc")
    widget = ActiveSamWidget(viewer)
    viewer.dims.current_step = (6, 0, 0)
    _ready(qtbot, widget)
    widget.add_click(64.0, 64.0)
    widget.propagate()
    qtbot.waitUntil(lambda: viewer.layers[OUTPUT].data.any(), timeout=WAIT)
    assert np.flatnonzero(viewer.layers[OUTPUT].data.any(axis=(1, 2))).tolist() == [6]
    summary = widget.along_z.summary.value
    assert summary.startswith("object 1: no slice was propagated: stopped at slice ")
    assert "slice 5" in summary and "slice 7" in summary  # why, both ways


def test_propagate_on_a_volume_of_one_slice_says_there_is_nothing_to_propagate_to(
    make_napari_viewer, qtbot, tiny_checkpoint
):
    from napari.utils.notifications import notification_manager
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest

    viewer = make_napari_viewer(show=True)
    viewer.add_image(np.random.default_rng(0).random((1, 96, 96)).astype(np.float32))
    widget = _tiny_widget(viewer, tiny_checkpoint)
    viewer.window.add_dock_widget(widget)
    _ready(qtbot, widget)
    widget.add_click(48.0, 48.0)
    before = len(notification_manager.records)
    QTest.mouseClick(widget.propagate_button.native, Qt.MouseButton.LeftButton)
    said = [str(n.message) for n in notification_manager.records[before:]]
    assert any("one slice: there is nothing to propagate to" in m for m in said)
    assert len(viewer.layers[PROMPTS].data) == 1  # the clicks stay, to commit


def _tiny_widget(viewer, checkpoint):
    widget = ActiveSamWidget(viewer)
    widget.model_name.value = LOCAL_FILE
    widget.checkpoint.value = checkpoint
    return widget


def test_cancel_during_volume_encoding(make_napari_viewer, qtbot, tiny_checkpoint):
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((40, 128, 128)).astype(np.float32))
    widget = _tiny_widget(viewer, tiny_checkpoint)
    qtbot.waitUntil(lambda: widget.session is not None and widget.cancel.enabled, timeout=WAIT)
    qtbot.waitUntil(lambda: widget.progress.value >= 2, timeout=WAIT)
    widget.cancel_encoding()
    assert not widget.cancel.enabled
    qtbot.wait(500)
    encoded = sum(widget.session.is_encoded((z,)) for z in range(40))
    assert 1 <= encoded < 40  # stopped between slices, nothing half-written
    qtbot.wait(500)
    assert sum(widget.session.is_encoded((z,)) for z in range(40)) == encoded


def test_closing_the_viewer_while_encoding(make_napari_viewer, qtbot, tiny_checkpoint):
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((40, 128, 128)).astype(np.float32))
    widget = _tiny_widget(viewer, tiny_checkpoint)
    viewer.window.add_dock_widget(widget)
    qtbot.waitUntil(lambda: widget.session is not None and widget.cancel.enabled, timeout=WAIT)
    worker = widget.controller.encoder
    viewer.close()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=WAIT)


def test_the_title_bars_close_button_stops_the_dock(make_napari_viewer, qtbot, tiny_checkpoint):
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest

    viewer = make_napari_viewer(show=True)
    viewer.add_image(np.random.default_rng(0).random((40, 128, 128)).astype(np.float32))
    widget = _tiny_widget(viewer, tiny_checkpoint)
    dock = viewer.window.add_dock_widget(widget, name="Active SAM")
    qtbot.waitUntil(lambda: widget.session is not None and widget.cancel.enabled, timeout=WAIT)
    worker = widget.controller.encoder
    keys = viewer.layers[PREVIEW].keymap
    assert "C" in {str(key) for key in keys}
    QTest.mouseClick(dock.title.close_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not worker.is_running, timeout=WAIT)
    for name in (PROMPTS, PREVIEW, OUTPUT):  # the layers stay, without the dock's keys
        assert not {str(key) for key in viewer.layers[name].keymap} & set("CXTADS")
    encoded = sum(widget.session.is_encoded((z,)) for z in range(40))
    assert encoded < 40
    viewer.dims.set_current_step(0, 20)  # no dock listens: nothing is encoded for it
    qtbot.wait(500)
    assert sum(widget.session.is_encoded((z,)) for z in range(40)) == encoded


def test_save_and_restore_an_annotation(make_napari_viewer, qtbot, tiny_checkpoint, tmp_path):
    image = np.random.default_rng(0).random((128, 128)).astype(np.float32)
    viewer = make_napari_viewer()
    viewer.add_image(image, name="img")
    widget = _tiny_widget(viewer, tiny_checkpoint)
    _ready(qtbot, widget)
    widget.save_folder.value = tmp_path / "annotation"
    viewer.layers[PREVIEW].data[10:20, 10:20] = 1
    widget.commit()  # autosaves
    qtbot.waitUntil(lambda: (tmp_path / "annotation" / "annotation.npz").is_file(), timeout=WAIT)
    widget.add_click(60, 70)
    widget.add_click(30, 40, positive=False)
    said = []
    widget.controller.events.status.connect(lambda event: said.append(event.message))
    widget.save()
    # The status line may already show the next answer's suggestion: read what was said.
    qtbot.waitUntil(lambda: not widget.controller.objects.saving, timeout=WAIT)
    assert f"saved to {tmp_path / 'annotation'}" in said

    other = make_napari_viewer()
    other.add_image(image, name="img")
    restored = _tiny_widget(other, tiny_checkpoint)
    _ready(qtbot, restored)
    restored.save_folder.value = tmp_path / "annotation"
    restored.restore()
    assert (other.layers[OUTPUT].data[10:20, 10:20] == 1).all()
    assert other.layers[OUTPUT].data.sum() == 100
    assert [c.positive for c in restored.current_prompts().clicks] == [True, False]
    # The preview is made from the clicks as restored, the negative one included.
    controller = restored.controller
    qtbot.waitUntil(lambda: controller._shown == ((), controller.current_prompts()),
                    timeout=WAIT)  # fmt: skip
    other.layers[OUTPUT].undo()  # a restore is one undoable edit
    assert not other.layers[OUTPUT].data.any()
    other.layers.remove(PROMPTS)  # without the prompts layer the labels still come back
    restored.restore()
    assert other.layers[OUTPUT].data.sum() == 100


def test_save_with_the_prompts_or_labels_layer_removed(make_napari_viewer, qtbot,
                                                        tiny_checkpoint, tmp_path):  # fmt: skip
    """Without the prompts layer the labels are saved with no clicks; without the labels
    layer there is nothing to save, and the status says so (no error)."""
    from napari_active_sam.core.annotate.persistence import load_annotation

    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((64, 64)).astype(np.float32), name="img")
    widget = _tiny_widget(viewer, tiny_checkpoint)
    _ready(qtbot, widget)
    widget.save_folder.value = tmp_path / "annotation"
    widget.autosave.value = False
    viewer.layers[PREVIEW].data[10:20, 10:20] = 1
    widget.commit()
    viewer.layers.remove(PROMPTS)
    widget.save()
    qtbot.waitUntil(lambda: not widget.controller.objects.saving, timeout=WAIT)
    saved = load_annotation(tmp_path / "annotation")
    assert saved.labels.sum() == 100 and not len(saved.points)
    viewer.layers.remove(OUTPUT)
    widget.save()
    assert "nothing to save" in widget.status.value


def test_restore_refuses_another_images_annotation(make_napari_viewer, qtbot, tiny_checkpoint,
                                                   tmp_path):  # fmt: skip
    from napari_active_sam.core.annotate.persistence import (
        SavedAnnotation,
        load_annotation,
        save_annotation,
    )

    small = SavedAnnotation(np.zeros((5, 5), np.int32), np.empty((0, 2)), np.array([], bool))
    save_annotation(tmp_path / "a", small)
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((128, 128), np.float32), name="img")
    widget = _tiny_widget(viewer, tiny_checkpoint)
    _ready(qtbot, widget)
    viewer.layers[OUTPUT].data[0, 0] = 3
    widget.save_folder.value = tmp_path / "a"
    widget.restore()
    assert "has shape" in widget.status.value or "shape (5, 5)" in widget.status.value
    assert viewer.layers[OUTPUT].data[0, 0] == 3  # the user's labels are untouched

    # A save of the same size but of another image: restore says whose it is, and
    # autosave does not write this image's objects over it.
    ct = SavedAnnotation(np.ones((128, 128), np.int32), np.empty((0, 2)), np.array([], bool),
                         {"image": "ct"})  # fmt: skip
    save_annotation(tmp_path / "b", ct)
    widget.save_folder.value = tmp_path / "b"
    widget.restore()
    assert "holds the annotation of image 'ct', not of 'img'" in widget.status.value
    assert viewer.layers[OUTPUT].data[0, 0] == 3 and viewer.layers[OUTPUT].data.sum() == 3
    viewer.layers[PREVIEW].data[10:20, 10:20] = 1
    said = []
    widget.controller.events.status.connect(lambda event: said.append(event.message))
    widget.commit()  # autosaves
    qtbot.waitUntil(lambda: not widget.controller.objects.saving, timeout=WAIT)
    assert any("holds the annotation of image 'ct'" in message for message in said)
    assert load_annotation(tmp_path / "b").labels.all()  # ct's save is unchanged


def test_rgb_volume_and_time_series_are_annotated_slice_by_slice(make_napari_viewer, qtbot,
                                                                 tiny_checkpoint):  # fmt: skip
    rng = np.random.default_rng(1)
    for data, rgb in ((rng.integers(0, 255, (3, 96, 96, 3), dtype=np.uint8), True),
                      (rng.random((4, 96, 96)).astype(np.float32), False)):  # fmt: skip
        viewer = make_napari_viewer()
        viewer.add_image(data, rgb=rgb, name="stack")
        widget = _tiny_widget(viewer, tiny_checkpoint)
        _ready(qtbot, widget)
        assert viewer.layers[OUTPUT].data.shape == data.shape[:3]
        viewer.dims.current_step = (1, 0, 0)
        widget.add_click(40, 50)
        qtbot.waitUntil(lambda w=widget: not w.controller.decoding, timeout=WAIT)
        assert widget.current_index() == (1,)
        assert widget.current_prompts().clicks[0].x == 50


def test_points_edited_by_hand(make_napari_viewer, qtbot, tiny_checkpoint):
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((3, 96, 96)).astype(np.float32))
    widget = _tiny_widget(viewer, tiny_checkpoint)
    _ready(qtbot, widget)
    points = viewer.layers[PROMPTS]
    viewer.dims.current_step = (0, 0, 0)
    widget.add_click(10, 20)
    widget.add_click(30, 40, positive=False)
    widget.add_click(50, 60)
    points.data = np.array([[0, 11, 21], [0, 30, 40], [2, 50, 60]])  # moved; one to slice 2
    assert [(c.y, c.x) for c in widget.current_prompts().clicks] == [(11, 21), (30, 40)]
    points.selected_data = {0}
    points.remove_selected()
    assert [(c.y, c.x, c.positive) for c in widget.current_prompts().clicks] == [(30, 40, False)]
    points.data = np.array([[0, 500, 500], [0, 30, 40]])  # a point dragged off the image
    qtbot.waitUntil(lambda: "outside" in widget.status.value, timeout=WAIT)
    assert len(points.data) == 2  # nothing the user did is lost


# ----------------------------------------------------------------------- active prompting


def _press(viewer, key):
    """A key press through napari's own dispatcher (active layer first, then the viewer)."""
    handler = viewer.window._qt_viewer._key_map_handler
    handler.press_key(key)
    handler.release_key(key)


def _suggested(widget):
    offer = widget.controller.offer
    return offer is not None and len(offer.suggestions) > 0


def test_suggestions_uncertainty_layer_and_answer_keys(make_napari_viewer, qtbot, scene):
    viewer = make_napari_viewer()
    viewer.add_image(scene.image, name="us")
    widget = ActiveSamWidget(viewer)
    _ready(qtbot, widget)
    assert widget.session.head is not None and widget.acquisition.value == "bald"
    assert widget.session.judge == widget.controller.quality.judge
    answers = []
    widget.controller.events.answered.connect(lambda event: answers.append(event.answer))
    gt = scene.labels == 1
    rows, cols = np.nonzero(gt)
    widget.add_click(float(np.median(rows)), float(np.median(cols)))
    qtbot.waitUntil(lambda: _suggested(widget), timeout=WAIT)
    first = answers[-1]  # the quality ensemble chose which of SAM's three masks is shown
    assert first.prediction.judged is not None
    assert first.head == 1 + int(np.argmax(first.prediction.judged))

    uncertainty = viewer.layers[UNCERTAINTY]
    assert uncertainty.data.max() > 0 and uncertainty.colormap.name == "magma"
    marks = viewer.layers[SUGGESTIONS]
    offered = widget.controller.offer.suggestions
    assert len(marks.data) == len(offered) and list(marks.features["rank"]) == list(
        range(1, len(offered) + 1)
    )
    assert "suggestions" in widget.status.value
    assert widget.hint.value.startswith("1 · inside? A = yes, D = no, S = skip")

    assert widget.suggestions == offered
    _press(viewer, "s")  # skip: the second suggestion is offered, nothing is clicked
    assert len(viewer.layers[PROMPTS].data) == 1 and marks.features["rank"][0] == 2
    assert widget.suggestions == offered[1:]
    assert widget.hint.value.startswith("2 · inside?")  # the hint line follows the offer
    second = offered[1]
    _press(viewer, "d")  # outside: a negative click at the offered suggestion
    clicks = widget.current_prompts().clicks
    assert len(clicks) == 2 and not clicks[-1].positive
    assert (clicks[-1].x, clicks[-1].y) == (second.x, second.y)
    qtbot.waitUntil(lambda: _suggested(widget), timeout=WAIT)  # fresh map after the answer
    assert widget.controller.offer.prompts == widget.current_prompts()
    top = widget.controller.offer.suggestions[0]
    _press(viewer, "a")
    assert widget.current_prompts().clicks[-1] == top.click(True)

    widget.acquisition.value = "off"
    qtbot.waitUntil(lambda: not widget.controller.decoding and widget.controller.offer is None,
                    timeout=WAIT)  # fmt: skip
    assert len(marks.data) == 0


def test_a_suggestion_answered_after_the_slice_changed_adds_nothing(make_napari_viewer, qtbot):
    from napari_active_sam._sample_data import ct_volume

    (volume, meta, _), _ = ct_volume()
    viewer = make_napari_viewer()
    viewer.add_image(volume[10:14], name="ct", scale=meta["scale"])
    widget = ActiveSamWidget(viewer)
    widget.window.value = "soft_tissue"
    viewer.dims.current_step = (1, 0, 0)
    _ready(qtbot, widget)
    widget.acquisition.value = "eig"
    widget.add_click(120, 100)
    qtbot.waitUntil(lambda: _suggested(widget), timeout=WAIT)
    widget.add_click(60, 60, positive=False)  # new clicks: the suggestions on screen are stale
    widget.answer_suggestion(True)  # before the new answer is back
    assert len(viewer.layers[PROMPTS].data) == 2  # the user's clicks only
    qtbot.waitUntil(lambda: not widget.controller.decoding and _suggested(widget), timeout=WAIT)
    viewer.dims.current_step = (2, 0, 0)
    widget.answer_suggestion(True)
    assert len(viewer.layers[PROMPTS].data) == 2
    viewer.dims.current_step = (1, 0, 0)
    qtbot.waitUntil(lambda: not widget.controller.decoding, timeout=WAIT)
    assert (1,) in dict(widget.session.most_uncertain())
    viewer.dims.current_step = (3, 0, 0)
    widget.go_to_most_uncertain()
    assert widget.current_index() == (1,)


def test_learn_from_my_annotations_fits_and_saves_a_head(
    make_napari_viewer, qtbot, tiny_checkpoint, tmp_path, monkeypatch
):
    from napari_active_sam.core.active.bayes_head import HEAD, BayesHead

    monkeypatch.setenv("NAPARI_ACTIVE_SAM_CACHE", str(tmp_path / "cache"))
    image = np.zeros((128, 128), np.float32)
    image[30:80, 40:100] = 1
    viewer = make_napari_viewer()
    viewer.add_image(image, name="img")
    widget = _tiny_widget(viewer, tiny_checkpoint)
    _ready(qtbot, widget)
    assert widget.session.head is None and widget.acquisition.value == "eig"
    widget.learn()
    qtbot.waitUntil(lambda: not widget.controller.objects.learning, timeout=WAIT)
    assert widget.session.head is None  # nothing committed: nothing learned
    viewer.layers[PREVIEW].data[30:80, 40:100] = 1
    widget.commit()
    widget.learn()
    qtbot.waitUntil(lambda: widget.session.head is not None, timeout=WAIT)
    path = HEAD.users(widget.session.model.model_id)
    assert path.is_file() and "learned from" in widget.status.value
    assert BayesHead.load(path, widget.session.model).info["examples"] == 6
    # A cache that cannot be written: the head learned is still used, and kept on disk.
    import tempfile

    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("NAPARI_ACTIVE_SAM_CACHE", str(tmp_path / "a-file" / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    first = widget.session.head
    widget.learn()
    qtbot.waitUntil(lambda: widget.session.head is not first, timeout=WAIT)
    assert "Could not write the Bayesian head" in widget.status.value
    [kept] = (tmp_path / "tmp").glob("napari-active-sam-*/unsaved/*.head.pt")
    assert str(kept) in widget.status.value
    assert BayesHead.load(kept, widget.session.model).info["examples"] == 6


# --------------------------------------------------------------------------------- quality


def test_quality_panel_flags_a_wrong_object_and_jumps_to_it(make_napari_viewer, qtbot, scene):
    viewer = make_napari_viewer()
    viewer.add_image(scene.image, name="us")
    widget = ActiveSamWidget(viewer)
    _ready(qtbot, widget)
    panel = widget.quality_panel
    panel.threshold.value = 0.5
    gt = scene.labels == 1
    rows, cols = np.nonzero(gt)
    widget.add_click(float(np.median(rows)), float(np.median(cols)))
    qtbot.waitUntil(lambda: viewer.layers[PREVIEW].data.any(), timeout=WAIT)
    good = widget.commit()
    qtbot.waitUntil(lambda: (good, ()) in panel.results, timeout=WAIT)
    # A square where no object is: the kind of commit the review list exists for.
    empty = np.argwhere(scene.labels == 0)
    top, left = empty[len(empty) // 2]
    preview = viewer.layers[PREVIEW]
    preview.data[...] = 0
    preview.data[max(top - 20, 0) : top + 20, max(left - 20, 0) : left + 20] = 1
    bad = widget.commit()
    qtbot.waitUntil(lambda: (bad, ()) in panel.results, timeout=WAIT)
    assert panel.results[(bad, ())] < panel.results[(good, ())]

    panel.check_all()
    qtbot.waitUntil(lambda: set(panel.results) == {(good, ()), (bad, ())}, timeout=WAIT)
    features = viewer.layers[OUTPUT].features
    assert list(features["index"]) == [0, good, bad]
    assert 0 <= features["predicted_dice"].iloc[2] < features["predicted_dice"].iloc[1] <= 1
    panel.threshold.value = (panel.results[(bad, ())] + panel.results[(good, ())]) / 2
    assert len(panel.review.choices) == 1 and f"object {bad}" in panel.review.choices[0]
    panel.review.value = [panel.review.choices[0]]
    assert viewer.layers[OUTPUT].selected_label == bad

    # Removing the labels layer takes the estimates of its objects with it.
    viewer.layers.remove(OUTPUT)
    assert not panel.results and not panel.review.choices


def test_estimates_of_one_image_are_not_shown_for_the_next(make_napari_viewer, qtbot, scene):
    viewer = make_napari_viewer()
    viewer.add_image(scene.image, name="us")
    widget = ActiveSamWidget(viewer)
    viewer.window.add_dock_widget(widget)
    _ready(qtbot, widget)
    panel = widget.quality_panel
    viewer.layers[PREVIEW].data[30:60, 30:60] = 1
    label = widget.commit()
    qtbot.waitUntil(lambda: (label, ()) in panel.results, timeout=WAIT)
    other = viewer.add_image(scene.image[::-1].copy(), name="us flipped")
    session = widget.session
    widget.image.value = other
    qtbot.waitUntil(lambda: widget.session is not None and widget.session is not session,
                    timeout=WAIT)  # fmt: skip
    assert not panel.results and not panel.review.choices


def test_removing_the_image_stops_its_encoding(make_napari_viewer, qtbot, tiny_checkpoint):
    viewer = make_napari_viewer()
    image = viewer.add_image(np.random.default_rng(0).random((40, 128, 128)).astype(np.float32))
    widget = _tiny_widget(viewer, tiny_checkpoint)
    viewer.window.add_dock_widget(widget)  # docked, its choices follow the layer list
    qtbot.waitUntil(lambda: widget.session is not None and widget.cancel.enabled, timeout=WAIT)
    qtbot.waitUntil(lambda: widget.progress.value >= 2, timeout=WAIT)
    worker, session = widget.controller.encoder, widget.session
    viewer.layers.remove(image)
    qtbot.waitUntil(lambda: not worker.is_running, timeout=WAIT)
    encoded = sum(session.is_encoded((z,)) for z in range(40))
    assert encoded < 40 and not widget.cancel.enabled and widget.session is None
    qtbot.wait(300)
    assert sum(session.is_encoded((z,)) for z in range(40)) == encoded
    # The dock's own uncertainty map is an image layer too, but never one to annotate.
    assert UNCERTAINTY in viewer.layers and widget.image.value is None
    assert widget.session is None and not list(widget.image.choices)
    # Going to a slice (the review list, the along-z plot) or propagating now says why not.
    from napari.utils.notifications import notification_manager

    before = len(notification_manager.records)
    widget.controller.go_to_slice((3,))
    widget.controller.propagate()
    said = [str(n.message) for n in notification_manager.records[before:]]
    assert any("The image was removed" in m for m in said)
    assert any("Choose an image" in m for m in said)


def test_a_propagated_object_under_the_threshold_gets_one_warning():
    from napari_active_sam._widgets.quality import low_quality_warnings
    from napari_active_sam.core.enums import Estimator
    from napari_active_sam.core.quality.estimators import ObjectQuality, QualityEstimate

    def judged(label, z, dice):
        estimate = QualityEstimate(dice, Estimator.ENSEMBLE, Estimator.ENSEMBLE)
        return ObjectQuality(label, (z,), estimate)

    found = [judged(3, z, 0.5 + 0.01 * z) for z in range(10)] + [judged(4, 2, 0.95)]
    found += [judged(5, 7, 0.3)]
    warnings = low_quality_warnings(found, 0.8)
    assert warnings == [
        "Object 3 has predicted Dice 0.50 < 0.80 on 10 slices (worst: slice 0): review it "
        "(the review list has every slice).",
        "Object 5 has predicted Dice 0.30 < 0.80 on slice 7: review it (the review list has "
        "every slice).",
    ]


def test_the_per_slice_plot_counts_slices_in_whole_numbers(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = ActiveSamWidget(viewer)
    panel = widget.quality_panel
    panel.results = {(1, (z,)): 0.9 - 0.1 * z for z in (2, 3, 4)}
    panel._refresh()
    (axes,) = panel.figure.axes
    ticks = [t for t in axes.get_xticks() if 2 <= t <= 4]
    assert ticks and all(float(t).is_integer() for t in ticks)


def test_a_model_that_fails_to_load_leaves_the_chooser_on_the_model_in_use(
    make_napari_viewer, qtbot, scene, tmp_path
):
    viewer = make_napari_viewer()
    viewer.add_image(scene.image, name="us")
    widget = ActiveSamWidget(viewer)
    _ready(qtbot, widget)
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(b"not a checkpoint")
    widget.checkpoint.value = damaged
    widget.model_name.value = LOCAL_FILE  # a user picks a file that cannot be read
    session = widget.session
    qtbot.waitUntil(lambda: widget.model_name.value == "demo", timeout=WAIT)
    assert "could not be read" in widget.status.value and not widget.checkpoint.visible
    # What the chooser shows is what clicks use, and the session in use goes on unchanged.
    assert widget.session is session and session.model.name == "demo"
    assert widget.controller.objects.settings["model"] == "demo"


def test_the_device_variable_sets_the_docks_device(make_napari_viewer, qtbot, scene,
                                                  monkeypatch):  # fmt: skip
    monkeypatch.setenv("NAPARI_ACTIVE_SAM_DEVICE", "CPU")
    viewer = make_napari_viewer()
    viewer.add_image(scene.image, name="us")
    widget = ActiveSamWidget(viewer)
    assert widget.device.value == "cpu"
    _ready(qtbot, widget)
    assert widget.session.model.device.type == "cpu"
    monkeypatch.setenv("NAPARI_ACTIVE_SAM_DEVICE", "cuda:1")  # a device of its own joins
    chooser = device_chooser()
    assert chooser.value == "cuda:1" and "auto" in chooser.choices


def test_open_button_reads_a_dicom_series_with_the_plugin(make_napari_viewer, qtbot, tmp_path,
                                                          tiny_checkpoint, dicom_slice,
                                                          monkeypatch):  # fmt: skip
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest
    from qtpy.QtWidgets import QAbstractItemView, QFileDialog, QLineEdit

    folder = tmp_path / "ct"
    folder.mkdir()
    for z in range(3):
        dicom_slice(folder / f"IM{z}.dcm", "4.5", z * 2.0, np.full((16, 16), 100 * z))
    monkeypatch.chdir(tmp_path)
    viewer = make_napari_viewer(show=True)
    widget = ActiveSamWidget(viewer)
    widget.model_name.value, widget.checkpoint.value = LOCAL_FILE, tiny_checkpoint
    viewer.window.add_dock_widget(widget)

    QTest.mouseClick(widget.open_button.native, Qt.MouseButton.LeftButton)
    dialog = widget.native.findChild(QFileDialog)
    qtbot.waitUntil(dialog.isVisible, timeout=5_000)
    name = dialog.findChild(QLineEdit, "fileNameEdit")
    assert dialog.directory().path() == str(tmp_path)  # it starts where the user works
    QTest.keyClicks(name, "ct")  # a folder, then Return: the dialog goes there
    QTest.keyClick(name, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: dialog.directory().path() == str(folder), timeout=5_000)
    view = next(v for v in dialog.findChildren(QAbstractItemView)
                if v.objectName() in ("listView", "treeView") and v.isVisible())  # fmt: skip
    model = view.model()

    def file_index():
        root = view.rootIndex()
        rows = [model.index(r, 0, root) for r in range(model.rowCount(root))]
        return next((i for i in rows if i.data() == "IM1.dcm"), None)

    qtbot.waitUntil(lambda: file_index() is not None, timeout=5_000)
    # A click on one file of the series (it opens all of it), then Return.
    where = view.visualRect(file_index()).center()
    QTest.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                     where)  # fmt: skip
    QTest.keyClick(view, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: len(viewer.layers) > 0, timeout=10_000)
    [layer] = [layer for layer in viewer.layers if layer.data.ndim == 3]
    assert layer.data.shape == (3, 16, 16) and tuple(layer.scale) == (2.0, 0.6, 0.7)
    assert widget.image.value is layer
    qtbot.waitUntil(lambda: widget.session is not None, timeout=60_000)

    (tmp_path / "notes.dcm").write_text("not DICOM")
    widget.open_file(str(tmp_path / "notes.dcm"))  # as the dialog would hand it on
    assert "could not open notes.dcm" in widget.status.value


def test_restore_of_a_damaged_save_says_so_and_keeps_the_layers(
    make_napari_viewer, qtbot, tiny_checkpoint, tmp_path
):
    from napari_active_sam.core.annotate.persistence import SavedAnnotation, save_annotation

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((128, 128), np.float32), name="img")
    widget = _tiny_widget(viewer, tiny_checkpoint)
    _ready(qtbot, widget)
    output = viewer.layers[OUTPUT]
    output.data[0, 0] = 3
    widget.add_click(60, 70)
    clicks = np.array(viewer.layers[PROMPTS].data)
    good = SavedAnnotation(np.ones((128, 128), np.int32), np.array([[5.0, 6.0]]),
                           np.array([False]))  # fmt: skip
    truncated, invalid_json, a_file = tmp_path / "truncated", tmp_path / "json", tmp_path / "f"
    save_annotation(truncated, good)
    data = (truncated / "annotation.npz").read_bytes()
    (truncated / "annotation.npz").write_bytes(data[: len(data) // 2])
    invalid_json.mkdir()  # the first format, its record cut short
    np.save(invalid_json / "labels.npy", good.labels)
    (invalid_json / "annotation.json").write_text('{"format": "napari-active-sam-annot')
    a_file.write_text("")
    for folder in (truncated, invalid_json, a_file):
        widget.save_folder.value = folder
        widget.restore()
        assert "error:" in widget.status.value and str(folder) in widget.status.value
        assert "choose" in widget.status.value
        assert output.data[0, 0] == 3 and output.data.sum() == 3  # the user's labels stay
        assert np.array_equal(viewer.layers[PROMPTS].data, clicks)


def test_a_save_that_cannot_be_written_keeps_the_layers_and_says_where(
    make_napari_viewer, qtbot, tiny_checkpoint, tmp_path
):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((128, 128), np.float32), name="img")
    widget = _tiny_widget(viewer, tiny_checkpoint)
    _ready(qtbot, widget)
    (tmp_path / "file").write_text("")
    target = tmp_path / "file" / "annotation"  # under a file: no folder can be made there
    widget.save_folder.value = target
    viewer.layers[OUTPUT].data[5, 5] = 2
    widget.add_click(60, 70)
    said = []
    widget.controller.events.status.connect(lambda event: said.append(event.message))
    widget.save()
    # The status line may already show the next answer's suggestion: read what was said.
    qtbot.waitUntil(lambda: not widget.controller.objects.saving, timeout=WAIT)
    [error] = [message for message in said if message.startswith("error:")]
    assert f"Nothing was saved to {target}" in error and "choose a writable folder" in error
    assert viewer.layers[OUTPUT].data[5, 5] == 2 and len(viewer.layers[PROMPTS].data) == 1
