"""Acquisition maps, suggestions, and one click's uncertainty through the session."""

from __future__ import annotations

import inspect
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.feature import peak_local_max

from napari_active_sam.core.active.acquisition import (
    ACQUISITIONS,
    mutual_information,
    predictive_entropy,
    uncertainty,
)
from napari_active_sam.core.active.bayes_head import BayesHead, BayesHeadNet
from napari_active_sam.core.active.suggest import MIN_SCORE, pick_peaks, pooled_max
from napari_active_sam.core.annotate.session import AnnotationSession
from napari_active_sam.core.engine import device, embeddings, predictor, store
from napari_active_sam.core.engine.architectures import ARCHITECTURES, DEMO_ARCHITECTURE
from napari_active_sam.core.engine.checkpoints import random_model
from napari_active_sam.core.engine.embeddings import embed_slice
from napari_active_sam.core.engine.geometry import (
    acquisition_cells,
    acquisition_grid,
    grid_to_image,
    image_to_grid,
)
from napari_active_sam.core.engine.predictor import Prediction, Predictor
from napari_active_sam.core.engine.preprocess import SliceSource
from napari_active_sam.core.engine.store import EmbeddingStore
from napari_active_sam.core.enums import Acquisition, Source
from napari_active_sam.core.errors import ActiveSamError, ModelError
from napari_active_sam.core.prompts import Click, PromptSet


def test_peaks_are_ranked_spaced_and_never_on_excluded_pixels():
    scores = np.zeros((40, 40))
    scores[10, 10], scores[10, 12], scores[30, 30], scores[5, 35] = 0.9, 0.8, 0.5, 0.7
    peaks = pick_peaks(scores, count=5, min_distance=4)
    assert [p[:2] for p in peaks] == [(10, 10), (5, 35), (30, 30)]  # (10, 12) is too close
    assert [p[2] for p in peaks] == sorted((p[2] for p in peaks), reverse=True)
    excluded = np.zeros((40, 40), bool)
    excluded[10, 10] = True
    assert pick_peaks(scores, 1, 4, excluded)[0][:2] == (10, 12)
    assert len(pick_peaks(scores, count=2)) == 2


@pytest.mark.parametrize("seed", range(40))
def test_peaks_are_scikit_images_local_maxima(seed):
    """The max-pool peak search (on the map's device) finds what scikit-image's
    peak_local_max finds: the same peaks in the same order."""
    rng = np.random.default_rng(seed)
    scores = ndimage.gaussian_filter(rng.random((48, 64)), rng.uniform(1, 4))
    excluded = rng.random(scores.shape) < 0.05
    distance, count = int(rng.integers(1, 8)), int(rng.integers(1, 8))
    expected = peak_local_max(
        np.where(excluded, 0.0, scores), min_distance=distance, threshold_abs=MIN_SCORE,
        exclude_border=False, num_peaks=count,
    )  # fmt: skip
    found = pick_peaks(scores.astype(np.float32), count, distance, excluded)
    assert [p[:2] for p in found] == [tuple(int(v) for v in p) for p in expected]


@pytest.mark.parametrize("distance", [1, 2, 5, 9])
def test_the_gpus_max_pool_is_the_cpus_maximum_filter(distance):
    scores = torch.from_numpy(np.random.default_rng(distance).random((37, 52), np.float32))
    size = 2 * distance + 1
    expected = ndimage.maximum_filter(scores.numpy(), size, mode="nearest")
    np.testing.assert_array_equal(pooled_max(scores, distance).numpy(), expected)


def test_flat_or_empty_maps_give_no_suggestion():
    assert pick_peaks(np.zeros((20, 20))) == []
    assert pick_peaks(np.full((20, 20), 0.3)) == []  # uniform: nothing stands out
    assert pick_peaks(np.full((20, 20), np.nan)) == []
    with pytest.raises(ValueError, match="2D"):
        pick_peaks(np.zeros((2, 3, 4)))


def test_registry_formulas():
    heads = np.stack([np.full((4, 4), 0.1), np.full((4, 4), 0.9), np.full((4, 4), 0.5)])

    def score(name, maps):
        return ACQUISITIONS[Acquisition(name)].score(maps)

    assert np.allclose(score("eig", heads), mutual_information(heads))
    assert np.allclose(score("bald", heads), mutual_information(heads))
    assert np.allclose(score("entropy", heads), predictive_entropy(heads))
    agree = np.full((3, 4, 4), 0.5)  # all heads unsure alike: entropy high, EIG zero
    assert score("eig", agree).max() < 1e-6 < score("entropy", agree).min()
    logits = torch.randn(8, 5, 5) * 4
    exact = mutual_information(torch.sigmoid(logits))
    assert torch.allclose(mutual_information(torch.sigmoid(logits), logits), exact, atol=1e-5)
    assert ACQUISITIONS[Acquisition.BALD].source == Source.POSTERIOR
    assert ACQUISITIONS[Acquisition.EIG].source == Source.HEADS


