"""The dock's adaptation panel in a real viewer: the real button, the real model switch."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtTest import QTest

from napari_active_sam._widgets.adapt import ADAPTED, BASE
from napari_active_sam._widgets.dock import ActiveSamWidget
from napari_active_sam._widgets.layers import CANDIDATES, OUTPUT, PREVIEW
from napari_active_sam._widgets.models import LOCAL_FILE
from napari_active_sam.core.active.bayes_head import HEAD
from napari_active_sam.core.adapt.adapter import ADAPTER, Adapter

WAIT = 300_000  # ms: fine-tuning and a head fit on a 2-core CPU, other work beside them


def docked(viewer, qtbot, image, checkpoint=None) -> ActiveSamWidget:
    """The dock on ``image`` with the model of ``checkpoint`` (the bundled demo model if
    None), its slice encoded. Adapting the tiny random model never raises its held-out IoU;
    adapting the demo model on :func:`squares_image` does."""
    viewer.add_image(image, name="img")
    widget = ActiveSamWidget(viewer)
    viewer.window.add_dock_widget(widget)
    if checkpoint is not None:
        widget.model_name.value = LOCAL_FILE
        widget.checkpoint.value = checkpoint
    qtbot.waitUntil(lambda: widget.session is not None, timeout=WAIT)
    qtbot.waitUntil(lambda: widget.session.is_encoded(()), timeout=WAIT)
    return widget


BOXES = [(10, 40, 10, 40), (60, 100, 20, 50), (20, 50, 70, 110), (80, 115, 80, 120)]
"""Squares of :func:`squares_image`, as (top, bottom, left, right)."""


def squares_image() -> np.ndarray:
    """Four bright squares (:data:`BOXES`) on a 128 × 128 black image."""
    image = np.zeros((128, 128), np.float32)
    for r0, r1, c0, c1 in BOXES:
        image[r0:r1, c0:c1] = 1
    return image


CENTRES = [(40, 40), (40, 200), (120, 120), (200, 60), (210, 210), (120, 30)]
"""Discs of :func:`discs_dock`."""


def discs_dock(viewer, qtbot, committed: int, seed: int = 2) -> ActiveSamWidget:
    """The dock with the bundled demo model on bright discs at :data:`CENTRES`, the first
    ``committed`` of them committed."""
    rows, cols = np.mgrid[:256, :256]
    image = np.random.default_rng(seed).normal(0.15, 0.02, (256, 256)).astype(np.float32)
    for r, c in CENTRES:
        image[(rows - r) ** 2 + (cols - c) ** 2 < 13**2] = 0.85
    viewer.add_image(image, name="discs")
    widget = ActiveSamWidget(viewer)
    viewer.window.add_dock_widget(widget)
    qtbot.waitUntil(lambda: widget.session is not None, timeout=WAIT)
    qtbot.waitUntil(lambda: widget.session.is_encoded(()), timeout=WAIT)
    for r, c in CENTRES[:committed]:
        viewer.layers[PREVIEW].data[(rows - r) ** 2 + (cols - c) ** 2 < 13**2] = 1
        widget.commit()
    return widget


def test_adapting_to_committed_objects_switches_and_switches_back(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    monkeypatch.setenv("NAPARI_ACTIVE_SAM_CACHE", str(tmp_path / "cache"))
    viewer = make_napari_viewer()
    widget = docked(viewer, qtbot, squares_image())
    base = widget.session.model
    panel = widget.adapt_panel
    assert panel.decode_with.choices == (BASE,)

    # One object is not enough: the panel says what to do and nothing runs.
    preview = viewer.layers[PREVIEW]
    r0, r1, c0, c1 = BOXES[0]
    preview.data[r0:r1, c0:c1] = 1
    widget.commit()
    QTest.mouseClick(panel.adapt_button.native, Qt.MouseButton.LeftButton)
    assert not widget.controller.adaptation.running and widget.session.model is base

    for r0, r1, c0, c1 in BOXES[1:]:
        preview.data[r0:r1, c0:c1] = 1
        widget.commit()
    committed = viewer.layers[OUTPUT].data.copy()
    QTest.mouseClick(panel.adapt_button.native, Qt.MouseButton.LeftButton)
    assert widget.controller.adaptation.running
    qtbot.waitUntil(lambda: panel.decode_with.value == ADAPTED, timeout=WAIT)

    adapted = widget.session.model
    assert adapted.model_id != base.model_id and adapted.encoder_id == base.encoder_id
    assert "mean IoU after one click" in panel.result.value
    assert "you did not train on" in panel.result.value
    assert widget.session.is_encoded(())  # the embeddings were kept
    assert Adapter.load(ADAPTER.users(base.model_id), base).apply(base).model_id == adapted.model_id
    assert HEAD.users(adapted.model_id).is_file()  # a head fitted for the adapted model
    assert widget.session.head is not None and widget.session.head.model_id == adapted.model_id
    np.testing.assert_array_equal(viewer.layers[OUTPUT].data, committed)  # nothing changed

    # A click decodes with the adapted model.
    widget.add_click(25.0, 25.0)
    qtbot.waitUntil(lambda: not widget.controller.decoding and preview.data.any(), timeout=WAIT)

    # Back to the base model with a key press in the switch.
    panel.decode_with.native.setFocus()
    QTest.keyClick(panel.decode_with.native, Qt.Key.Key_Up)
    assert panel.decode_with.value == BASE
    assert widget.session.model is base and not widget.controller.adaptation.using_adapted
    assert widget.session.judge == widget.controller.quality.judge
    assert widget.controller.quality.model is base
    QTest.keyClick(panel.decode_with.native, Qt.Key.Key_Down)
    assert widget.session.model is adapted
    assert widget.session.judge == widget.controller.quality.judge
    assert widget.controller.quality.model is adapted

    # A new session on the same model finds the adapter it saved and offers it.
    widget.window.value = "soft_tissue"
    qtbot.waitUntil(lambda: widget.session is not None and widget.session.model is not adapted
                    and "earlier adaptation" in panel.result.value, timeout=WAIT)  # fmt: skip
    assert panel.decode_with.value == BASE and widget.session.model.model_id == base.model_id
    panel.decode_with.native.setFocus()
    QTest.keyClick(panel.decode_with.native, Qt.Key.Key_Down)
    assert widget.session.model.model_id == adapted.model_id
    assert widget.session.head is not None and widget.session.head.model_id == adapted.model_id


def test_an_adaptation_that_helped_nothing_keeps_the_model_and_saves_nothing(
    make_napari_viewer, qtbot, tiny_checkpoint, tmp_path, monkeypatch
):
    """No training step raises the tiny random model's held-out IoU: the dock says so,
    keeps decoding with the base model and writes no adapter that would replace one that
    helped."""
    monkeypatch.setenv("NAPARI_ACTIVE_SAM_CACHE", str(tmp_path / "cache"))
    viewer = make_napari_viewer()
    widget = docked(viewer, qtbot, squares_image(), tiny_checkpoint)
    base = widget.session.model
    panel = widget.adapt_panel
    for r0, r1, c0, c1 in BOXES:
        viewer.layers[PREVIEW].data[r0:r1, c0:c1] = 1
        widget.commit()
    QTest.mouseClick(panel.adapt_button.native, Qt.MouseButton.LeftButton)
    assert widget.controller.adaptation.running
    qtbot.waitUntil(lambda: not widget.controller.adaptation.running, timeout=WAIT)
    assert "nothing was saved" in panel.result.value
    assert "mean IoU after one click" in panel.result.value
    assert panel.decode_with.choices == (BASE,) and widget.session.model is base
    assert not ADAPTER.users(base.model_id).exists()
    assert not list((tmp_path / "cache").rglob("*.head.pt"))


def test_cancelling_an_adaptation_keeps_the_base_model_and_writes_nothing(
    make_napari_viewer, qtbot, tiny_checkpoint, tmp_path, monkeypatch
):
    monkeypatch.setenv("NAPARI_ACTIVE_SAM_CACHE", str(tmp_path / "cache"))
    image = np.zeros((128, 128), np.float32)
    viewer = make_napari_viewer()
    widget = docked(viewer, qtbot, image, tiny_checkpoint)
    base = widget.session.model
    preview = viewer.layers[PREVIEW]
    for r0, c0 in [(10, 10), (60, 20), (20, 70), (80, 80)]:
        preview.data[r0 : r0 + 30, c0 : c0 + 30] = 1
        widget.commit()
    QTest.mouseClick(widget.adapt_panel.adapt_button.native, Qt.MouseButton.LeftButton)
    assert widget.controller.adaptation.running
    qtbot.waitUntil(lambda: widget.cancel.enabled, timeout=WAIT)
    QTest.mouseClick(widget.cancel.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not widget.controller.adaptation.running, timeout=WAIT)
    assert widget.session.model is base
    assert widget.adapt_panel.decode_with.value == BASE
    assert not ADAPTER.users(base.model_id).exists()
    assert not [f for f in (tmp_path / "cache").rglob("*") if "partial" in f.name]


def test_objects_like_mine_are_found_and_accepted_with_real_clicks(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = discs_dock(viewer, qtbot, committed=2)
    output = viewer.layers[OUTPUT]
    centres = CENTRES
    panel = widget.adapt_panel
    assert not panel.accept_button.enabled
    QTest.mouseClick(panel.find_button.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.accept_button.enabled, timeout=WAIT)
    candidates = viewer.layers[CANDIDATES]
    found = {int(candidates.data[r, c]) > 0 for r, c in centres[2:]}
    assert True in found  # at least one of the other discs is on offer
    assert not (candidates.data[output.data > 0]).any()  # never over a committed object

    spin = panel.accept_above.native
    spin.setFocus()
    spin.selectAll()
    QTest.keyClicks(spin, "0")
    QTest.keyClick(spin, Qt.Key.Key_Return)
    assert panel.accept_above.value == 0.0
    before = len(np.unique(output.data)) - 1
    QTest.mouseClick(panel.accept_button.native, Qt.MouseButton.LeftButton)
    after = len(np.unique(output.data)) - 1
    assert after > before and not panel.accept_button.enabled
    output.undo()  # each accepted object is an undo step of its own
    assert len(np.unique(output.data)) - 1 == after - 1


def test_adapting_with_candidates_on_offer_aligns_on_them(make_napari_viewer, qtbot, tmp_path,
                                                          monkeypatch):  # fmt: skip
    monkeypatch.setenv("NAPARI_ACTIVE_SAM_CACHE", str(tmp_path / "cache"))
    widget = discs_dock(make_napari_viewer(), qtbot, committed=3, seed=5)
    panel = widget.adapt_panel
    QTest.mouseClick(panel.find_button.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.accept_button.enabled, timeout=WAIT)
    QTest.mouseClick(panel.adapt_button.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.decode_with.value == ADAPTED, timeout=WAIT)
    adaptation = widget.controller.adaptation.adaptation
    assert adaptation.aligned > 0 and "aligned on" in panel.result.value
    report = Adapter.load(ADAPTER.users(adaptation.model.extra["base_model_id"])).report
    assert report["preferences"] == adaptation.aligned and report["ranked_by"] == "a ranker"


def test_candidates_are_answered_one_by_one_with_keys_on_the_canvas(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    widget = discs_dock(viewer, qtbot, committed=2)
    output = viewer.layers[OUTPUT]
    panel = widget.adapt_panel
    QTest.mouseClick(panel.find_button.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.accept_button.enabled, timeout=WAIT)
    objects = widget.controller.objects
    offered = len(objects.candidates[1])
    assert offered >= 2 and "A = accept" in widget.hint.value
    canvas = viewer.window._qt_viewer.canvas.native
    canvas.setFocus()

    first = objects.candidates[1][0]
    QTest.keyClick(canvas, Qt.Key.Key_S)  # pass over: it goes last
    assert objects.candidates[1][-1] is first and len(objects.candidates[1]) == offered
    second = objects.candidates[1][0]
    QTest.keyClick(canvas, Qt.Key.Key_D)  # reject: gone, nothing committed
    assert second not in objects.candidates[1] and output.data.max() == 2
    third = objects.candidates[1][0]
    QTest.keyClick(canvas, Qt.Key.Key_A)  # accept: committed as the next object
    assert output.data.max() == 3
    assert ((output.data == 3) & third.mask).sum() == (output.data == 3).sum() > 0
    left = objects.candidates[1] if objects.candidates else []
    assert third not in left and len(left) == offered - 2


def test_a_click_takes_the_keys_from_the_candidates_and_a_removed_labels_layer_ends_them(
    make_napari_viewer, qtbot
):
    """Objects like mine on offer, then a click of the user's own: A answers that click's
    first suggestion, not the candidate. The labels layer removed: the candidates go with
    it, and A commits nothing."""
    from test_canvas_clicks import click

    from napari_active_sam._widgets.layers import PROMPTS

    viewer = make_napari_viewer(show=True)
    widget = discs_dock(viewer, qtbot, committed=2)
    controller = widget.controller
    output, objects = viewer.layers[OUTPUT], controller.objects
    QTest.mouseClick(widget.adapt_panel.find_button.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: objects.candidates is not None, timeout=WAIT)
    offered = len(objects.candidates[1])
    viewer.layers.selection.active = viewer.layers[PROMPTS]
    click(viewer, *CENTRES[2])
    qtbot.waitUntil(lambda: bool(controller.suggestions), timeout=WAIT)
    suggested = controller.suggestions[0]
    canvas = viewer.window._qt_viewer.canvas.native
    canvas.setFocus()
    QTest.keyClick(canvas, Qt.Key.Key_A)
    clicks = np.asarray(viewer.layers[PROMPTS].data)
    assert len(clicks) == 2 and tuple(clicks[-1]) == (suggested.y, suggested.x)
    assert output.data.max() == 2 and len(objects.candidates[1]) == offered
    assert "A = accept" not in widget.hint.value  # the hint says what A answers
    QTest.keyClick(canvas, Qt.Key.Key_X)  # the clicks cleared: the keys answer candidates
    assert not len(viewer.layers[PROMPTS].data) and "A = accept" in widget.hint.value

    viewer.layers.remove(OUTPUT)
    assert objects.candidates is None and CANDIDATES not in viewer.layers
    canvas.setFocus()
    QTest.keyClick(canvas, Qt.Key.Key_A)  # a suggestion again, if any: never a candidate
    assert OUTPUT not in viewer.layers or not viewer.layers[OUTPUT].data.any()


def test_adapting_while_the_volume_encodes_loses_neither(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    monkeypatch.setenv("NAPARI_ACTIVE_SAM_CACHE", str(tmp_path / "cache"))
    volume = np.random.default_rng(0).normal(0.1, 0.02, (40, 128, 128)).astype(np.float32)
    for r0, r1, c0, c1 in BOXES:
        volume[:, r0:r1, c0:c1] = 1
    viewer = make_napari_viewer()
    viewer.add_image(volume, name="vol")
    widget = ActiveSamWidget(viewer)  # the demo model: adapting it on squares helps
    viewer.window.add_dock_widget(widget)
    qtbot.waitUntil(lambda: widget.session is not None, timeout=WAIT)
    here = widget.current_index()  # the slice on screen is encoded first
    qtbot.waitUntil(lambda: widget.session.is_encoded(here), timeout=WAIT)
    preview = viewer.layers[PREVIEW]
    for r0, r1, c0, c1 in BOXES:
        preview.data[here][r0:r1, c0:c1] = 1
        widget.commit()
    encoding = widget.controller.encoder
    QTest.mouseClick(widget.adapt_panel.adapt_button.native, Qt.MouseButton.LeftButton)
    assert widget.controller.adaptation.running
    assert encoding is not None and encoding.is_running  # both run: neither waits on a lock
    qtbot.waitUntil(lambda: widget.adapt_panel.decode_with.value == ADAPTED, timeout=WAIT)
    qtbot.waitUntil(lambda: all(widget.session.is_encoded((z,)) for z in range(40)),
                    timeout=WAIT)  # fmt: skip
    assert widget.session.model.model_id != widget.controller.adaptation.base[0].model_id


def test_ranking_the_four_masks_with_number_keys_feeds_the_adaptation(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    monkeypatch.setenv("NAPARI_ACTIVE_SAM_CACHE", str(tmp_path / "cache"))
    viewer = make_napari_viewer(show=True)
    widget = discs_dock(viewer, qtbot, committed=3, seed=5)
    panel = widget.adapt_panel
    QTest.mouseClick(panel.find_button.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.rank_button.enabled, timeout=WAIT)
    first = widget.controller.objects.candidates[1][0]
    QTest.mouseClick(panel.rank_button.native, Qt.MouseButton.LeftButton)
    canvas = panel.ranking.canvas
    qtbot.waitUntil(canvas.isVisible, timeout=WAIT)
    shown = panel.ranking.candidates
    assert len(shown.masks) == 4 and shown.prompts == first.prompts
    for key in (Qt.Key.Key_2, Qt.Key.Key_2, Qt.Key.Key_1, Qt.Key.Key_4):  # a repeat is ignored
        QTest.keyClick(canvas, key)
    assert not canvas.isVisible()
    [(ranked, order)] = widget.controller.adaptation.ranked
    assert ranked is shown and order == (1, 0, 3, 2)
    assert widget.controller.objects.candidates[1][-1] is first  # the next one is offered
    QTest.mouseClick(panel.adapt_button.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.decode_with.value == ADAPTED, timeout=WAIT)
    report = Adapter.load(ADAPTER.users(widget.controller.adaptation.base[0].model_id)).report
    assert (shown.grid.amax(0) != shown.grid.amin(0)).any()  # the masks differ somewhere
    assert report["ranked_by"] == "a person" and report["preferences"] == 1


def test_a_head_learned_for_the_base_model_while_the_adapted_one_decodes_is_kept_for_it(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    """Learn pressed on the base model, then the adapted model chosen before the head
    arrives: the head is kept with the base model and decodes once it is chosen again."""
    monkeypatch.setenv("NAPARI_ACTIVE_SAM_CACHE", str(tmp_path / "cache"))
    viewer = make_napari_viewer()
    widget = docked(viewer, qtbot, squares_image())
    panel = widget.adapt_panel
    for r0, r1, c0, c1 in BOXES:
        viewer.layers[PREVIEW].data[r0:r1, c0:c1] = 1
        widget.commit()
    QTest.mouseClick(panel.adapt_button.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.decode_with.value == ADAPTED, timeout=WAIT)
    panel.decode_with.value = BASE
    base = widget.session.model
    learned = []
    widget.controller.events.learned.connect(lambda event: learned.append(event.head))
    QTest.mouseClick(widget.learn_button.native, Qt.MouseButton.LeftButton)
    panel.decode_with.value = ADAPTED  # while the head for the base model is learned
    qtbot.waitUntil(lambda: bool(learned), timeout=WAIT)
    assert learned[0].model_id == base.model_id != widget.session.model.model_id
    assert "for another model than the one decoding now" in widget.status.value
    panel.decode_with.value = BASE
    assert widget.session.model is base and widget.session.head is learned[0]
