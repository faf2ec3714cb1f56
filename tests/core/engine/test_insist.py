"""Asking SAM once more when the mask it shows leaves a click out: the mask edited at the
click, given to SAM's mask prompt."""

from __future__ import annotations

import numpy as np
import pytest

from napari_active_sam.core.annotate.session import AnnotationSession
from napari_active_sam.core.data.real import real_images
from napari_active_sam.core.engine.checkpoints import load_model
from napari_active_sam.core.engine.embeddings import embed_slice
from napari_active_sam.core.engine.predictor import (
    INSIST_RADIUS,
    InsistingPredictor,
    Predictor,
    edited_at,
    insistence,
    shown_head,
)
from napari_active_sam.core.engine.preprocess import SliceSource
from napari_active_sam.core.engine.store import EmbeddingStore
from napari_active_sam.core.engine.zoom import ZoomingPredictor
from napari_active_sam.core.prompts import Click, PromptSet, left_out

FIRST = Click(128.0, 256.0, True)
"""The RITM click at the centre of a nucleus of the real validation micrograph."""
CORRECTION = Click(134.0, 264.0, True)
"""RITM's correction of the demo model's first mask there: a part of the nucleus it left
out, and leaves out again when asked with both clicks."""


@pytest.fixture(scope="module")
def demo():
    return load_model("demo", device="cpu")


@pytest.fixture(scope="module")
def nuclei(demo):
    """The real IHC micrograph of the validation set: its source and embedding."""
    (image,) = [i for i in real_images("validation") if i.subset == "nuclei-ihc"]
    source = SliceSource(image.image, image.window, rgb=True)
    return source, embed_slice(demo, source, EmbeddingStore(demo.encoder_id))


def test_a_mask_edited_at_clicks_gains_and_loses_discs():
    mask = np.zeros((20, 20), bool)
    mask[5:15, 5:15] = True
    edited = edited_at(mask, (Click(2, 2, True), Click(10, 10, False)), 2.0)
    assert edited[2, 2] and edited[0, 2] and edited[2, 4] and not edited[0, 0]  # a disc of 2
    assert not edited[10, 10] and not edited[8, 10] and edited[7, 7]
    assert (edited & ~mask).sum() == (mask & ~edited).sum() == 13  # a disc of 2 each way
    unchanged = edited_at(mask, (), 2.0)
    assert unchanged is not mask and np.array_equal(unchanged, mask)


def test_a_correction_sam_leaves_out_is_asked_again_and_taken_in(demo, nuclei):
    """On a real nucleus the demo model answers RITM's correction with a mask that leaves
    the clicked pixel out; asked again from that mask with a disc at the click, it takes it
    in, with SAM's own outline rather than the edited mask."""
    source, embedding = nuclei
    zooming = ZoomingPredictor(Predictor(demo), source.raw_slice(()), source.limits())
    first = zooming.predict(embedding, PromptSet((FIRST,)))
    feedback = first.logits[shown_head(first, PromptSet((FIRST,)))]
    prompts = PromptSet((FIRST, CORRECTION))
    plain = zooming.predict(embedding, prompts, feedback)
    assert left_out(plain.mask(shown_head(plain, prompts)), prompts) == (CORRECTION,)

    insisting = InsistingPredictor(zooming)
    assert insisting.model is demo
    again = insisting.predict(embedding, prompts, feedback)
    mask = again.mask(shown_head(again, prompts))
    assert left_out(mask, prompts) == ()
    shown = plain.mask(shown_head(plain, prompts))
    assert not np.array_equal(mask, edited_at(shown, (CORRECTION,), INSIST_RADIUS))
    missed, edited = insistence(shown, prompts, plain)  # asked in the answer's own window
    assert missed == 1 and edited.decoded_in == (*plain.origin, *plain.original_size)

    # The annotator asks again the same way, unless told not to.
    session = AnnotationSession(demo, source, EmbeddingStore(demo.encoder_id))
    session.answer((), PromptSet((FIRST,)))
    assert left_out(session.answer((), prompts).mask, prompts) == ()
    stubborn = AnnotationSession(demo, source, session.store, insist=False)
    stubborn.answer((), PromptSet((FIRST,)))
    assert left_out(stubborn.answer((), prompts).mask, prompts) == (CORRECTION,)


def test_an_answer_that_takes_every_click_in_is_left_as_it_is(demo, nuclei):
    source, embedding = nuclei
    zooming = ZoomingPredictor(Predictor(demo), source.raw_slice(()), source.limits())
    prompts = PromptSet((FIRST,))
    answer = InsistingPredictor(zooming).predict(embedding, prompts)
    assert left_out(answer.mask(shown_head(answer, prompts)), prompts) == ()
    fresh = ZoomingPredictor(Predictor(demo), source.raw_slice(()), source.limits())
    np.testing.assert_array_equal(answer.low_res_logits,
                                  fresh.predict(embedding, prompts).low_res_logits)  # fmt: skip


def _trips(call):
    """Run ``call()``; return what it returned and how often it brought results from the
    device to the host."""
    import sys

    from napari_active_sam.core.engine import device

    calls = []

    def profile(frame, event, _):
        if event == "call" and frame.f_code is device.to_host.__code__:
            calls.append(frame)

    sys.setprofile(profile)
    try:
        result = call()
    finally:
        sys.setprofile(None)
    return result, len(calls)


def test_an_answer_that_takes_every_click_in_costs_no_trip_more(demo, nuclei):
    """The session checks the mask already on the host: a click taken in brings mask, map
    and suggestions in as many trips from the device with asking again as without."""
    from napari_active_sam.core.active.bayes_head import BayesHead

    source, _ = nuclei
    head = BayesHead.for_model(demo)
    prompts = PromptSet((FIRST, Click(127.0, 255.0, True)))
    trips = []
    for insist in (True, False):
        session = AnnotationSession(demo, source, EmbeddingStore(demo.encoder_id), head=head,
                                    insist=insist)  # fmt: skip
        session.answer((), PromptSet((FIRST,)))  # encodes; the next click refines it
        answer, count = _trips(lambda: session.answer((), prompts, "bald"))  # noqa: B023
        assert left_out(answer.mask, prompts) == ()
        trips.append(count)
    assert trips[0] == trips[1] > 0