@pytest.fixture
def slice_state(tiny_model):
    image = np.zeros((60, 90), np.float32)
    image[15:45, 20:70] = 1.0
    embedding = embed_slice(tiny_model, SliceSource(image), EmbeddingStore(tiny_model.encoder_id))
    prompts = PromptSet((Click(45, 30, True), Click(10, 5, False)))
    prediction = Predictor(tiny_model).predict(embedding, prompts)
    return tiny_model, embedding, prompts, prediction


@pytest.mark.parametrize("name", list(Acquisition))
def test_uncertainty_maps_and_suggestions_fit_the_image(slice_state, tiny_head, name):
    model, embedding, prompts, prediction = slice_state
    rng = np.random.default_rng(0)
    found = uncertainty(name, prediction, prompts, model, tiny_head, 16, 5, 4, rng)
    assert found.scores.shape == found.probability.shape == (60, 90)
    assert found.samples == (3 if name == "eig" else 16)
    assert 1 <= len(found.suggestions) <= 5
    clicked = {(round(c.x), round(c.y)) for c in prompts.clicks}
    for rank, s in enumerate(found.suggestions, 1):
        assert s.rank == rank and 0 <= s.belief <= 1
        assert 0 <= s.x <= 89 and 0 <= s.y <= 59
        assert (round(s.x), round(s.y)) not in clicked
    scores = [s.score for s in found.suggestions]
    assert scores == sorted(scores, reverse=True)
    # The top suggestion sits where the (upscaled) map is high.
    top = found.top
    assert found.scores[round(top.y), round(top.x)] >= np.percentile(found.scores, 90)


def test_fine_grids_are_averaged_to_sams_cell_size(tiny_model):
    assert acquisition_cells(tiny_model)[0] == 1
    vit_b = random_model(ARCHITECTURES["vit_b"], seed=0)
    assert acquisition_cells(vit_b)[0] == 1
    fine = random_model(replace(tiny_model.architecture, name="fine", patch_size=8), seed=1)
    assert fine.architecture.low_res_size == 64 and acquisition_cells(fine)[0] == 2
    assert DEMO_ARCHITECTURE.low_res_size == 128  # the demo model: stride 2

    torch.manual_seed(0)
    net = BayesHeadNet()
    torch.nn.init.normal_(net.out.weight, std=0.3)
    mean = torch.cat([net.out.weight.reshape(-1), net.out.bias]).detach()
    assert acquisition_grid(fine) == 32  # the head works on the cells too
    head = BayesHead(net, mean, torch.eye(17) * 0.05, fine.model_id, 32)
    image = np.zeros((60, 90), np.float32)
    image[15:45, 20:70] = 1.0
    embedding = embed_slice(fine, SliceSource(image), EmbeddingStore(fine.encoder_id))
    prompts = PromptSet((Click(45, 30, True),))
    prediction = Predictor(fine).predict(embedding, prompts)
    for name in ("bald", "eig", "entropy"):
        rng = np.random.default_rng(0)
        found = uncertainty(name, prediction, prompts, fine, head, 8, 5, 4, rng)
        assert found.scores.shape == found.probability.shape == (60, 90)
        assert found.suggestions and all(
            0 <= s.x <= 89 and 0 <= s.y <= 59 for s in found.suggestions
        )
        top = found.top
        if name != "entropy":  # this random model's entropy is ln 2 nearly everywhere
            assert found.scores[round(top.y), round(top.x)] >= np.percentile(found.scores, 90)
        if name == "eig":  # the map is the heads' information gain on 2 × 2 cells
            logits = torch.nn.functional.avg_pool2d(torch.as_tensor(prediction.multimask_logits), 2)
            gain = mutual_information(torch.sigmoid(logits), logits)
            expected = fine.sam.postprocess_masks(
                gain[None, None], embedding.input_size, embedding.original_size
            )[0, 0].numpy()
            np.testing.assert_allclose(found.scores, expected, atol=1e-6)


