"""The one interactive loop: turns, steps, corrections, feedback, lockstep driving."""

from __future__ import annotations

import numpy as np
import pytest

from napari_active_sam.core.engine.embeddings import embed_slice
from napari_active_sam.core.engine.predictor import Predictor, shown_head
from napari_active_sam.core.engine.preprocess import SliceSource
from napari_active_sam.core.engine.store import EmbeddingStore
from napari_active_sam.core.prompts import PromptSet
from napari_active_sam.core.sim.episode import (
    Step,
    clicks_to_prompts,
    episode,
    interaction,
    sam_recipe,
)

SHAPE = (40, 50)


def _disc() -> np.ndarray:
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    return (yy - 20) ** 2 + (xx - 25) ** 2 < 10**2


def _drive(loop, answer):
    """Run an interaction, answering each turn with ``answer(turn)``; the turns seen."""
    turns = [next(loop)]
    while True:
        try:
            turns.append(loop.send(Step(turns[-1], mask=answer(turns[-1]))))
        except StopIteration:
            return turns


def test_rounds_add_the_corrections_and_mark_them_clicked():
    asked = []

    def correct(step: Step):
        asked.append(step.iteration)
        return [(step.iteration, 2 * step.iteration, step.iteration % 2 == 0)]

    opening = clicks_to_prompts([(5, 7, True)])
    turns = _drive(interaction(SHAPE, opening, correct, 4), lambda t: np.zeros(SHAPE, bool))
    assert [t.iteration for t in turns] == [1, 2, 3, 4]
    assert asked == [1, 2, 3]  # never after the last round
    assert turns[0].added == ((5, 7, True),) and turns[2].added == ((2, 4, True),)
    last = turns[-1].prompts
    assert [(c.y, c.x, c.positive) for c in last.clicks] == [
        (5, 7, True), (1, 2, False), (2, 4, True), (3, 6, False),
    ]  # fmt: skip
    assert set(zip(*np.nonzero(turns[-1].clicked), strict=True)) == {(5, 7), (1, 2), (2, 4), (3, 6)}


def test_no_correction_ends_the_episode_and_a_box_can_open_it():
    loop = interaction(SHAPE, PromptSet(box=(3.0, 4.0, 30.0, 20.0)), lambda step: [], 10)
    turns = _drive(loop, lambda t: np.ones(SHAPE, bool))
    assert len(turns) == 1 and turns[0].added == () and not turns[0].clicked.any()


def test_a_consumer_that_stops_early_draws_no_correction():
    calls = []
    loop = interaction(SHAPE, clicks_to_prompts([(1, 1, True)]), calls.append, 5)
    next(loop)
    loop.close()
    assert calls == []


def test_episode_feeds_back_the_shown_heads_logits(tiny_model):
    image = np.where(_disc(), 200, 20).astype(np.uint8)
    embedding = embed_slice(tiny_model, SliceSource(image), EmbeddingStore(tiny_model.encoder_id))
    predictor = Predictor(tiny_model)
    gt = _disc()
    opening, correct = sam_recipe(gt, np.random.default_rng(0))
    steps = list(episode(predictor, embedding, opening, correct, 3))
    assert [s.iteration for s in steps] == [1, 2, 3]
    for before, after in zip(steps, steps[1:], strict=False):
        again = predictor.predict(embedding, after.prompts, before.feedback)
        np.testing.assert_array_equal(again.low_res_logits, after.prediction.low_res_logits)
        assert after.head == shown_head(after.prediction, after.prompts)
        np.testing.assert_array_equal(after.shown, after.prediction.mask(after.head))
    assert len(steps[-1].prompts.clicks) == 3


@pytest.mark.parametrize("seed", [0, 1])
def test_lockstep_driving_gives_each_object_the_turns_it_gets_alone(seed):
    gts = [_disc(), np.roll(_disc(), 8, axis=1)]
    masks = [np.roll(g, 3, axis=0) for g in gts]  # a fixed wrong answer per object
    alone = []
    for gt, mask in zip(gts, masks, strict=True):
        opening, correct = sam_recipe(gt, np.random.default_rng(seed))
        alone.append(_drive(interaction(SHAPE, opening, correct, 4), lambda t, m=mask: m))
    loops = []
    for gt in gts:  # one coroutine per object, as the batched trainer keeps them
        opening, correct = sam_recipe(gt, np.random.default_rng(seed))
        loops.append(interaction(SHAPE, opening, correct, 4))
    turns = [[next(loop)] for loop in loops]
    for _ in range(3):  # every object's round, then the next round
        for loop, seen, mask in zip(loops, turns, masks, strict=True):
            seen.append(loop.send(Step(seen[-1], mask=mask)))
    for together, single in zip(turns, alone, strict=True):
        assert [t.prompts for t in together] == [t.prompts for t in single]
        assert len(together[-1].prompts.clicks) == 4
