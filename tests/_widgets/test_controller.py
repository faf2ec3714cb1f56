"""The annotation controller on its own, in a real viewer: no dock, only its events."""

from __future__ import annotations

import time

import numpy as np
import pytest

from napari_active_sam._widgets.controller import AnnotationController
from napari_active_sam._widgets.layers import OUTPUT, PREVIEW
from napari_active_sam._widgets.loading import ModelRequest
from napari_active_sam._widgets.models import LOCAL_FILE

WAIT = 60_000  # ms; encoder runs on a 2-core CPU


def _tiny(checkpoint) -> ModelRequest:
    return ModelRequest(LOCAL_FILE, LOCAL_FILE, checkpoint, "cpu")


def _record(controller, *names):
    """Every emission of the named events, as ``(name, event)`` in order."""
    heard = []
    for name in names:
        getattr(controller.events, name).connect(lambda event, n=name: heard.append((n, event)))
    return heard


@pytest.fixture
def ready(make_napari_viewer, qtbot, tiny_checkpoint):
    """A controller with a session on a 2D image, its slice encoded."""
    viewer = make_napari_viewer()
    image = viewer.add_image(np.random.default_rng(0).random((96, 96)).astype(np.float32))
    controller = AnnotationController(viewer)
    controller.start_session(image, _tiny(tiny_checkpoint), "percentile")
    qtbot.waitUntil(lambda: controller.session is not None, timeout=WAIT)
    qtbot.waitUntil(lambda: controller.session.is_encoded(()), timeout=WAIT)
    yield controller
    controller.close()


def test_the_latest_model_request_wins(make_napari_viewer, qtbot, tiny_checkpoint):
    viewer = make_napari_viewer()
    image = viewer.add_image(np.random.default_rng(0).random((64, 64)).astype(np.float32))
    controller = AnnotationController(viewer)
    heard = _record(controller, "session_ready", "acquisition")
    controller.start_session(image, ModelRequest("demo", "demo", None, "cpu"), "percentile")
    controller.start_session(image, _tiny(tiny_checkpoint), "percentile")  # before it loaded
    qtbot.waitUntil(lambda: controller.session is not None, timeout=WAIT)
    qtbot.waitUntil(lambda: not controller.workers.running, timeout=WAIT)  # both loads back
    assert [name for name, _ in heard] == ["acquisition", "session_ready"]
    assert controller.session.model.architecture.name == "tiny"
    assert controller.loader.model is controller.session.model  # kept for the next request
    assert heard[1][1].session is controller.session
    # The tiny model has no Bayesian head: BALD gave way to EIG, and the docks were told.
    assert heard[0][1].value == controller.acquisition == "eig"
    controller.close()


def test_a_newer_image_drops_the_read_of_the_older_one(ready, qtbot, tiny_checkpoint):
    controller = ready
    first = controller.image
    second = controller.viewer.add_image(np.ones((96, 96), np.float32), name="second")
    heard = _record(controller, "session_ready")
    controller.start_session(first, _tiny(tiny_checkpoint), "percentile")  # model loaded:
    controller.start_session(second, _tiny(tiny_checkpoint), "percentile")  # reads only
    qtbot.waitUntil(lambda: not controller.workers.running, timeout=WAIT)
    assert len(heard) == 1 and controller.session is heard[0][1].session
    assert np.array_equal(controller.session.source.data, second.data)


def test_the_latest_decode_request_wins(ready, qtbot):
    controller = ready
    heard = _record(controller, "answered")
    controller.add_click(40, 50)  # starts a decode
    controller.add_click(60, 20, positive=False)  # while it runs: queued
    controller.add_click(70, 30)  # replaces the queued request
    qtbot.waitUntil(lambda: not controller.decoding, timeout=WAIT)
    # Only the newest prompts were drawn; the answer to the first click was dropped unseen.
    assert len(heard) == 1
    answered = heard[0][1]
    assert answered.prompts == controller.current_prompts()
    assert [(c.y, c.x, c.positive) for c in answered.prompts.clicks] == [
        (40, 50, True), (60, 20, False), (70, 30, True)
    ]  # fmt: skip
    assert np.array_equal(controller.viewer.layers[PREVIEW].data > 0, answered.answer.mask)


def test_commit_writes_an_object_and_announces_it(ready):
    controller = ready
    heard = _record(controller, "committed", "status", "uncertain_slices")
    controller.viewer.layers[PREVIEW].data[10:20, 30:40] = 1
    assert controller.commit() == 1
    assert (controller.viewer.layers[OUTPUT].data == 1).sum() == 100
    names = [name for name, _ in heard]
    assert "committed" in names and heard[names.index("committed")][1].label == 1
    assert ("status", "committed object 1 (100 pixels)") in [
        (name, getattr(event, "message", None)) for name, event in heard
    ]
    assert heard[names.index("uncertain_slices")][1].ranked is None  # a 2D image