def test_bald_samples_the_head_over_sams_three_heads(slice_state):
    """A head that adds nothing and is certain of it leaves SAM's three heads as the
    posterior: BALD then equals EIG; a head of real spread adds information on top."""
    model, embedding, prompts, prediction = slice_state
    grid = acquisition_grid(model)

    def head_with(covariance: float) -> BayesHead:
        net = BayesHeadNet()  # zero last layer: the head's output is SAM's logit
        return BayesHead(net, torch.zeros(17), torch.eye(17) * covariance, model.model_id, grid)

    eig = uncertainty("eig", prediction, prompts, model, None)
    for samples in (3, 30):
        bald = uncertainty("bald", prediction, prompts, model, head_with(1e-16),
                           samples)  # fmt: skip
        np.testing.assert_allclose(bald.scores, eig.scores, atol=1e-5)
        np.testing.assert_allclose(bald.probability, eig.probability, atol=1e-5)
    wide = uncertainty("bald", prediction, prompts, model, head_with(1.0), 30,
                       rng=np.random.default_rng(0))  # fmt: skip
    assert wide.scores.mean() > eig.scores.mean()


def test_bald_needs_a_head_for_this_model(slice_state, tiny_head):
    model, embedding, prompts, prediction = slice_state
    with pytest.raises(ActiveSamError, match="needs a Bayesian head"):
        uncertainty("bald", prediction, prompts, model, None)
    other = random_model(model.architecture, seed=7)
    with pytest.raises(ModelError, match="fitted for model"):
        uncertainty("bald", prediction, prompts, other, tiny_head)
    with pytest.raises(ActiveSamError, match="at least 1"):
        uncertainty("bald", prediction, prompts, model, tiny_head, samples=0)


def test_a_model_sure_of_everything_suggests_nothing(slice_state):
    model, embedding, prompts, _ = slice_state
    grid = model.architecture.low_res_size
    logits = np.full((4, grid, grid), -30.0, np.float32)
    logits[:, 10:20, 10:20] = 30.0  # every head agrees, far from 0.5
    certain = Prediction(
        logits, np.ones(4, np.float32), model.architecture.img_size, embedding.input_size,
        embedding.original_size,
    )  # fmt: skip
    found = uncertainty("eig", certain, prompts, model)
    assert found.suggestions == () and found.top is None


def test_suggestions_go_first_where_the_answer_would_correct_the_mask(slice_state):
    """Two patches the heads dispute; the mask shown agrees with most heads in the more
    uncertain one and is the odd one out in the other: the other is asked about first."""
    model, embedding, _, _ = slice_state
    grid = model.architecture.low_res_size
    logits = np.full((4, grid, grid), -30.0, np.float32)
    logits[1:3, 4:10, 4:10] = 30.0  # heads 1 and 2 of 3 say inside
    logits[1, 4:10, 20:26] = 2.0  # head 1 of 3 says inside, less sure
    iou = np.array([0.5, 0.9, 0.6, 0.3], np.float32)  # head 1 is shown for a lone click
    disputed = Prediction(
        logits, iou, model.architecture.img_size, embedding.input_size, embedding.original_size
    )
    lone = PromptSet((Click(60, 50, True),))
    found = uncertainty("eig", disputed, lone, model)
    size = model.architecture.img_size
    centres = grid_to_image(
        np.array([[6.5, 6.5], [22.5, 6.5]]), embedding.original_size, size, grid
    )
    (x1, y1), (x2, y2) = np.rint(centres).astype(int)
    assert found.scores[y1, x1] > found.scores[y2, x2] + 0.1  # the map alone prefers the first
    top = image_to_grid(np.array([[found.top.x, found.top.y]]), embedding.original_size, size, grid)
    col, row = np.rint(top[0]).astype(int)
    assert 4 <= row < 10 and 20 <= col < 26
    assert found.top.belief == pytest.approx(float(torch.sigmoid(torch.tensor(2.0))) / 3, abs=1e-3)
    # Where the mask shown is another head's (the benchmark's multimask strategies), the
    # ranking follows that mask: head 3 leaves both patches out, so the first is asked.
    other = uncertainty("eig", disputed, lone, model, shown=3)
    top = image_to_grid(np.array([[other.top.x, other.top.y]]), embedding.original_size, size, grid)
    col, row = np.rint(top[0]).astype(int)
    assert 4 <= row < 10 and 4 <= col < 10
    # The random baseline ranks by its scores alone (uniform; the best of hundreds).
    shuffled = uncertainty("random", disputed, lone, model, rng=np.random.default_rng(0))
    assert shuffled.top.score > 0.9


