"""The predictor against segment-anything's own SamPredictor, and bad prompts."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

from napari_active_sam.core.engine.architectures import Architecture
from napari_active_sam.core.engine.checkpoints import random_model
from napari_active_sam.core.engine.embeddings import SliceEncoder
from napari_active_sam.core.engine.predictor import (
    PRIOR_LOGIT,
    Prediction,
    Predictor,
    PriorMask,
    contradicted,
    honouring_head,
    shown_head,
)
from napari_active_sam.core.engine.preprocess import to_sam_rgb
from napari_active_sam.core.errors import PromptError
from napari_active_sam.core.prompts import Click, PromptSet


def _setup(model, shape=(70, 100), seed=0):
    rgb = to_sam_rgb(np.random.default_rng(seed).random(shape), (0.0, 1.0))
    (embedding,) = SliceEncoder(model).encode([rgb], ["sig"])
    reference = SamPredictor(model.sam)
    reference.set_image(rgb)
    return embedding, reference


PROMPTS = [
    PromptSet((Click(30, 40, True),)),
    PromptSet((Click(30, 40, True), Click(80, 10, False), Click(5, 65, True))),
    PromptSet(box=(10, 5, 60, 50)),
    PromptSet((Click(30, 40, True),), box=(10, 5, 60, 50)),
]


@pytest.mark.parametrize("prompts", PROMPTS)
def test_all_heads_match_sam_predictor(tiny_model, prompts):
    embedding, reference = _setup(tiny_model)
    ours = Predictor(tiny_model).predict(embedding, prompts)
    coords, labels = prompts.point_arrays()
    kwargs = {
        "point_coords": coords if len(coords) else None,
        "point_labels": labels if len(labels) else None,
        "box": np.array(prompts.box) if prompts.box else None,
        "return_logits": True,
    }
    for multimask, heads in ((True, slice(1, 4)), (False, slice(0, 1))):
        logits, iou, low_res = reference.predict(multimask_output=multimask, **kwargs)
        np.testing.assert_allclose(ours.low_res_logits[heads], low_res, atol=2e-2)
        np.testing.assert_allclose(ours.iou[heads], iou, atol=2e-3)
        expected = torch.sigmoid(torch.from_numpy(logits)).numpy()
        np.testing.assert_allclose(ours.probabilities[heads], expected, atol=5e-3)
    assert ours.probabilities.shape == (4, 70, 100)
    for head in range(4):
        np.testing.assert_array_equal(ours.probability(head), ours.probabilities[head])
    np.testing.assert_array_equal(ours.probability(-1), ours.probabilities[3])
    copy = pickle.loads(pickle.dumps(Predictor(tiny_model).predict(embedding, prompts)))
    np.testing.assert_array_equal(copy.probabilities, ours.probabilities)
    assert ours.multimask_logits.shape == (3, 32, 32)
    assert ours.low_res_logits.shape == (4, 32, 32)
    assert ours.mask().shape == (70, 100) and ours.mask().dtype == bool
    assert 1 <= ours.best_multimask_head <= 3


def test_previous_logits_feed_the_mask_prompt(tiny_model):
    embedding, reference = _setup(tiny_model)
    predictor = Predictor(tiny_model)
    first = predictor.predict(embedding, PROMPTS[0])
    prompts = PROMPTS[1]
    previous = first.low_res_logits[first.best_multimask_head]
    ours = predictor.predict(embedding, prompts, previous_logits=previous)
    coords, labels = prompts.point_arrays()
    _, iou, low_res = reference.predict(
        coords, labels, mask_input=previous[None], multimask_output=True, return_logits=True
    )
    np.testing.assert_allclose(ours.low_res_logits[1:], low_res, atol=2e-2)
    without = predictor.predict(embedding, prompts)
    assert not np.allclose(without.low_res_logits, ours.low_res_logits)


@pytest.mark.parametrize("img_size", [64, 96, 256])
def test_any_sam_image_size(img_size):
    arch = Architecture(
        "small", 32, 1, 2, (0,), img_size=img_size, window_size=2, prompt_embed_dim=32,
        decoder_mlp_dim=64, decoder_num_heads=2, iou_head_hidden_dim=32,
    )  # fmt: skip
    model = random_model(arch)
    embedding, _ = _setup(model, shape=(50, 45))
    grid = 4 * img_size // 16
    prediction = Predictor(model).predict(embedding, PROMPTS[0])
    assert prediction.low_res_logits.shape == (4, grid, grid)
    assert prediction.probabilities.shape == (4, 50, 45)
    assert prediction.iou.shape == (4,)


@pytest.mark.parametrize(
    ("prompts", "message"),
    [
        (PromptSet((Click(100, 10, True),)), "outside"),
        (PromptSet((Click(10, -3, False),)), "outside"),
        (PromptSet((Click(10, 70, True),)), "outside"),
        (PromptSet(box=(50, 10, 20, 30)), "empty"),
        (PromptSet(box=(200, 100, 300, 200)), "outside"),
        (PromptSet(), "at least one"),
    ],
)
def test_bad_prompts_are_refused(tiny_model, prompts, message):
    embedding, _ = _setup(tiny_model)
    with pytest.raises(PromptError, match=message):
        Predictor(tiny_model).predict(embedding, prompts)


def test_points_on_the_border_pixels_are_accepted(tiny_model):
    embedding, _ = _setup(tiny_model)
    prompts = PromptSet((Click(0, 0, True), Click(99, 69, False), Click(-0.4, 69.4, True)))
    assert Predictor(tiny_model).predict(embedding, prompts).iou.shape == (4,)


def test_a_prior_mask_is_fed_to_the_mask_prompt_on_the_decoders_grid(tiny_model):
    """A mask of the slice (a neighbouring slice's) becomes mask-prompt logits laid out as
    the slice is for the model: resized to the input (the long side to 128 px, the short
    padded), averaged onto the 32 × 32 grid, ±PRIOR_LOGIT inside and outside."""
    embedding, reference = _setup(tiny_model)  # 70 × 100 → 90 × 128 of the 128 px input
    assert tuple(embedding.input_size) == (90, 128)
    mask = np.zeros((70, 100), bool)
    mask[:, :50] = True  # the left half: 64 input pixels, 16 cells of the grid
    logits = PriorMask(mask).logits(embedding.input_size, 128, 32).numpy()
    assert logits.shape == (32, 32)
    np.testing.assert_allclose(logits[:22, :15], PRIOR_LOGIT)  # clear of the soft edge
    np.testing.assert_allclose(logits[:22, 17:], -PRIOR_LOGIT)  # the right half
    np.testing.assert_allclose(logits[23:], -PRIOR_LOGIT)  # the padding below the slice
    predictor = Predictor(tiny_model)
    prompts = PROMPTS[2]
    ours = predictor.predict(embedding, prompts, PriorMask(mask))
    _, _, low_res = reference.predict(box=np.array(prompts.box), mask_input=logits[None],
                                      multimask_output=True, return_logits=True)  # fmt: skip
    np.testing.assert_allclose(ours.low_res_logits[1:], low_res, atol=2e-2)
    assert not np.allclose(predictor.predict(embedding, prompts).low_res_logits,
                           ours.low_res_logits)  # fmt: skip
    with pytest.raises(PromptError, match="give a mask of the slice"):
        predictor.predict(embedding, prompts, PriorMask(mask[:60]))


def test_a_prior_thinner_than_a_cell_is_not_told_away():
    """A one-pixel line on a 512 px slice covers a quarter of each 4 × 4 cell it crosses
    (128 px input, 32 × 32 grid): those cells are neutral, not "outside"."""
    line = np.zeros((512, 512), bool)
    line[200, 100:400] = True
    logits = PriorMask(line).logits((128, 128), 128, 32).numpy()
    # Row 200 of 512 is input row 50, grid row 12; columns 100-399 are grid columns 6-24.
    np.testing.assert_array_equal(logits[12, 7:24], 0.0)
    assert (logits[11] == -PRIOR_LOGIT).all() and (logits[13] == -PRIOR_LOGIT).all()
    assert (logits[12, :6] == -PRIOR_LOGIT).all() and (logits[12, 25:] == -PRIOR_LOGIT).all()


def test_previous_logits_of_the_wrong_shape_are_refused(tiny_model):
    embedding, _ = _setup(tiny_model)
    with pytest.raises(PromptError, match="32×32"):
        Predictor(tiny_model).predict(embedding, PROMPTS[0], previous_logits=np.zeros((64, 64)))


@pytest.mark.parametrize(
    ("iou", "lone_click", "box_alone", "several"),
    [
        ([0.9, 0.5, 0.6, 0.3], 2, 0, 0),  # the single-mask answer rated best: shown for a box
        ([0.4, 0.5, 0.8, 0.3], 2, 2, 0),  # a multimask head rated above it: shown for a box
    ],
)
def test_the_head_shown_depends_on_the_prompts(iou, lone_click, box_alone, several):
    """A lone click shows the best multimask head, a box alone the best of all four heads
    by SAM's IoU head, several clicks (or clicks and a box) the single-mask head."""
    answer = Prediction(np.zeros((4, 8, 8), np.float32), np.array(iou, np.float32), 32,
                        (32, 32), (32, 32))  # fmt: skip
    click, box = Click(5.0, 5.0), (1.0, 1.0, 20.0, 20.0)
    assert shown_head(answer, PromptSet((click,))) == lone_click
    assert shown_head(answer, PromptSet(box=box)) == box_alone
    assert shown_head(answer, PromptSet((click, Click(9.0, 9.0, False)))) == several
    assert shown_head(answer, PromptSet((click,), box=box)) == several


def test_a_head_that_contradicts_clicks_gives_way_to_the_best_rated_that_does_not():
    """A positive click top left and a negative one bottom right: the head shown keeps the
    positive click out; of the two heads that honour both, SAM's better-rated one is
    shown instead, and a head that honours the clicks stays."""
    logits = np.full((4, 8, 8), -5.0, np.float32)  # head 0: nothing at all
    logits[1] = 5.0  # everything, the negative click too
    logits[2:, :4, :4] = 5.0  # the top-left quarter, twice
    answer = Prediction(logits, np.array([0.9, 0.8, 0.3, 0.6], np.float32), 32, (32, 32),
                        (32, 32))  # fmt: skip
    prompts = PromptSet((Click(5.0, 5.0, True), Click(25.0, 25.0, False)))
    assert [contradicted(answer, head, prompts) for head in range(4)] == [1, 1, 0, 0]
    assert honouring_head(answer, prompts, 0) == 3
    assert honouring_head(answer, prompts, 2) == 2
    only_positive = PromptSet((Click(5.0, 5.0, True),), box=(0.0, 0.0, 31.0, 31.0))
    assert honouring_head(answer, only_positive, 0) == 1  # best rated of heads 1, 2 and 3
    nobody = PromptSet((Click(25.0, 5.0, True),), box=(0.0, 0.0, 31.0, 31.0))
    assert honouring_head(answer, nobody.with_click(Click(25.0, 25.0, False)), 0) == 0