def test_encoding_is_cancellable_and_busy_says_so(make_napari_viewer, qtbot, tiny_checkpoint):
    viewer = make_napari_viewer()
    image = viewer.add_image(np.random.default_rng(0).random((40, 128, 128)).astype(np.float32))
    controller = AnnotationController(viewer)
    busy = _record(controller, "busy")
    controller.start_session(image, _tiny(tiny_checkpoint), "percentile")
    qtbot.waitUntil(lambda: controller.encoder is not None, timeout=WAIT)
    assert busy[-1][1].value is True
    worker = controller.encoder
    controller.cancel_all()
    assert busy[-1][1].value is False and controller.encoder is None
    qtbot.waitUntil(lambda: not worker.is_running, timeout=WAIT)
    assert sum(controller.session.is_encoded((z,)) for z in range(40)) < 40
    controller.close()


def test_a_closed_controller_starts_no_work(ready):
    controller = ready
    controller.close()  # what the dock's destruction does
    controller.add_click(40, 50)
    controller.request_decode()
    assert controller.encode_all() is None
    assert not controller.decoding and not controller.workers.running


@pytest.fixture
def demo_slowed(make_napari_viewer, qtbot):
    """A controller with the demo model on a generated ultrasound scene, encoded, whose
    answers each take half a second longer (so that the user can act while one runs), and
    the scene; ``made`` maps each answer drawn to the session that made it."""
    from napari_active_sam.core.data.scenes import make_scene

    scene = make_scene("ultrasound", np.random.default_rng(8), 256)
    viewer = make_napari_viewer()
    image = viewer.add_image(scene.image, name="us")
    controller = AnnotationController(viewer)
    made: dict[int, object] = {}

    def slowed(event) -> None:
        session, answer = event.session, event.session.answer

        def late(*args, **kwargs):
            time.sleep(0.5)
            found = answer(*args, **kwargs)
            made[id(found)] = session
            return found

        session.answer = late

    controller.events.session_ready.connect(slowed)
    controller.start_session(image, ModelRequest("demo", "demo", None, "cpu"), "percentile")
    qtbot.waitUntil(lambda: controller.session is not None, timeout=WAIT)
    qtbot.waitUntil(lambda: controller.session.is_encoded(()), timeout=WAIT)
    yield controller, scene, made
    controller.close()


def _inside(scene, label: int) -> tuple[float, float]:
    rows, cols = np.nonzero(scene.labels == label)
    return float(np.median(rows)), float(np.median(cols))


def test_c_for_clicks_taken_back_commits_nothing_later(demo_slowed, qtbot):
    """C before the preview caught up, then X: the commit waiting for that preview is
    dropped, so the next object's first answer is shown, not committed."""
    controller, scene, _ = demo_slowed
    controller.add_click(*_inside(scene, 1))
    assert controller.commit() is None  # "committing when the mask is up to date"
    controller.clear_prompts()
    qtbot.waitUntil(lambda: not controller.decoding, timeout=WAIT)
    controller.add_click(*_inside(scene, 2))
    qtbot.waitUntil(lambda: controller._shown == ((), controller.current_prompts()),
                    timeout=WAIT)  # fmt: skip
    assert controller.viewer.layers[PREVIEW].data.any()
    assert not controller.viewer.layers[OUTPUT].data.any()
    assert len(controller.viewer.layers["SAM prompts"].data) == 1


def test_an_answer_from_before_a_new_window_is_not_drawn(demo_slowed, qtbot):
    """Another intensity window chosen while a click is decoded: the answer on the old
    window is dropped and the click is decoded again on the new one."""
    controller, scene, made = demo_slowed
    old = controller.session
    heard = _record(controller, "answered")
    controller.add_click(*_inside(scene, 1))
    qtbot.wait(100)
    assert controller.decoding
    controller.start_session(controller.image, ModelRequest("demo", "demo", None, "cpu"),
                             "bone")  # fmt: skip
    qtbot.waitUntil(lambda: controller.session is not None and controller.session is not old,
                    timeout=WAIT)  # fmt: skip
    qtbot.waitUntil(lambda: bool(heard) and made.get(id(heard[-1][1].answer)) is controller.session,
                    timeout=WAIT)  # fmt: skip
    assert all(made[id(event.answer)] is controller.session for _, event in heard)


def test_a_new_head_redraws_the_map_of_a_click_being_decoded(demo_slowed, qtbot):
    """A Bayesian head learned while a click is decoded: the click is decoded again, so
    the map shown is the new head's."""
    controller, scene, made = demo_slowed
    heard = _record(controller, "answered")
    controller.add_click(*_inside(scene, 1))
    qtbot.wait(100)
    before = len(made)
    controller.events.learned(head=controller.session.head, saved="")
    qtbot.waitUntil(lambda: len(made) == before + 2 and not controller.decoding,
                    timeout=WAIT)  # fmt: skip
    assert len(heard) == 1 and made[id(heard[0][1].answer)] is controller.session