def test_session_answer_previews_sams_mask_and_ranks_slices(tiny_model, tiny_head, ct_volume):
    model = tiny_model
    session = AnnotationSession(model, SliceSource(ct_volume), EmbeddingStore(model.encoder_id))
    session.head = tiny_head
    prompts = PromptSet((Click(25, 20, True),))
    plain = session.answer((2,), prompts)
    assert plain.uncertainty is None
    bald = session.answer((2,), prompts, "bald", samples=8, rng=np.random.default_rng(0))
    assert bald.uncertainty.acquisition == Acquisition.BALD and bald.uncertainty.samples == 8
    assert bald.mask.any() and np.array_equal(bald.mask, plain.mask)
    eig = session.answer((3,), prompts, "eig")
    assert eig.uncertainty.acquisition == Acquisition.EIG and eig.uncertainty.samples == 3
    ranked = session.most_uncertain()
    assert {i for i, _ in ranked} == {(2,), (3,)} and ranked[0][1] >= ranked[1][1]
    session.forget((3,))  # a fresh start on a slice keeps its last known uncertainty
    assert {i for i, _ in session.most_uncertain()} == {(2,), (3,)}

    # The dock ranks slices while propagation adds answers on a worker: reading waits for
    # the session's lock, under which answers are added, so it never sees the table change.
    import threading

    ranked_meanwhile = []
    with session._lock:
        reader = threading.Thread(target=lambda: ranked_meanwhile.append(
            session.most_uncertain()))  # fmt: skip
        reader.start()
        session.slice_uncertainty[(4,)] = torch.tensor(9.0)  # as a worker adds an answer
        reader.join(timeout=0.5)
        assert reader.is_alive() and not ranked_meanwhile  # waiting for the lock
    reader.join()
    assert ranked_meanwhile[0][0] == ((4,), 9.0)


def _count_calls(functions, call):
    """Run ``call()`` and count how often each of ``functions`` ran (by code object, so a
    function counts wherever it was imported to)."""
    codes = {inspect.unwrap(f).__code__: name for name, f in functions.items()}
    counts = dict.fromkeys(functions, 0)

    def profile(frame, event, arg):
        if event == "call" and frame.f_code in codes:
            counts[codes[frame.f_code]] += 1

    sys.setprofile(profile)
    try:
        result = call()
    finally:
        sys.setprofile(None)
    return result, counts


@pytest.mark.parametrize("acquisition", [None, *Acquisition])
def test_a_click_looks_up_the_slice_and_chooses_the_shown_head_once(
    tiny_model, tiny_head, ct_volume, acquisition
):
    """SAM's answer as it comes: the random model leaves these clicks out, and asking again
    (one more decode, tests/core/engine/test_insist.py) is turned off here."""
    session = AnnotationSession(
        tiny_model, SliceSource(ct_volume), EmbeddingStore(tiny_model.encoder_id), insist=False
    )
    session.head = tiny_head
    watched = {
        "signature": store.slice_signature,
        "encoder": embeddings.SliceEncoder.encode,
        "shown_head": predictor.shown_head,
        "decoder": predictor.Predictor.predict,
    }
    first = PromptSet((Click(25, 20, True),))
    _, counts = _count_calls(watched, lambda: session.answer((2,), first, acquisition))
    assert counts == {"signature": 1, "encoder": 1, "shown_head": 1, "decoder": 1}
    second = first.with_click(Click(10, 10, False))
    answer, counts = _count_calls(watched, lambda: session.answer((2,), second, acquisition))
    assert counts == {"signature": 1, "encoder": 0, "shown_head": 1, "decoder": 1}
    assert answer.head == 0 and np.array_equal(answer.mask, answer.prediction.mask(0))


@pytest.mark.parametrize("acquisition", [None, *Acquisition])
def test_a_click_brings_what_it_shows_to_the_host_in_one_trip(
    tiny_model, tiny_head, ct_volume, acquisition
):
    """After the decoder's four IoU scores (which choose the head shown), the mask, the
    acquisition map and the suggestions leave the device together (asking again for a click
    left out, off here, costs no trip when none is: tests/core/engine/test_insist.py)."""
    session = AnnotationSession(
        tiny_model, SliceSource(ct_volume), EmbeddingStore(tiny_model.encoder_id), insist=False
    )
    session.head = tiny_head
    embed_slice(tiny_model, session.source, session.store, (2,), session.limits)
    prompts = PromptSet((Click(25, 20, True),))
    answer, counts = _count_calls({"to_host": device.to_host},
                                  lambda: session.answer((2,), prompts, acquisition))  # fmt: skip
    assert counts == {"to_host": 2}
    assert answer.mask.shape == (40, 50) and answer.mask.any()
    if acquisition:
        assert answer.uncertainty.scores.shape == answer.uncertainty.probability.shape
