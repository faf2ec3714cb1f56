"""Uncertainty along z: a click on the canvas, the propagate button, then the per-slice plot
and the least-sure slice, all with real Qt mouse events."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QPoint, Qt
from qtpy.QtTest import QTest

from napari_active_sam._widgets.layers import OUTPUT
from napari_active_sam.core.engine.predictor import refining_head, shown_head

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
    summary = panel.summary.native  # wrapped over lines, none of them cut off
    assert summary.height() >= summary.heightForWidth(summary.width())
    QTest.mouseClick(widget.propagate_button.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: viewer.layers[OUTPUT].data.any(), timeout=WAIT)
    qtbot.waitUntil(panel.canvas.isVisible, timeout=5_000)

    grown = np.flatnonzero(viewer.layers[OUTPUT].data.any(axis=(1, 2)))
    kept = [z for z, report in panel.slices.items() if report.kept]
    assert sorted(kept) == [z for z in grown if z != 0]  # every propagated slice is plotted
    assert panel.least_sure in kept
    assert f"least sure on slice {panel.least_sure}" in panel.summary.value
    qtbot.waitUntil(lambda: summary.height() >= summary.heightForWidth(summary.width()),
                    timeout=5_000)  # fmt: skip

    QTest.mouseClick(panel.worst_button.native, Qt.MouseButton.LeftButton)
    assert viewer.dims.current_step[0] == panel.least_sure
    other = next(z for z in kept if z != panel.least_sure)
    QTest.mouseClick(panel.canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                     _plot_point(panel, other))  # fmt: skip
    assert viewer.dims.current_step[0] == other


def test_a_disagreement_bound_typed_in_the_panel_stops_propagation_and_is_drawn(
    spine_clicked, qtbot
):
    viewer, widget, _ = spine_clicked
    panel, controller = widget.along_z, widget.controller
    spin = panel.stop_above.native
    spin.setFocus()
    QTest.keyClick(spin, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
    QTest.keyClicks(spin, "0.01")
    QTest.keyClick(spin, Qt.Key.Key_Return)
    assert controller.max_uncertainty == 0.01
    stops = []
    controller.events.propagated.connect(lambda event: stops.extend(event.stops))
    QTest.mouseClick(widget.propagate_button.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: bool(stops), timeout=WAIT)
    assert any("heads disagree" in stop and "> 0.01" in stop for stop in stops)
    qtbot.waitUntil(panel.canvas.isVisible, timeout=5_000)
    assert [line.get_ydata()[0] for line in panel.axes.get_lines()] == [0.01]  # the bound
    # 0 turns the bound off again
    QTest.keyClick(spin, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
    QTest.keyClicks(spin, "0")
    QTest.keyClick(spin, Qt.Key.Key_Return)
    assert controller.max_uncertainty is None and not panel.axes.get_lines()


def test_correcting_the_least_sure_slice_regrows_the_object_under_its_label(
    spine_clicked, qtbot
):
    """Propagate, then the button: a click at the object's centre on the least sure slice,
    its map and suggested clicks there; the A key answers the first, and Propagate grows the
    object again from its first seed and this slice, replacing it under the same label."""
    from napari_active_sam._widgets.layers import PROMPTS

    viewer, widget, _ = spine_clicked
    panel, controller = widget.along_z, widget.controller
    QTest.mouseClick(widget.propagate_button.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: viewer.layers[OUTPUT].data.any(), timeout=WAIT)
    qtbot.waitUntil(panel.canvas.isVisible, timeout=5_000)
    assert set(widget.controller.objects.seeds(1)) == {0}

    QTest.mouseClick(panel.worst_button.native, Qt.MouseButton.LeftButton)
    z = panel.least_sure
    assert viewer.dims.current_step[0] == z and controller.correcting == 1
    points = np.asarray(viewer.layers[PROMPTS].data)
    assert len(points) == 1 and points[0][0] == z
    assert (viewer.layers[OUTPUT].data[z][int(points[0][1]), int(points[0][2])]) == 1
    qtbot.waitUntil(lambda: controller.offer is not None and controller.offer.index == (z,)
                    and len(controller.suggestions) > 0, timeout=WAIT)  # fmt: skip
    offered = controller.suggestions[0]
    # The click refines the mask propagation left there: the box around it and the mask
    # itself (SAM's mask prompt) go with the click, as in the 3D benchmark's corrections.
    propagated = viewer.layers[OUTPUT].data[z] == 1
    first = viewer.layers["SAM preview"].data[z] > 0
    prompts = controller.current_prompts()
    asked = prompts.refining(propagated)
    assert asked.box is not None and asked.clicks == prompts.clicks
    refined = controller.session.decode((z,), asked, prior=propagated)
    assert np.array_equal(first, refined.mask(refining_head(refined, asked)))
    for other, prior in ((prompts, propagated), (prompts, None)):  # without the box; afresh
        answer = controller.session.decode((z,), other, prior=prior)
        head = refining_head(answer, other) if prior is not None else shown_head(answer, other)
        assert not np.array_equal(first, answer.mask(head))

    canvas = viewer.window._qt_viewer.canvas.native
    canvas.setFocus()
    QTest.keyClick(canvas, Qt.Key.Key_A)  # the first suggestion is inside
    qtbot.waitUntil(lambda: len(viewer.layers[PROMPTS].data) == 2, timeout=5_000)
    added = np.asarray(viewer.layers[PROMPTS].data)[-1]
    assert added[0] == z and (added[1], added[2]) == (offered.y, offered.x)
    qtbot.waitUntil(lambda: controller._shown == ((z,), controller.current_prompts()),
                    timeout=WAIT)  # fmt: skip
    shown = viewer.layers["SAM preview"].data[z] > 0

    QTest.mouseClick(widget.propagate_button.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: set(controller.objects.seeds(1)) == {0, z}, timeout=WAIT)
    labels = viewer.layers[OUTPUT].data
    assert labels.max() == 1  # the same object, replaced: not a second one
    assert np.array_equal(labels[z] == 1, shown)  # the corrected slice as the user saw it
    assert controller.correcting is None and not len(viewer.layers[PROMPTS].data)


def _correcting_the_least_sure_slice(widget, qtbot):
    """Propagate the clicked object, then *Correct the least sure slice*: its panel and the
    controller, correcting object 1."""
    panel, controller = widget.along_z, widget.controller
    QTest.mouseClick(widget.propagate_button.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(panel.canvas.isVisible, timeout=WAIT)
    QTest.mouseClick(panel.worst_button.native, Qt.MouseButton.LeftButton)
    assert controller.correcting == 1
    return panel, controller


def _correction_shown(viewer, widget, qtbot):
    """:func:`_correcting_the_least_sure_slice`, then the preview there once drawn: the
    panel, the controller, that slice and the mask shown on it."""
    panel, controller = _correcting_the_least_sure_slice(widget, qtbot)
    z = panel.least_sure
    qtbot.waitUntil(lambda: controller._shown == ((z,), controller.current_prompts()),
                    timeout=WAIT)  # fmt: skip
    return panel, controller, z, viewer.layers["SAM preview"].data[z] > 0


def test_clearing_the_slice_ends_a_correction_so_the_next_click_starts_afresh(spine_clicked,
                                                                                qtbot):
    """The X key on the canvas clears the correction's click: what follows on that slice
    (another object, say) no longer starts from the propagated mask."""
    from napari_active_sam._widgets.layers import PROMPTS

    viewer, widget, _ = spine_clicked
    panel, controller = _correcting_the_least_sure_slice(widget, qtbot)
    canvas = viewer.window._qt_viewer.canvas.native
    canvas.setFocus()
    QTest.keyClick(canvas, Qt.Key.Key_X)
    qtbot.waitUntil(lambda: not len(viewer.layers[PROMPTS].data), timeout=5_000)
    assert controller.correcting is None


def test_a_correction_with_clicks_on_other_slices_ends_when_the_last_are_cleared(
    spine_clicked, qtbot
):
    """X clears the slice on screen; the correction goes on while its clicks on another
    slice are left (Propagate would still regrow the object from them), and ends when
    those are cleared too."""
    from test_canvas_clicks import click

    from napari_active_sam._widgets.layers import PROMPTS

    viewer, widget, spine = spine_clicked
    panel, controller = _correcting_the_least_sure_slice(widget, qtbot)
    z = panel.least_sure
    k = next(int(s) for s in range(1, spine.shape[0]) if s != z and spine[s].any())
    viewer.dims.current_step = (k, 0, 0)
    rows, cols = np.nonzero(spine[k])
    click(viewer, float(np.median(rows)), float(np.median(cols)))
    qtbot.waitUntil(lambda: len(viewer.layers[PROMPTS].data) == 2, timeout=5_000)
    canvas = viewer.window._qt_viewer.canvas.native
    viewer.dims.current_step = (z, 0, 0)
    canvas.setFocus()
    QTest.keyClick(canvas, Qt.Key.Key_X)
    qtbot.waitUntil(lambda: len(viewer.layers[PROMPTS].data) == 1, timeout=5_000)
    assert controller.correcting == 1
    viewer.dims.current_step = (k, 0, 0)
    canvas.setFocus()
    QTest.keyClick(canvas, Qt.Key.Key_X)
    qtbot.waitUntil(lambda: not len(viewer.layers[PROMPTS].data), timeout=5_000)
    assert controller.correcting is None


def test_a_click_where_the_corrected_object_is_not_is_sized_by_its_nearest_slice(
    spine_clicked, qtbot
):
    """While an object is corrected, a click on a slice it is not on (there the user erased
    it) is asked with a box of the object's size on the nearest slice it is on, centred on
    the click, as the 3D benchmark's corrections are; Propagate brings the object back
    there under its label."""
    from test_canvas_clicks import click

    from napari_active_sam._widgets.layers import PROMPTS

    viewer, widget, spine = spine_clicked
    panel, controller = _correcting_the_least_sure_slice(widget, qtbot)
    output = viewer.layers[OUTPUT]
    grown = np.flatnonzero((output.data == 1).any(axis=(1, 2)))
    k = int(grown[-1]) if grown[-1] != panel.least_sure else int(grown[-2])
    erased = output.data[k] == 1
    rows, cols = np.nonzero(erased)
    output.data_setitem((np.full(rows.size, k), rows, cols), 0)  # the eraser's one step
    assert not (output.data[k] == 1).any()

    viewer.dims.current_step = (k, 0, 0)
    rows, cols = np.nonzero(spine[k])
    click(viewer, float(np.median(rows)), float(np.median(cols)))
    qtbot.waitUntil(lambda: len(controller.current_prompts().clicks) == 1, timeout=5_000)
    qtbot.waitUntil(lambda: controller._shown == ((k,), controller.current_prompts()),
                    timeout=WAIT)  # fmt: skip
    prompts = controller.current_prompts()
    object_ = output.data == 1
    nearest = k - 1 if object_[k - 1].any() else k + 1
    asked = prompts.placed(object_[nearest])
    (clicked,) = prompts.clicks
    x0, y0, x1, y1 = asked.box
    assert (x0 + x1) / 2 == clicked.x and (y0 + y1) / 2 == clicked.y
    preview = viewer.layers["SAM preview"].data[k] > 0
    placed = controller.session.decode((k,), asked)
    assert np.array_equal(preview, placed.mask(shown_head(placed, asked)))
    alone = controller.session.decode((k,), prompts)
    assert not np.array_equal(preview, alone.mask(shown_head(alone, prompts)))

    QTest.mouseClick(widget.propagate_button.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: (viewer.layers[OUTPUT].data[k] == 1).any(), timeout=WAIT)
    assert viewer.layers[OUTPUT].data.max() == 1  # the same object, not a second one
    assert controller.correcting is None and not len(viewer.layers[PROMPTS].data)


def test_a_click_on_another_slice_of_the_corrected_object_refines_its_mask_there(
    spine_clicked, qtbot
):
    """While an object is corrected, a click on another slice it is on refines its mask
    there (the box around it and the mask itself go with the click), as on the slice the
    correction started from and as the 3D benchmark's corrections do; Propagate seeds that
    slice with what was shown."""
    from test_canvas_clicks import click

    viewer, widget, spine = spine_clicked
    panel, controller = _correcting_the_least_sure_slice(widget, qtbot)
    output = viewer.layers[OUTPUT]
    grown = np.flatnonzero((output.data == 1).any(axis=(1, 2)))
    k = next(int(z) for z in grown[::-1] if z not in (0, panel.least_sure))
    propagated = output.data[k] == 1
    asked = []
    answer = controller.session.answer

    def recorded(index, prompts, *args, prior=None, **kwargs):
        asked.append((index, prompts, prior))
        return answer(index, prompts, *args, prior=prior, **kwargs)

    controller.session.answer = recorded
    viewer.dims.current_step = (k, 0, 0)
    rows, cols = np.nonzero(spine[k] & ~propagated)  # a part of the spine the mask missed
    assert rows.size
    click(viewer, float(rows[len(rows) // 2]), float(cols[len(cols) // 2]))
    qtbot.waitUntil(lambda: len(controller.current_prompts().clicks) == 1, timeout=5_000)
    qtbot.waitUntil(lambda: controller._shown == ((k,), controller.current_prompts()),
                    timeout=WAIT)  # fmt: skip
    prompts = controller.current_prompts()
    index, sent, prior = asked[-1]
    assert index == (k,) and sent == prompts.refining(propagated)
    assert sent.box is not None and np.array_equal(prior, propagated)
    shown = viewer.layers["SAM preview"].data[k] > 0

    QTest.mouseClick(widget.propagate_button.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: k in controller.objects.seeds(1), timeout=WAIT)
    assert np.array_equal(controller.objects.seeds(1)[k], shown)
    assert controller.correcting is None


def test_propagate_pressed_twice_while_regrowing_still_regrows_the_corrected_object(
    spine_clicked, qtbot
):
    """The second press cancels the first regrow and starts another: it still regrows the
    corrected object under its label, from its seeds and the correction (not a second
    object from the correction's click)."""
    from napari_active_sam._widgets.layers import PROMPTS

    viewer, widget, _ = spine_clicked
    panel, controller = _correcting_the_least_sure_slice(widget, qtbot)
    z = panel.least_sure
    qtbot.waitUntil(lambda: controller._shown == ((z,), controller.current_prompts()),
                    timeout=WAIT)  # fmt: skip
    button = widget.propagate_button.native
    QTest.mouseClick(button, Qt.MouseButton.LeftButton)
    assert controller.encoder is not None and controller.correcting == 1  # still regrowing
    QTest.mouseClick(button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: set(controller.objects.seeds(1)) == {0, z}, timeout=WAIT)
    qtbot.waitUntil(lambda: controller.correcting is None, timeout=WAIT)
    assert viewer.layers[OUTPUT].data.max() == 1 and not len(viewer.layers[PROMPTS].data)


def test_one_undo_takes_a_regrow_back_to_the_object_before_it(spine_clicked, qtbot):
    """The regrow replaces the object in one step: Ctrl+Z on the labels layer brings back
    the object as propagated before the correction (not an empty layer), and with it the
    seeds it grew from, so that the next regrow leaves the undone correction out; redone,
    the correction's seed is back."""
    viewer, widget, _ = spine_clicked
    panel, controller = _correcting_the_least_sure_slice(widget, qtbot)
    z = panel.least_sure
    before = viewer.layers[OUTPUT].data.copy()
    qtbot.waitUntil(lambda: controller._shown == ((z,), controller.current_prompts()),
                    timeout=WAIT)  # fmt: skip
    QTest.mouseClick(widget.propagate_button.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: set(controller.objects.seeds(1)) == {0, z}, timeout=WAIT)
    assert not np.array_equal(viewer.layers[OUTPUT].data, before)
    viewer.layers.selection.active = viewer.layers[OUTPUT]
    canvas = viewer.window._qt_viewer.canvas.native
    canvas.setFocus()
    QTest.keyClick(canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: np.array_equal(viewer.layers[OUTPUT].data, before), timeout=5_000)
    assert set(controller.objects.seeds(1)) == {0}
    QTest.keyClick(canvas, Qt.Key.Key_Z,
                   Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    qtbot.waitUntil(lambda: not np.array_equal(viewer.layers[OUTPUT].data, before),
                    timeout=5_000)  # fmt: skip
    assert set(controller.objects.seeds(1)) == {0, z}


def test_removing_the_labels_layer_ends_the_correction_and_c_commits_into_a_new_one(
    spine_clicked, qtbot
):
    """Deleting the labels layer while an object is corrected ends the correction (its
    object is gone); C then commits the slice shown into a new labels layer, as object 1."""
    from napari_active_sam._widgets.layers import PROMPTS

    viewer, widget, _ = spine_clicked
    panel, controller, z, shown = _correction_shown(viewer, widget, qtbot)
    viewer.layers.remove(OUTPUT)
    assert controller.correcting is None and not controller.objects.seeds(1)
    assert not panel.worst_button.enabled and not panel.canvas.isVisible()  # its object is gone
    canvas = viewer.window._qt_viewer.canvas.native
    viewer.layers.selection.active = viewer.layers[PROMPTS]
    canvas.setFocus()
    QTest.keyClick(canvas, Qt.Key.Key_C)
    qtbot.waitUntil(lambda: OUTPUT in viewer.layers, timeout=5_000)
    labels = viewer.layers[OUTPUT].data
    assert np.array_equal(labels[z] == 1, shown) and labels.max() == 1


def test_every_slice_seeds_with_the_mask_shown_there_not_only_the_one_on_screen(
    spine_clicked, qtbot
):
    """Two clicks on the first slice are answered click by click (the second refines the
    first's answer); moved to another slice, Propagate seeds the first with the mask shown
    there, which SAM asked afresh with both clicks would not give."""
    from test_canvas_clicks import click

    from napari_active_sam._widgets.layers import PREVIEW

    viewer, widget, spine = spine_clicked
    controller = widget.controller
    qtbot.waitUntil(lambda: controller._shown == ((0,), controller.current_prompts()),
                    timeout=WAIT)  # fmt: skip
    rows, cols = np.nonzero(spine[0])
    far = int(np.argmax(rows))  # the spine's lowest pixel, far from the first click
    click(viewer, float(rows[far]), float(cols[far]))
    qtbot.waitUntil(lambda: len(controller.current_prompts().clicks) == 2, timeout=5_000)
    qtbot.waitUntil(lambda: controller._shown == ((0,), controller.current_prompts()),
                    timeout=WAIT)  # fmt: skip
    shown = viewer.layers[PREVIEW].data[0] > 0
    prompts = controller.current_prompts()
    afresh = controller.session.decode((0,), prompts)
    assert not np.array_equal(shown, afresh.mask(0))  # click by click is not afresh

    viewer.dims.current_step = (5, 0, 0)
    QTest.mouseClick(widget.propagate_button.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: bool(controller.objects.seeds(1)), timeout=WAIT)
    assert np.array_equal(controller.objects.seeds(1)[0], shown)


def test_c_during_a_correction_commits_the_slice_as_an_object_of_its_own_whole(
    spine_clicked, qtbot
):
    """C on the slice being corrected commits its mask as a new object, taking the pixels it
    covers there from the corrected object (made from that object's mask, it overlaps it):
    the whole mask shown, not the sliver outside object 1."""
    viewer, widget, _ = spine_clicked
    panel, controller, z, shown = _correction_shown(viewer, widget, qtbot)
    before = viewer.layers[OUTPUT].data.copy()
    assert (shown & (before[z] == 1)).any()  # it overlaps object 1 there
    canvas = viewer.window._qt_viewer.canvas.native
    canvas.setFocus()
    QTest.keyClick(canvas, Qt.Key.Key_C)
    qtbot.waitUntil(lambda: viewer.layers[OUTPUT].data.max() == 2, timeout=5_000)
    labels = viewer.layers[OUTPUT].data
    assert np.array_equal(labels[z] == 2, shown)
    assert np.array_equal(labels[z] == 1, (before[z] == 1) & ~shown)
    others = np.arange(len(labels)) != z
    assert np.array_equal(labels[others], before[others])  # object 1 elsewhere as it was
    assert controller.correcting is None


def _erase_far_from_the_click(viewer, z: int) -> tuple[np.ndarray, np.ndarray]:
    """Erase, with the labels layer's eraser (a real mouse press on the canvas), the part of
    object 1 on slice ``z`` furthest from the click there; its mask before and after."""
    from test_canvas_clicks import click

    output = viewer.layers[OUTPUT]
    before = output.data[z] == 1
    (row, col) = np.asarray(viewer.layers["SAM prompts"].data)[0][1:]
    rows, cols = np.nonzero(before)
    far = np.argmax(np.hypot(rows - row, cols - col))  # the object's pixel furthest away
    viewer.layers.selection.active = output
    output.mode, output.brush_size = "erase", 15
    click(viewer, float(rows[far]), float(cols[far]))
    edited = output.data[z] == 1
    assert edited.sum() < before.sum()  # the stroke erased a part of the object
    return before, edited


def test_erasing_the_corrected_object_under_its_clicks_asks_the_preview_again(spine_clicked,
                                                                             qtbot):  # fmt: skip
    """While an object is corrected, the clicks on a slice refine its mask there. The user
    erases part of that mask with the labels layer's eraser (a real mouse press on the
    canvas): the preview is asked again from the mask as it now is, and Propagate seeds the
    slice with that preview, not the one made before the edit."""
    viewer, widget, _ = spine_clicked
    panel, controller, z, first = _correction_shown(viewer, widget, qtbot)
    _, edited = _erase_far_from_the_click(viewer, z)
    qtbot.waitUntil(lambda: controller._previewed[(z,)].prior is not None
                    and np.array_equal(controller._previewed[(z,)].prior, edited),
                    timeout=WAIT)  # fmt: skip
    prompts = controller.current_prompts()
    asked = prompts.refining(edited)
    again = controller.session.decode((z,), asked, prior=edited)
    shown = viewer.layers["SAM preview"].data[z] > 0
    assert np.array_equal(shown, again.mask(refining_head(again, asked)))
    assert not np.array_equal(shown, first)  # the edit changed what is shown

    QTest.mouseClick(widget.propagate_button.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: controller.correcting is None, timeout=WAIT)  # regrown
    assert np.array_equal(controller.objects.seeds(1)[z], shown)


def test_undoing_an_edit_of_the_corrected_object_asks_the_preview_again(spine_clicked, qtbot):
    """An eraser stroke on the corrected object, then Ctrl+Z pressed on the canvas (napari's
    undo, which announces no paint): the preview is asked again from the mask as it was
    before the stroke, not left showing the answer to the erased one."""
    viewer, widget, _ = spine_clicked
    panel, controller, z, _ = _correction_shown(viewer, widget, qtbot)
    output = viewer.layers[OUTPUT]
    before, edited = _erase_far_from_the_click(viewer, z)
    qtbot.waitUntil(lambda: np.array_equal(controller._previewed[(z,)].prior, edited),
                    timeout=WAIT)  # fmt: skip

    canvas = viewer.window._qt_viewer.canvas.native
    canvas.setFocus()
    QTest.keyClick(canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert np.array_equal(output.data[z] == 1, before)  # the stroke is undone
    qtbot.waitUntil(lambda: np.array_equal(controller._previewed[(z,)].prior, before),
                    timeout=WAIT)  # fmt: skip
    prompts = controller.current_prompts()
    asked = prompts.refining(before)
    again = controller.session.decode((z,), asked, prior=before)
    qtbot.waitUntil(lambda: controller._shown == ((z,), prompts), timeout=WAIT)
    shown = viewer.layers["SAM preview"].data[z] > 0
    assert np.array_equal(shown, again.mask(refining_head(again, asked)))


def _propagated(viewer, widget, qtbot):
    """Propagate the clicked spine and wait until it is committed as object 1."""
    from napari_active_sam._widgets.layers import PROMPTS

    QTest.mouseClick(widget.propagate_button.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: viewer.layers[OUTPUT].data.any()
                    and not len(viewer.layers[PROMPTS].data), timeout=WAIT)  # fmt: skip


def _propagating(widget):
    """Propagate pressed, the status lines said from then on recorded: ``(heard, the
    propagation's worker)``."""
    heard = []
    widget.controller.events.status.connect(lambda event: heard.append(event.message))
    QTest.mouseClick(widget.propagate_button.native, Qt.MouseButton.LeftButton)
    return heard, widget.controller.encoder


def test_removing_the_labels_layer_while_the_object_grows_writes_nothing_and_keeps_clicks(
    spine_clicked, qtbot
):
    """The labels layer deleted while propagation runs: the grown object has nowhere to
    go, so nothing is written (no error, no object in a layer made later) and the clicks
    stay for the next Propagate, which writes the object into a new labels layer."""
    from napari_active_sam._widgets.layers import PROMPTS

    viewer, widget, spine = spine_clicked
    heard, worker = _propagating(widget)
    viewer.layers.remove(OUTPUT)  # before the worker's result reaches the GUI thread
    qtbot.waitUntil(lambda: any("nothing was written" in m for m in heard), timeout=WAIT)
    assert not worker.is_running and OUTPUT not in viewer.layers
    assert len(viewer.layers[PROMPTS].data) == 1

    _propagated(viewer, widget, qtbot)
    grown = viewer.layers[OUTPUT].data == 1
    assert grown[0].any() and (grown & spine).sum() / (grown | spine).sum() > 0.5


def test_cancelling_propagation_says_so_writes_nothing_and_keeps_the_clicks(
    spine_clicked, qtbot
):
    from napari_active_sam._widgets.layers import PROMPTS

    viewer, widget, _ = spine_clicked
    heard, worker = _propagating(widget)
    assert widget.cancel.enabled
    QTest.mouseClick(widget.cancel.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: any("propagation was cancelled" in m for m in heard), timeout=WAIT)
    qtbot.waitUntil(lambda: not worker.is_running, timeout=WAIT)
    assert not viewer.layers[OUTPUT].data.any() and not widget.cancel.enabled
    assert len(viewer.layers[PROMPTS].data) == 1


def test_an_object_grown_onto_other_objects_only_writes_nothing_and_says_so(
    spine_clicked, qtbot
):
    from napari_active_sam._widgets.layers import PROMPTS

    viewer, widget, _ = spine_clicked
    viewer.layers[OUTPUT].data[:] = 9  # one object fills the volume
    heard, _ = _propagating(widget)
    qtbot.waitUntil(lambda: any("the grown object lies on objects" in m for m in heard),
                    timeout=WAIT)  # fmt: skip
    assert set(np.unique(viewer.layers[OUTPUT].data)) == {9}
    assert len(viewer.layers[PROMPTS].data) == 1


def test_propagate_after_the_labels_layer_was_removed_seeds_with_the_mask_shown(
    spine_clicked, qtbot
):
    """The labels layer removed after the preview was drawn: Propagate makes a new one and
    seeds with the mask still on screen (not with an emptied preview)."""
    viewer, widget, _ = spine_clicked
    controller = widget.controller
    qtbot.waitUntil(lambda: controller._shown == ((0,), controller.current_prompts()),
                    timeout=WAIT)  # fmt: skip
    shown = viewer.layers["SAM preview"].data[0] > 0
    assert shown.any()
    viewer.layers.remove(OUTPUT)
    _propagated(viewer, widget, qtbot)
    assert np.array_equal(viewer.layers[OUTPUT].data[0] == 1, shown)
    assert len(np.flatnonzero(viewer.layers[OUTPUT].data.any(axis=(1, 2)))) > 1


def test_correcting_is_refused_while_another_objects_clicks_wait(spine_clicked, qtbot):
    """Clicks of a new object on another slice, not committed: *Correct the least sure
    slice* says to commit or clear them first, instead of taking them into the object."""
    from test_canvas_clicks import click

    from napari_active_sam._widgets.layers import PROMPTS

    viewer, widget, spine = spine_clicked
    panel, controller = widget.along_z, widget.controller
    _propagated(viewer, widget, qtbot)
    qtbot.waitUntil(lambda: panel.worst_button.enabled, timeout=5_000)
    k = next(z for z in range(spine.shape[0]) if z != panel.least_sure)
    viewer.dims.current_step = (k, 0, 0)
    click(viewer, 30.0, 30.0)  # far from the spine: another object
    qtbot.waitUntil(lambda: len(viewer.layers[PROMPTS].data) == 1, timeout=5_000)
    heard = []
    controller.events.status.connect(lambda event: heard.append(event.message))
    QTest.mouseClick(panel.worst_button.native, Qt.MouseButton.LeftButton)
    assert controller.correcting is None and viewer.dims.current_step[0] == k
    assert np.asarray(viewer.layers[PROMPTS].data)[:, 0].tolist() == [k]


def test_a_regrow_keeps_what_the_user_erased_on_a_slice_without_clicks(spine_clicked, qtbot):
    """During a correction the user erases part of the object on another slice, one with
    no clicks: the regrow seeds that slice with the object as the user left it."""
    from test_canvas_clicks import click

    viewer, widget, _ = spine_clicked
    panel, controller, z, _ = _correction_shown(viewer, widget, qtbot)
    output = viewer.layers[OUTPUT]
    on = np.flatnonzero((output.data == 1).any(axis=(1, 2)))
    k = next(int(s) for s in on if s not in (0, z))
    rows, cols = np.nonzero(output.data[k] == 1)
    viewer.dims.current_step = (k, 0, 0)
    viewer.layers.selection.active = output
    output.mode, output.brush_size = "erase", 9
    click(viewer, float(rows.min()), float(np.median(cols)))
    edited = output.data[k] == 1
    assert 0 < edited.sum() < len(rows)
    viewer.dims.current_step = (z, 0, 0)
    QTest.mouseClick(widget.propagate_button.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: controller.correcting is None, timeout=WAIT)  # regrown
    assert np.array_equal(output.data[k] == 1, edited)
    assert set(controller.objects.seeds(1)) == {0, z, k}


def test_keys_and_propagate_make_the_prompts_layer_again_if_it_was_removed(spine_clicked,
                                                                          qtbot):  # fmt: skip
    """The prompts layer deleted: C in the labels layer commits the mask on screen, X and
    Propagate work (the clicks went with the layer: nothing to clear or grow), and each
    brings the layer back."""
    from napari_active_sam._widgets.layers import PROMPTS

    viewer, widget, _ = spine_clicked
    controller = widget.controller
    qtbot.waitUntil(lambda: controller._shown == ((0,), controller.current_prompts()),
                    timeout=WAIT)  # fmt: skip
    shown = viewer.layers["SAM preview"].data[0] > 0
    canvas = viewer.window._qt_viewer.canvas.native
    for key in (Qt.Key.Key_C, Qt.Key.Key_X):
        viewer.layers.remove(PROMPTS)
        viewer.layers.selection.active = viewer.layers[OUTPUT]
        canvas.setFocus()
        QTest.keyClick(canvas, key)
        assert PROMPTS in viewer.layers and not len(viewer.layers[PROMPTS].data)
    assert np.array_equal(viewer.layers[OUTPUT].data[0] == 1, shown)
    viewer.layers.remove(PROMPTS)
    QTest.mouseClick(widget.propagate_button.native, Qt.MouseButton.LeftButton)
    assert PROMPTS in viewer.layers and viewer.layers[OUTPUT].data.max() == 1


def test_a_new_image_forgets_the_last_propagation_of_the_one_before(spine_clicked, qtbot):
    """Switching the dock to another image of the same shape: the along-z report and the
    object's seeds belonged to the first image, so they go."""
    viewer, widget, _ = spine_clicked
    panel, controller = widget.along_z, widget.controller
    _propagated(viewer, widget, qtbot)
    qtbot.waitUntil(lambda: panel.worst_button.enabled, timeout=5_000)
    assert controller.objects.seeds(1)
    ct = viewer.layers["ct"]
    other = viewer.add_image(np.asarray(ct.data)[::-1].copy(), name="ct reversed")
    widget.image.value = other
    qtbot.waitUntil(lambda: controller.session is not None
                    and controller.session.source.data is other.data, timeout=WAIT)  # fmt: skip
    assert not panel.worst_button.enabled and not panel.slices
    assert not controller.objects.seeds(1)
